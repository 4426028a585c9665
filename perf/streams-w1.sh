#!/usr/bin/env bash
# One file of GIB GiB (default 2) pushed between two local daemons of one build on tmpfs, RUNS times
# (default 3) for each stream count in STREAMS (default "1 8"), each protection level in LEVELS
# (default: none given, so the policy's) and each data transport in TRANSPORTS (default "tcp"; with
# "ucx" the daemons offer it over UCX_TLS=tcp), the combinations alternating run by run. Prints per
# run the wall time of `pororoca cp --streams N [--protection L] --transport T` and the CPU seconds
# (user+system, from /proc/PID/stat) of the sending and the receiving daemon, then the medians per
# combination.
#   perf/streams-w1.sh [BUILD_DIR]   env: GIB, RUNS, STREAMS, LEVELS, TRANSPORTS, DIR (/dev/shm/poro-streams)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=perf/lib.sh
. "$HERE/lib.sh"
BIN=${1:-$HERE/../build/release}
GIB=${GIB:-2} RUNS=${RUNS:-3} STREAMS=${STREAMS:-"1 8"} LEVELS=${LEVELS:-policy} DIR=${DIR:-/dev/shm/poro-streams}
TRANSPORTS=${TRANSPORTS:-tcp}
if [ "$TRANSPORTS" != tcp ]; then
  BENCH_NETWORK_EXTRA=$'transports = ["tcp", "ucx", "fabric"]\nucx_tls = "tcp"\nfabric_provider = "tcp;ofi_rxm"'
fi
BENCH_PIDS=()
cleanup() { for p in "${BENCH_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
rm -rf "$DIR"; mkdir -p "$DIR/w"
head -c "$((GIB << 30))" /dev/urandom > "$DIR/src.bin"
bench_pair "$BIN" "$DIR/w"
pa=${BENCH_PIDS[0]} pb=${BENCH_PIDS[1]}
ln "$DIR/src.bin" "$DIR/w/a/data/big.bin"
declare -A WALL SEND RECV
for ((i = 1; i <= RUNS; i++)); do
  for n in $STREAMS; do
    for l in $LEVELS; do
     for t in $TRANSPORTS; do
      k="$n streams, $l, $t"
      prot=(); [ "$l" = policy ] || prot=(--protection "$l")
      rm -f "$DIR/w/b/data/big.bin"
      bench_prefault $((GIB * 1024 + 512))
      sa=$(bench_cpu_s "$pa"); sb=$(bench_cpu_s "$pb"); t0=$(date +%s.%N)
      PORO_SOCKET="$DIR/w/a.sock" "$BIN/cli/pororoca" cp --no-progress --streams "$n" "${prot[@]}" \
        --transport "$t" "$DIR/w/a/data/big.bin" b:/big.bin >/dev/null
      t1=$(date +%s.%N); ea=$(bench_cpu_s "$pa"); eb=$(bench_cpu_s "$pb")
      cmp -s "$DIR/src.bin" "$DIR/w/b/data/big.bin" || { echo "run $i, $k: copy differs" >&2; exit 1; }
      wall=$(echo "$t1 - $t0" | bc); send=$(echo "$ea - $sa" | bc); recv=$(echo "$eb - $sb" | bc)
      printf 'run %d, %-28s %6.2f s  sending daemon %5.2f CPU s  receiving daemon %5.2f CPU s\n' \
        "$i" "$k:" "$wall" "$send" "$recv"
      WALL[$k]+="$wall "; SEND[$k]+="$send "; RECV[$k]+="$recv "
     done
    done
  done
done
for n in $STREAMS; do
  for l in $LEVELS; do
   for t in $TRANSPORTS; do
    k="$n streams, $l, $t"
    printf 'median, %-28s %6.2f s  sending %5.2f CPU s  receiving %5.2f CPU s\n' "$k:" \
      "$(tr ' ' '\n' <<<"${WALL[$k]}" | grep . | bench_median)" "$(tr ' ' '\n' <<<"${SEND[$k]}" | grep . | bench_median)" \
      "$(tr ' ' '\n' <<<"${RECV[$k]}" | grep . | bench_median)"
   done
  done
done
