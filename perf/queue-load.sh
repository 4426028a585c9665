#!/usr/bin/env bash
# The transfer queue under load (issue 12): JOBS transfers queued at once on daemon a (each a
# FILE_MIB MiB file pushed to b, paced by a policy rate cap so that the queue drains slowly), at
# most RUNNING running, while a client sends RATE API requests per second for DURATION seconds
# (mostly GET /v1/transfers/{id}, plus healthz, the full list every 2 s, and new submissions with a
# submission id, each sent twice). Reports requests, errors, latency percentiles, daemon a's RSS
# every 10 s, then waits for every transfer to end and compares every destination file with the
# source.
#   perf/queue-load.sh [BUILD_DIR]   (default build/release)
#   env: JOBS (1000), RUNNING (32), RATE (200), DURATION (120), FILE_MIB (2), CAP (16MiB/s),
#        POOL (the daemons' [transfer] buffer_pool, default theirs: 256MiB), WORK (/dev/shm/poro-queue-load)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$here/build/release}
work=${WORK:-/dev/shm/poro-queue-load}
jobs=${JOBS:-1000} running=${RUNNING:-32} rate=${RATE:-200} duration=${DURATION:-120}
file_mib=${FILE_MIB:-2} cap=${CAP:-16MiB/s}
rm -rf "$work"; mkdir -p "$work"
BENCH_PIDS=()
cleanup() { for p in "${BENCH_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
. "$here/perf/lib.sh"
export BENCH_RULES="[{\"id\":\"bench\",\"effect\":\"allow\",\"rate_limit\":\"$cap\"}]"
export BENCH_EXTRA=$'[queue]\nmax_running = '"$running"$'\nmax_running_per_peer = '"$running"
if [ -n "${POOL:-}" ]; then BENCH_EXTRA+=$'\n[transfer]\nbuffer_pool = "'"$POOL"'"'; fi
bench_pair "$bin" "$work"
mkdir -p "$work/b/data/load"
head -c $((file_mib << 20)) /dev/urandom > "$work/a/data/src.bin"

PYTHONPATH="$here/perf" python3 - "$work" "${BENCH_PIDS[0]}" "$jobs" "$rate" "$duration" "${BENCH_PIDS[1]}" <<'PY'
from unix_http import UnixConnection, call
import json, os, random, sys, threading, time, hashlib
work, pid, jobs, rate, duration = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
pid_b = int(sys.argv[6])
sock = work + "/a.sock"
src = work + "/a/data/src.bin"

def submit(conn, n, sid=None):
    body = {"source": src, "destination": "b:/load/%d.bin" % n}
    if sid: body["submission_id"] = sid
    return call(conn, "POST", "/v1/transfers", body)

def rss_mib(p=None):
    for line in open("/proc/%d/status" % (p or pid)):
        if line.startswith("VmRSS:"): return int(line.split()[1]) / 1024.0
    return 0.0

ids = []
conn = UnixConnection(sock)
t0 = time.monotonic()
for n in range(jobs):
    st, data, _ = submit(conn, n)
    if st != 201: sys.exit("submission %d: HTTP %d %s" % (n, st, data[:200]))
    ids.append(json.loads(data)["id"])
print("queued %d transfers in %.1f s" % (jobs, time.monotonic() - t0))
first = json.loads(call(conn, "GET", "/v1/healthz")[1])

lat, errors, lock = [], [], threading.Lock()
extra = [jobs]  # next destination number for new submissions
rss = [(0.0, rss_mib())]
rss_b = [(0.0, rss_mib(pid_b))]
stop = threading.Event()
tick_q = []
cv = threading.Condition()

def worker():
    c = UnixConnection(sock)
    while True:
        with cv:
            while not tick_q and not stop.is_set(): cv.wait(0.5)
            if not tick_q and stop.is_set(): return
            i = tick_q.pop(0)
        try:
            if i % 100 == 0:  # a new submission, then the same request again (a retry)
                with lock: n = extra[0]; extra[0] += 1
                sid = "load-%d" % n
                st, data, dt = submit(c, n, sid)
                ok = st == 201
                if ok:
                    new_id = json.loads(data)["id"]
                    st2, data2, dt2 = submit(c, n, sid)
                    ok = st2 == 200 and json.loads(data2)["id"] == new_id
                    with lock: ids.append(new_id); lat.append(dt2)
                what = "submit"
            elif i % 400 == 1:
                st, data, dt = call(c, "GET", "/v1/transfers"); ok = st == 200; what = "list"
            elif i % 10 == 2:
                st, data, dt = call(c, "GET", "/v1/healthz"); ok = st == 200; what = "healthz"
            else:
                with lock: tid = random.choice(ids)
                st, data, dt = call(c, "GET", "/v1/transfers/" + tid); ok = st == 200; what = "get"
            with lock:
                lat.append(dt)
                if not ok: errors.append("%s: HTTP %d %s" % (what, st, data[:200]))
        except Exception as e:  # a broken connection: count it, open another
            with lock: errors.append("%s" % e)
            c = UnixConnection(sock)

threads = [threading.Thread(target=worker) for _ in range(16)]
for t in threads: t.start()
start = time.monotonic(); sent = 0; next_rss = 10
while True:
    now = time.monotonic() - start
    if now >= duration: break
    due = int(now * rate)
    with cv:
        while sent < due: tick_q.append(sent); sent += 1
        cv.notify_all()
    if now >= next_rss: rss.append((now, rss_mib())); rss_b.append((now, rss_mib(pid_b))); next_rss += 10
    time.sleep(0.002)
stop.set()
with cv: cv.notify_all()
for t in threads: t.join()
elapsed = time.monotonic() - start
rss.append((elapsed, rss_mib())); rss_b.append((elapsed, rss_mib(pid_b)))
lat.sort()
pct = lambda p: lat[min(len(lat) - 1, int(p / 100.0 * len(lat)))] * 1000
backlog = len(tick_q)
print("API load: %d requests in %.1f s (%.1f/s, %d not sent: the client fell behind), %d errors"
      % (len(lat), elapsed, len(lat) / elapsed, backlog, len(errors)))
for e in errors[:5]: print("  error:", e)
print("latency ms: p50 %.2f  p90 %.2f  p99 %.2f  max %.2f" % (pct(50), pct(90), pct(99), lat[-1] * 1000))
print("daemon a RSS MiB (s: MiB): " + "  ".join("%d: %.0f" % (t, m) for t, m in rss))
print("daemon b RSS MiB (the receiver: no queue, no API load): " + "  ".join("%d: %.0f" % (t, m) for t, m in rss_b))

# Every transfer to its end, then every file against the source.
conn = UnixConnection(sock)  # the first one has been idle longer than the daemon's 60 s
deadline = time.monotonic() + 900
while True:
    lst = json.loads(call(conn, "GET", "/v1/transfers")[1])["transfers"]
    left = [t for t in lst if t["state"] not in ("succeeded", "partial", "failed", "cancelled")]
    if not left or time.monotonic() > deadline: break
    time.sleep(2)
states = {}
for t in lst: states[t["state"]] = states.get(t["state"], 0) + 1
want = hashlib.sha256(open(src, "rb").read()).hexdigest()
dests = sorted(os.listdir(work + "/b/data/load"))
exact = sum(1 for d in dests if hashlib.sha256(open(work + "/b/data/load/" + d, "rb").read()).hexdigest() == want)
print("transfers: %d, states %s; destination files %d, exact %d; queue.db %.1f MiB"
      % (len(lst), json.dumps(states, sort_keys=True), len(dests), exact,
         sum(os.path.getsize(os.path.join(work, "a/state", f)) for f in os.listdir(work + "/a/state")
             if f.startswith("queue.db")) / 1048576.0))
ok = not errors and states.get("succeeded", 0) == len(lst) and exact == len(dests) == len(lst)
sys.exit(0 if ok else 1)
PY
