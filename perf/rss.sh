#!/usr/bin/env bash
# Daemon memory under load: peak RSS (VmHWM) of the sending and the receiving pororocad during
#   (1) one big file (default 4 GiB) and (2) a tree of many small files (default 100,000 x 1 KiB),
# both tmpfs -> tmpfs on 127.0.0.1, on the embedded defaults. Prints one line per case.
#   perf/rss.sh [BUILD_DIR]      (default build/release); env: BIG_MIB, NFILES, WORK (default /dev/shm/poro-rss)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$here/build/release}
work=${WORK:-/dev/shm/poro-rss}
big_mib=${BIG_MIB:-4096}
nfiles=${NFILES:-100000}
cli="$bin/cli/pororoca"
rm -rf "$work"; mkdir -p "$work"
BENCH_PIDS=()
cleanup() { for p in "${BENCH_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
. "$here/perf/lib.sh"
bench_pair "$bin" "$work"
hwm() { awk '/VmHWM/ {print int($2/1024)}' "/proc/$1/status"; }

head -c $((big_mib << 20)) < <(openssl enc -aes-128-ctr -pass pass:rss -nosalt -pbkdf2 < /dev/zero 2>/dev/null) > "$work/a/data/big.bin"
PORO_SOCKET="$work/a.sock" "$cli" cp --no-progress "$work/a/data/big.bin" b:/ >/dev/null
echo "one ${big_mib} MiB file: peak RSS sender $(hwm "${BENCH_PIDS[0]}") MiB, receiver $(hwm "${BENCH_PIDS[1]}") MiB"
rm -f "$work/a/data/big.bin" "$work/b/data/big.bin"

python3 - "$work/a/data/tree" "$nfiles" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
per = 1000
for i in range(n):
    d = os.path.join(root, "d%04d" % (i // per))
    if i % per == 0: os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%06d" % i), "wb") as f: f.write(os.urandom(1024))
PY
start=$(date +%s.%N)
PORO_SOCKET="$work/a.sock" "$cli" cp -r --no-progress "$work/a/data/tree" b:/ >/dev/null
end=$(date +%s.%N)
count=$(find "$work/b/data/tree" -type f | wc -l)
echo "$nfiles files x 1 KiB: $count committed in $(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.1f", b-a}') s; peak RSS sender $(hwm "${BENCH_PIDS[0]}") MiB, receiver $(hwm "${BENCH_PIDS[1]}") MiB"
