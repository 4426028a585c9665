#!/usr/bin/env bash
# W1-like A/B of two builds: one file of GIB GiB (default 2) pushed between two local daemons on
# tmpfs, the builds alternating run by run (A B A B ...), both daemons of a run from the same build.
# Prints per run: the wall time of `pororoca cp`, and the CPU seconds (user+system, from
# /proc/PID/stat) that the sending and the receiving daemon spent on it; then the medians.
#   perf/ab-w1.sh BUILD_A BUILD_B      env: GIB (2), RUNS (3 per build), DIR (/dev/shm/poro-ab)
# SCRAPE=A or SCRAPE=B reads GET /metrics of both daemons every SCRAPE_EVERY seconds (default 1)
# during that build's runs (the cost of being scraped: `SCRAPE=B perf/ab-w1.sh build/ci build/ci`,
# one build both times).
# Both builds must have been made from trees whose CLI and daemon share the same federation format.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=perf/lib.sh
. "$HERE/lib.sh"
A=${1:?build directory A}; B=${2:?build directory B}
GIB=${GIB:-2} RUNS=${RUNS:-3} DIR=${DIR:-/dev/shm/poro-ab}
BENCH_PIDS=()
scraper=""
cleanup() {
  [ -n "$scraper" ] && kill "$scraper" 2>/dev/null
  for p in "${BENCH_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
rm -rf "$DIR"; mkdir -p "$DIR"
head -c "$((GIB << 30))" /dev/urandom > "$DIR/src.bin"
declare -A WALL SEND RECV
for ((i = 1; i <= RUNS; i++)); do
  for label in A B; do
    bin=$A; [ "$label" = B ] && bin=$B
    w="$DIR/run"; rm -rf "$w"; mkdir -p "$w"
    BENCH_PIDS=()
    bench_pair "$bin" "$w"
    pa=${BENCH_PIDS[0]} pb=${BENCH_PIDS[1]}
    ln "$DIR/src.bin" "$w/a/data/big.bin"
    if [ "${SCRAPE:-}" = "$label" ]; then
      (while :; do
        for s in "$w/a.sock" "$w/b.sock"; do curl -sf --unix-socket "$s" http://localhost/metrics >/dev/null; done
        sleep "${SCRAPE_EVERY:-1}"
      done) &
      scraper=$!
    fi
    bench_prefault $((GIB * 1024 + 512))
    sa=$(bench_cpu_s "$pa"); sb=$(bench_cpu_s "$pb"); t0=$(date +%s.%N)
    PORO_SOCKET="$w/a.sock" "$bin/cli/pororoca" cp --no-progress "$w/a/data/big.bin" b:/big.bin >/dev/null
    t1=$(date +%s.%N)
    ea=$(bench_cpu_s "$pa"); eb=$(bench_cpu_s "$pb")
    if [ -n "$scraper" ]; then kill "$scraper"; wait "$scraper" 2>/dev/null || true; scraper=""; fi
    cmp -s "$DIR/src.bin" "$w/b/data/big.bin" || { echo "run $i $label: copy differs" >&2; exit 1; }
    wall=$(echo "$t1 - $t0" | bc); send=$(echo "$ea - $sa" | bc); recv=$(echo "$eb - $sb" | bc)
    printf 'run %d %s: %6.2f s  %7.1f MiB/s  sending daemon %5.2f CPU s  receiving daemon %5.2f CPU s\n' \
      "$i" "$label" "$wall" "$(echo "$GIB * 1024 / $wall" | bc -l)" "$send" "$recv"
    WALL[$label]+="$wall "; SEND[$label]+="$send "; RECV[$label]+="$recv "
    kill "$pa" "$pb"; wait "$pa" "$pb" 2>/dev/null || true
  done
done
for label in A B; do
  printf 'median %s: %6.2f s  sending %5.2f CPU s  receiving %5.2f CPU s  (%s)\n' "$label" \
    "$(tr ' ' '\n' <<<"${WALL[$label]}" | grep . | bench_median)" "$(tr ' ' '\n' <<<"${SEND[$label]}" | grep . | bench_median)" \
    "$(tr ' ' '\n' <<<"${RECV[$label]}" | grep . | bench_median)" "$([ $label = A ] && echo "$A" || echo "$B")"
done
