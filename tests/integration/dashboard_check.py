#!/usr/bin/env python3
"""Opens pororocad's dashboard in headless Chromium, through `pororoca dashboard` (run by
tests/integration/dashboard_test.cc, which started the daemons and the transfers).

1. Starts `pororoca --socket SOCKET dashboard --listen 127.0.0.1:0` and reads its address and
   access key; checks what the helper forwards and refuses (plain HTTP from the stdlib).
2. With --api-url: a second helper in front of the daemon's HTTPS API (--api, --ca, --api-token):
   the same page and the same data routes come through it.
3. Starts Chromium (--headless=new) driven over the DevTools protocol on a pipe
   (--remote-debugging-pipe: fd 3 in, fd 4 out, NUL-terminated JSON; no websocket needed), loads
   the page, pastes the key into the page's form as an operator would, and waits until the
   running transfer's row shows a rate and a sparkline. Every console message, exception, CSP
   violation and failed load is collected: any error fails the check, except the one this
   check logs in the page on purpose (a probe, to show the capture works).
4. Saves a screenshot of the whole page.

  dashboard_check.py --cli PORORO --socket SOCK --chromium BIN --running ID --queued ID
                     --queued-first ID --failed ID --screenshot OUT.png [--api-url URL --ca FILE --api-token TOKEN]
"""
import argparse
import base64
import fcntl
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

PROBLEMS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        PROBLEMS.append(what)
    return cond


def start_helper(cmd, timeout=30):
    """Starts `pororoca ... dashboard` and returns (process, url, key) from its first lines."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    url = key = None
    text = b""
    deadline = time.monotonic() + timeout
    # Unbuffered reads of the pipe: select() does not see what a buffered reader already took.
    while (url is None or key is None) and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        text += chunk
        m = re.search(r"^pororoca dashboard: (http://\S+)/dashboard$", text.decode(), re.M)
        url = m.group(1) if m else None
        m = re.search(r"^access key: ([0-9a-f]{32})$", text.decode(), re.M)
        key = m.group(1) if m else None
    if url is None or key is None:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        raise SystemExit(f"`{' '.join(cmd)}` printed no address and key: {out} {err}")
    return proc, url, key


def stop_helper(proc, name):
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait(timeout=10)
    check(rc == 0, f"{name} stops with exit 0 on SIGTERM (exit {rc})")


class NoRedirect(urllib.request.HTTPErrorProcessor):
    def http_response(self, request, response):
        return response


OPENER = urllib.request.build_opener(NoRedirect())


def http(method, url, key=None, host=None):
    req = urllib.request.Request(url, method=method, data=b"{}" if method in ("POST",) else None)
    if key:
        req.add_header("Authorization", "Bearer " + key)
    if host:
        req.add_header("Host", host)
    with OPENER.open(req, timeout=60) as r:
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode(errors="replace")


def check_helper(base, key, running, name):
    st, h, body = http("GET", base + "/dashboard")
    check(st == 200 and h.get("content-type", "").startswith("text/html"), f"{name}: GET /dashboard is HTML ({st})")
    check("default-src 'self'" in h.get("content-security-policy", ""), f"{name}: the page has its CSP")
    check(h.get("x-content-type-options") == "nosniff", f"{name}: nosniff")
    check(h.get("referrer-policy") == "no-referrer", f"{name}: no referrer")
    check("cache-control" in h and "etag" in h, f"{name}: cache headers (Cache-Control, ETag)")
    check('src="/dashboard/app.js"' in body and "<script>" not in body, f"{name}: the page has no inline script")
    st, h, _ = http("GET", base + "/dashboard/app.js")
    check(st == 200 and h.get("content-type", "").startswith("text/javascript"), f"{name}: app.js is JavaScript")
    st, _, _ = http("GET", base + "/dashboard/nothing.js")
    check(st == 404, f"{name}: an unknown file is 404 ({st})")
    st, h, _ = http("GET", base + "/v1/transfers")
    check(st == 401 and "www-authenticate" in h, f"{name}: the data routes need the access key ({st})")
    st, _, _ = http("GET", base + "/v1/transfers", key="0" * 32)
    check(st == 401, f"{name}: a wrong key is refused ({st})")
    st, h, body = http("GET", base + "/v1/transfers", key=key)
    check(st == 200 and running in body, f"{name}: with the key, /v1/transfers lists the running transfer ({st})")
    check(h.get("cache-control") == "no-store", f"{name}: data answers are not cached")
    port = base.rsplit(":", 1)[1]
    st, _, _ = http("GET", base + "/v1/transfers", key=key, host="dashboard.example:" + port)
    check(st == 421, f"{name}: a request for another host name is refused ({st})")
    for method, target in (("POST", "/v1/transfers"), ("DELETE", "/v1/transfers/" + running),
                           ("POST", "/v1/transfers/" + running + "/cancel"), ("POST", "/v1/ls"),
                           ("GET", "/v1/events"), ("POST", "/v1/federation/refresh")):
        st, _, _ = http(method, base + target, key=key)
        check(st in (404, 405), f"{name}: {method} {target} is not forwarded ({st})")


class Chromium:
    """Chromium with the DevTools protocol on a pipe: requests, their answers, and events."""

    def __init__(self, binary, profile):
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()
        # Out of the way of 3 and 4, where the child wants them.
        fds = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_chrome_r, from_chrome_w)]
        for fd in (to_chrome_r, from_chrome_w):
            os.close(fd)

        def child_fds():
            os.dup2(fds[0], 3)
            os.dup2(fds[1], 4)

        self.log = open(os.path.join(profile, "chromium.log"), "w")
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--remote-debugging-pipe",
             "--user-data-dir=" + profile, "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--metrics-recording-only", "--password-store=basic", "--window-size=1400,1000",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, close_fds=False, preexec_fn=child_fds)
        for fd in fds:
            os.close(fd)
        self.out = os.fdopen(to_chrome_w, "wb", buffering=0)
        self.inp = from_chrome_r
        self.buf = b""
        self.next_id = 0
        self.events = []

    def _read_message(self, deadline):
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.inp], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.inp, 1 << 20)
            if not chunk:
                raise SystemExit("Chromium closed the DevTools pipe (see chromium.log)")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, params=None, session=None, timeout=30):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.out.write(json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read_message(deadline)
            if m is None:
                raise SystemExit(f"no answer to {method} within {timeout} s")
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise SystemExit(f"{method}: {m['error']}")
                return m.get("result", {})
            if "method" in m:
                self.events.append(m)

    def wait_event(self, name, timeout):
        deadline = time.monotonic() + timeout
        for e in self.events:
            if e["method"] == name:
                return True
        while True:
            m = self._read_message(deadline)
            if m is None:
                return False
            if "method" in m:
                self.events.append(m)
                if m["method"] == name:
                    return True

    def close(self):
        try:
            self.call("Browser.close", timeout=10)
        except SystemExit:
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


# What the page shows, read in the page (returns a JSON string).
PAGE_STATE = r"""
(() => {
  const row = (tbody, id) => document.querySelector(`#${tbody} tr[data-id="${id}"]`);
  const r = row('inflight-rows', RUNNING);
  const out = {status: document.getElementById('status').textContent,
               hint: !document.getElementById('hint').hidden,
               total: document.getElementById('total-rate').textContent,
               staging: document.getElementById('staging-note').textContent,
               staging_rows: document.getElementById('staging-rows').textContent,
               federation: document.getElementById('federation-note').textContent,
               endpoints: document.querySelectorAll('#endpoints-rows tr').length,
               accounting: document.getElementById('accounting-note').textContent,
               queued: row('queue-rows', QUEUED) ? row('queue-rows', QUEUED).textContent : null,
               failed: row('failures-rows', FAILED) ? row('failures-rows', FAILED).textContent : null,
               peers: document.getElementById('peers-rows').textContent,
               queue_order: [...document.querySelectorAll('#queue-rows tr')].map((tr) => tr.dataset.id)};
  if (r) {
    out.row = r.textContent;
    out.rate = r.querySelector('td.rate').textContent;
    const line = r.querySelector('svg polyline');
    out.points = line ? line.getAttribute('points').trim().split(/\s+/).length : 0;
  }
  return JSON.stringify(out);
})()
"""


def evaluate(chrome, session, expr):
    res = chrome.call("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session)
    if "exceptionDetails" in res:
        raise SystemExit("evaluation failed: " + json.dumps(res["exceptionDetails"])[:500])
    return res["result"].get("value")


PROBE = "pororoca-console-capture-probe"


def errors_of(events):
    """Console errors, exceptions, CSP violations, failed loads; the probe the check logs on purpose
    aside (returns the errors and how many probes were seen)."""
    out = []
    expected = 0
    for e in events:
        m, p = e["method"], e.get("params", {})
        if m == "Runtime.exceptionThrown":
            out.append("exception: " + json.dumps(p.get("exceptionDetails", {}))[:400])
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            if [a.get("value") for a in p.get("args", [])] == [PROBE]:
                expected += 1
                continue
            out.append("console." + p["type"] + ": " + json.dumps(p.get("args", []))[:400])
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            entry = p["entry"]
            out.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}")
    return out, expected


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True)
    ap.add_argument("--socket", required=True)
    ap.add_argument("--chromium", required=True)
    ap.add_argument("--running", required=True)
    ap.add_argument("--queued", required=True, help="a queued transfer of priority 2")
    ap.add_argument("--queued-first", required=True, help="a queued transfer of priority 5, submitted after it")
    ap.add_argument("--failed", required=True)
    ap.add_argument("--screenshot", required=True)
    ap.add_argument("--staged", required=True, help="a dataset in the staging cache, ENDPOINT:/path")
    ap.add_argument("--lease", required=True, help="its lease")
    ap.add_argument("--api-url")
    ap.add_argument("--ca")
    ap.add_argument("--api-token")
    ap.add_argument("--timeout", type=float, default=90)
    args = ap.parse_args()

    helper, base, key = start_helper([args.cli, "--socket", args.socket, "dashboard", "--listen", "127.0.0.1:0"])
    remote = None
    profile = tempfile.mkdtemp(prefix="poro-chromium-")
    chrome = None
    try:
        check_helper(base, key, args.running, "socket helper")
        bad = subprocess.run([args.cli, "--socket", args.socket, "dashboard", "--listen", "0.0.0.0:0"],
                             capture_output=True, text=True, timeout=30)
        check(bad.returncode == 2 and "loopback" in bad.stderr, "a non-loopback --listen is refused (exit 2)")
        bad = subprocess.run([args.cli, "--socket", args.socket, "dashboard", "now"], capture_output=True, text=True,
                             timeout=30)
        check(bad.returncode == 2, f"an argument is a usage error (exit {bad.returncode})")

        if args.api_url:
            remote, rbase, rkey = start_helper([args.cli, "--api", args.api_url, "--ca", args.ca, "--api-token",
                                                args.api_token, "dashboard", "--listen", "127.0.0.1:0"])
            check_helper(rbase, rkey, args.running, "HTTPS helper")
            stop_helper(remote, "HTTPS helper")
            remote = None

        chrome = Chromium(args.chromium, profile)
        target = chrome.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = chrome.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for method in ("Runtime.enable", "Log.enable", "Page.enable"):
            chrome.call(method, session=session)
        chrome.call("Emulation.setDeviceMetricsOverride",
                    {"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": False}, session)
        chrome.call("Page.navigate", {"url": base + "/dashboard"}, session)
        check(chrome.wait_event("Page.loadEventFired", 60), "the page loads")
        first = json.loads(evaluate(chrome, session, PAGE_STATE.replace("RUNNING", json.dumps(args.running))
                                    .replace("QUEUED", json.dumps(args.queued)).replace("FAILED", json.dumps(args.failed))))
        check(first["hint"] and "access key" in first["status"], f"before the key, the page asks for it: {first['status']!r}")
        # The operator pastes the key and connects.
        evaluate(chrome, session, "document.getElementById('token').value = " + json.dumps(key) +
                 "; document.getElementById('auth').requestSubmit(); true")
        state = {}
        deadline = time.monotonic() + args.timeout
        expr = PAGE_STATE.replace("RUNNING", json.dumps(args.running)).replace("QUEUED", json.dumps(args.queued)) \
            .replace("FAILED", json.dumps(args.failed))
        rate_re = re.compile(r"^\d+(\.\d+)? (B|KiB|MiB|GiB)/s$")
        while time.monotonic() < deadline:
            state = json.loads(evaluate(chrome, session, expr))
            # Four samples: a rate and a sparkline with some history for the screenshot.
            if state.get("points", 0) >= 4 and rate_re.match(state.get("rate", "")) and state["rate"] != "0 B/s":
                break
            chrome.wait_event("__none__", 0.5)  # keeps reading events while it waits
        print("page state: " + json.dumps(state), flush=True)
        check(args.running[:12] in state.get("row", ""), "the running transfer's row shows its id")
        check(bool(rate_re.match(state.get("rate", ""))) and state.get("rate") != "0 B/s",
              f"the row shows a rate: {state.get('rate')!r}")
        check(state.get("points", 0) >= 4, f"the row has a sparkline ({state.get('points', 0)} points)")
        check(bool(rate_re.match(state.get("total", ""))) and state.get("total") != "0 B/s",
              f"the total rate is shown: {state.get('total')!r}")
        check(state.get("queued") is not None and args.queued[:12] in state["queued"], "the queued transfer is in the queue")
        check(state.get("queue_order") == [args.queued_first, args.queued],
              f"the queue is shown in priority order, 5 before 2: {state.get('queue_order')}")
        check(state.get("failed") is not None and "NotFound" in state["failed"],
              f"the failed transfer is listed with its reason: {state.get('failed')!r}")
        check(" used; evicts above 90% down to 75%" in state.get("staging", ""), f"staging: {state.get('staging')!r}")
        check(args.staged in state.get("staging_rows", "") and "ready" in state.get("staging_rows", "")
              and args.lease in state.get("staging_rows", ""),
              f"the staged dataset is listed, ready, with its lease: {state.get('staging_rows')!r}")
        check("manifest serial" in state.get("federation", ""), f"federation: {state.get('federation')!r}")
        check(state.get("endpoints", 0) >= 2, "the endpoints are listed")
        check(state.get("accounting") != "operator only", "the helper's user (root) is an operator: accounting shown")
        check(state.get("status", "").startswith("updated"), f"status: {state.get('status')!r}")

        shot = chrome.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session)
        with open(args.screenshot, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        check(os.path.getsize(args.screenshot) > 10000, "screenshot saved to " + args.screenshot)
        # The capture works: an error logged in the page on purpose must be seen.
        evaluate(chrome, session, f"console.error({json.dumps(PROBE)}), 1")
        chrome.wait_event("__none__", 0.5)
        errors, expected = errors_of(chrome.events)
        for e in errors:
            print("  console: " + e)
        check(expected > 0, f"the console capture saw the probe logged in the page ({expected} times)")
        check(not errors, f"no console errors ({len(errors)})")
    finally:
        if chrome:
            chrome.close()
        shutil.rmtree(profile, ignore_errors=True)
        if remote:
            remote.kill()
        stop_helper(helper, "socket helper")
    print(f"{len(PROBLEMS)} problem(s)")
    return 1 if PROBLEMS else 0


if __name__ == "__main__":
    sys.exit(main())
