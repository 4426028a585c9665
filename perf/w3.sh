#!/usr/bin/env bash
# W3-like check outside the peers harness: a tree of NFILES x SIZE_KIB files in NDIRS directories,
# tmpfs -> tmpfs, pushed between two local daemons on the embedded defaults, RUNS times. Prints the
# wall time, files/s and the CPU seconds each daemon spent during the copy.
#   perf/w3.sh [BUILD_DIR]   (default build/release); env: NFILES (10000), NDIRS (100), SIZE_KIB (64),
#                            RUNS (3), WORK (/dev/shm/poro-w3), PROFILE (a directory: record both daemons
#                            with `perf record -g` during the copies, into PROFILE/sender.data, receiver.data),
#                            FRESH (set: restart the sending daemon right before each copy, as the
#                            peers harness's row does; its start-up is not timed, its CPU is counted;
#                            FRESH=row: time what the row times, from the daemon's start to its exit),
#                            SENDER_BUILD (with FRESH: the build directory of the sending daemon, to
#                            compare two builds against the same receiver),
#                            SCRAPE (set: every second run reads GET /metrics of both daemons every
#                            SCRAPE_EVERY seconds, default 0.1, during the copy; the medians of the
#                            runs with and without are printed at the end: the cost of metrics)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$here/build/release}
work=${WORK:-/dev/shm/poro-w3}
nfiles=${NFILES:-10000}; ndirs=${NDIRS:-100}; size_kib=${SIZE_KIB:-64}; runs=${RUNS:-3}
cli="$bin/cli/pororoca"
rm -rf "$work"; mkdir -p "$work"
BENCH_PIDS=()
cleanup() {
  local i
  for ((i = ${#BENCH_PIDS[@]} - 1; i >= 0; i--)); do kill -INT "${BENCH_PIDS[i]}" 2>/dev/null || true; wait "${BENCH_PIDS[i]}" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

. "$here/perf/lib.sh"
bench_pair "$bin" "$work"
python3 - "$work/a/data/tree" "$nfiles" "$ndirs" "$size_kib" <<'PY'
import os, sys
root, n, nd, kib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
per = max(1, n // nd)
for i in range(n):
    d = os.path.join(root, "d%04d" % (i // per))
    if i % per == 0: os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%06d" % i), "wb") as f: f.write(os.urandom(kib * 1024))
PY
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)
if [ -n "${PROFILE:-}" ]; then
  mkdir -p "$PROFILE"
  perf record -q -e cpu-clock -g -p "${BENCH_PIDS[0]}" -o "$PROFILE/sender.data" 2>/dev/null & BENCH_PIDS+=($!)
  perf record -q -e cpu-clock -g -p "${BENCH_PIDS[1]}" -o "$PROFILE/receiver.data" 2>/dev/null & BENCH_PIDS+=($!)
  sleep 1
fi
for r in $(seq "$runs"); do
  rm -rf "$work/b/data/tree"
  bench_prefault $(( (nfiles * size_kib >> 10) * 2 + 256 ))
  if [ -n "${FRESH:-}" ]; then
    # As the peers harness's row does: a sending daemon started right before the copy.
    kill -INT "${BENCH_PIDS[0]}" 2>/dev/null || true; wait "${BENCH_PIDS[0]}" || true
    rm -f "$work/a.sock"
    [ "$FRESH" = row ] && s=$(date +%s.%N)
    "${SENDER_BUILD:-$bin}/daemon/pororocad" --config "$work/a.toml" 2>>"$work/a.log" &
    BENCH_PIDS[0]=$!
    bench_wait_socket "$work/a.sock" || { cat "$work/a.log" >&2; exit 1; }
  fi
  mode=plain scraper=""
  if [ -n "${SCRAPE:-}" ] && ((r % 2 == 0)); then
    mode=scraped
    (while :; do
      for sock in "$work/a.sock" "$work/b.sock"; do curl -sf --unix-socket "$sock" http://localhost/metrics >/dev/null; done
      sleep "${SCRAPE_EVERY:-0.1}"
    done) &
    scraper=$!
  fi
  ca=$(cpu "${BENCH_PIDS[0]}"); cb=$(cpu "${BENCH_PIDS[1]}")
  [ "${FRESH:-}" = row ] && ca=0 || s=$(date +%s.%N)
  PORO_SOCKET="$work/a.sock" "$cli" cp -r --no-progress ${CP_ARGS:-} "$work/a/data/tree" b:/ >"$work/cp.out" || { cat "$work/cp.out" "$work"/*.log >&2; exit 1; }
  na=$(cpu "${BENCH_PIDS[0]}"); nb=$(cpu "${BENCH_PIDS[1]}")
  if [ "${FRESH:-}" = row ]; then  # the row stops the daemon inside its timed span
    kill "${BENCH_PIDS[0]}"; wait "${BENCH_PIDS[0]}" || true
  fi
  e=$(date +%s.%N)
  if [ -n "$scraper" ]; then kill "$scraper"; wait "$scraper" 2>/dev/null || true; fi
  got=$(find "$work/b/data/tree" -type f | wc -l)
  [ "$got" -eq "$nfiles" ] || { echo "run $r: $got of $nfiles files arrived" >&2; exit 1; }
  awk -v s="$s" -v e="$e" -v n="$nfiles" -v a=$((na - ca)) -v b=$((nb - cb)) -v t="$tck" -v r="$r" \
    -v m="$mode" 'BEGIN { printf "run %d %s: %.3f s, %.0f files/s, sender %.2f CPU s, receiver %.2f CPU s\n", r, m, e - s, n / (e - s), a / t, b / t }' |
    tee -a "$work/runs.txt"
done
if [ -n "${SCRAPE:-}" ]; then
  med() { awk -v m="$1" -v c="$2" '$3 == m":" { print $c }' "$work/runs.txt" | bench_median; }  # MODE COLUMN
  for mode in plain scraped; do
    printf 'median %s: %.3f s, sender %.2f CPU s, receiver %.2f CPU s\n' "$mode" "$(med "$mode" 4)" "$(med "$mode" 9)" "$(med "$mode" 13)"
  done
fi
