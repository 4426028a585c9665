#!/usr/bin/env bash
# GET /metrics latency with 1,000 transfers on record (issue 13: under 10 ms). Daemon a gets JOBS
# transfers at once (each a FILE_KIB KiB file pushed to b), at most RUNNING running, paced by a policy
# rate cap so that the queue stays full while the scrapes run: the scrape then counts every state,
# every job entry and the live sessions. Then SCRAPES sequential GET /metrics on a's unix socket
# (one kept-alive connection, as Prometheus keeps one), and reports latency percentiles and the
# exposition's size; then the same after every transfer has been cancelled (all on record, none
# running).
#   perf/metrics.sh [BUILD_DIR]   (default build/release)
#   env: JOBS (1000), RUNNING (16), SCRAPES (500), FILE_KIB (256), CAP (1MiB/s),
#        WORK (/dev/shm/poro-metrics)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$here/build/release}
work=${WORK:-/dev/shm/poro-metrics}
jobs=${JOBS:-1000} running=${RUNNING:-16} scrapes=${SCRAPES:-500} file_kib=${FILE_KIB:-256} cap=${CAP:-1MiB/s}
rm -rf "$work"; mkdir -p "$work"
BENCH_PIDS=()
cleanup() { for p in "${BENCH_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
. "$here/perf/lib.sh"
export BENCH_RULES="[{\"id\":\"bench\",\"effect\":\"allow\",\"rate_limit\":\"$cap\"}]"
export BENCH_EXTRA=$'[queue]\nmax_running = '"$running"$'\nmax_running_per_peer = '"$running"
bench_pair "$bin" "$work"
mkdir -p "$work/b/data/load"
head -c $((file_kib << 10)) /dev/urandom > "$work/a/data/src.bin"

PYTHONPATH="$here/perf" python3 - "$work" "$jobs" "$scrapes" <<'PY'
from unix_http import UnixConnection, call
import json, sys, time
work, jobs, scrapes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sock = work + "/a.sock"

conn = UnixConnection(sock)
# Half as single transfers, half as jobs of 10 entries: both are counted by state at each scrape.
n = 0
while n < jobs // 2:
    st, data, _ = call(conn, "POST", "/v1/transfers", {"source": work + "/a/data/src.bin", "destination": "b:/load/%d.bin" % n})
    if st != 201: sys.exit("submission %d: HTTP %d %s" % (n, st, data[:200]))
    n += 1
while n < jobs:
    entries = [{"source": work + "/a/data/src.bin", "destination": "b:/load/%d.bin" % (n + i)} for i in range(10)]
    st, data, _ = call(conn, "POST", "/v1/jobs", {"entries": entries})
    if st != 201: sys.exit("job at %d: HTTP %d %s" % (n, st, data[:200]))
    n += 10
time.sleep(2)  # the scheduler has started the first RUNNING

def measure(label):
    lat = []
    body = b""
    for _ in range(scrapes):
        t0 = time.perf_counter()
        st, body, _ = call(conn, "GET", "/metrics")
        lat.append(time.perf_counter() - t0)
        if st != 200: sys.exit("GET /metrics: HTTP %d" % st)
    lat.sort()
    pct = lambda p: lat[min(len(lat) - 1, int(p / 100.0 * len(lat)))] * 1000
    text = body.decode()
    states = {l.split('"')[1]: float(l.split()[-1]) for l in text.splitlines() if l.startswith("pororoca_transfers{")}
    print("%s: %d scrapes, latency ms p50 %.2f  p90 %.2f  p99 %.2f  max %.2f; %d bytes, %d samples; transfers %s"
          % (label, len(lat), pct(50), pct(90), pct(99), lat[-1] * 1000, len(body),
             sum(1 for l in text.splitlines() if l and not l.startswith("#")),
             json.dumps({k: int(v) for k, v in states.items() if v}, sort_keys=True)))
    return pct(99)

p99_busy = measure("queue full (%d on record, sessions running)" % jobs)
lst = json.loads(call(conn, "GET", "/v1/transfers")[1])["transfers"]
for t in lst:
    if t["state"] in ("queued", "running", "retrying"): call(conn, "POST", "/v1/transfers/%s/cancel" % t["id"])
deadline = time.time() + 60
while time.time() < deadline:
    lst = json.loads(call(conn, "GET", "/v1/transfers")[1])["transfers"]
    if all(t["state"] in ("succeeded", "partial", "failed", "cancelled") for t in lst): break
    time.sleep(0.5)
p99_idle = measure("all ended (%d on record)" % len(lst))
sys.exit(0 if max(p99_busy, p99_idle) < 10 else 1)
PY
