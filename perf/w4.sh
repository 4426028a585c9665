#!/usr/bin/env bash
# W4-like check outside the peers harness: one file of SIZE_MIB MiB, tmpfs -> tmpfs, pushed between two
# daemons in the two network namespaces of ../shared/wanem (default link: 2000 Mbit/s, 50 ms one way,
# loss 1e-4, MTU 9000, as W4). Prints each run's wall time, Gbit/s, share of the link rate, and
# wanem's drop counters at the end. Needs root (namespaces).
#   sudo perf/w4.sh [BUILD_DIR]   (default build/release); env: SIZE_MIB (2048), RUNS (2),
#       WORK (/dev/shm/poro-w4), WANEM_DIR (../shared/wanem), RATE (2000), DELAY_MS (50),
#       LOSS (0.0001), CP_ARGS (extra arguments to pororoca cp), NET_TOML (a line added to both
#       daemons' [network] section, e.g. 'sndbuf = 16777216')
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "${1:-$here/build/release}" && pwd)
work=${WORK:-/dev/shm/poro-w4}
size_mib=${SIZE_MIB:-2048}; runs=${RUNS:-2}
rate=${RATE:-2000}; delay=${DELAY_MS:-50}; loss=${LOSS:-0.0001}
wanem=${WANEM_DIR:-$here/../shared/wanem}
name=pw4
cli="$bin/cli/pororoca"
[ "$(id -u)" -eq 0 ] || { echo "w4.sh: needs root (network namespaces)" >&2; exit 1; }
rm -rf "$work"; mkdir -p "$work"
export TMPDIR="$work/wan"; mkdir -p "$TMPDIR"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  timeout 30 "$wanem/wan-down.sh" "$name" 2>&1 | sed 's/^/w4.sh: at teardown: /' >&2 || true
  rm -rf "$work"
}
trap cleanup EXIT

"$wanem/wan-up.sh" --name "$name" --rate "$rate" --delay-ms "$delay" --loss "$loss" --mtu 9000 >&2
. "$here/perf/lib.sh"
port=$((30000 + RANDOM % 5000))
bench_federation "$cli" "$work" a "198.18.0.1:$port" b "198.18.0.2:$port"
for n in a b; do
  mkdir -p "$work/$n/data" "$work/$n/state"
  inst=ia; [ $n = b ] && inst=ib
  addr=198.18.0.1; [ $n = b ] && addr=198.18.0.2
  bench_config "$work" $n "$addr:$port" "$work/$n/data" "$work/$n/state" "$work/$n.sock" $inst > "$work/$n.toml"
  [ -z "${NET_TOML:-}" ] || sed -i "/^listen = /a $NET_TOML" "$work/$n.toml"
  ip netns exec "$name-$n" "$bin/daemon/pororocad" --config "$work/$n.toml" 2>"$work/$n.log" &
  PIDS+=($!)
done
for _ in $(seq 100); do [ -S "$work/a.sock" ] && [ -S "$work/b.sock" ] && break; sleep 0.1; done
[ -S "$work/a.sock" ] && [ -S "$work/b.sock" ] || { cat "$work"/*.log >&2; exit 1; }
{ openssl enc -aes-128-ctr -nosalt -K 000102030405060708090a0b0c0d0e0f -iv 0 -in /dev/zero 2>/dev/null || true; } |
  head -c $((size_mib << 20)) > "$work/a/data/big"
# One untimed copy first: wanem's packet rings are touched then, not during a timed run.
head -c $((256 << 20)) "$work/a/data/big" > "$work/a/data/warm"
PORO_SOCKET="$work/a.sock" "$cli" cp --no-progress "$work/a/data/warm" b:/ >/dev/null
for r in $(seq "$runs"); do
  rm -f "$work/b/data/big"
  for n in a b; do ip netns exec "$name-$n" ip tcp_metrics flush all 2>/dev/null || true; done
  bench_prefault $((size_mib + 512))
  s=$(date +%s.%N)
  PORO_SOCKET="$work/a.sock" "$cli" cp --no-progress ${CP_ARGS:-} "$work/a/data/big" b:/ >"$work/cp.out" ||
    { cat "$work/cp.out" "$work"/*.log >&2; exit 1; }
  e=$(date +%s.%N)
  cmp -s "$work/a/data/big" "$work/b/data/big" || { echo "run $r: the copy differs" >&2; exit 1; }
  awk -v s="$s" -v e="$e" -v b=$((size_mib << 20)) -v rate="$rate" -v r="$r" \
    'BEGIN { g = b * 8 / (e - s) / 1e9; printf "run %d: %.2f s, %.3f Gbit/s, %.1f %% of the link\n", r, e - s, g, 100 * g * 1000 / rate }'
done
