# shellcheck shell=bash
# Shared set-up of the benchmark scripts: a federation workspace with two institutions (ia, ib), one
# endpoint each, an allow-all policy, a signed manifest, and a daemon config per endpoint on the
# embedded defaults. Source it, then:
#   bench_federation CLI DIR NAME_A ADDR_A NAME_B ADDR_B   -> DIR/fed (workspace), DIR/manifest.json
#   bench_config DIR NAME LISTEN EXPORT_ROOT STATE_DIR SOCKET INSTITUTION > NAME.toml
#                       ($BENCH_NETWORK_EXTRA, if set, is added to its [network] section, and
#                       $BENCH_EXTRA, if set, at its end, then $BENCH_EXTRA_<NAME> for endpoint NAME only)
#   $BENCH_RULES, if set, replaces the allow-all policy rules (a JSON array)
#   bench_pair BIN DIR: both of the above for daemons a (ia) and b (ib) on 127.0.0.1, export roots
#                       DIR/a/data and DIR/b/data; starts them (pids appended to BENCH_PIDS, logs in
#                       DIR/{a,b}.log, API sockets DIR/{a,b}.sock) and waits until both answer
#   bench_prefault MIB: touch and release MIB MiB of memory right before a timed run
# Each endpoint mints tokens for the user running the benchmark with its institution's issuer.

bench_federation() {
  local cli=$1 dir=$2 a=$3 addr_a=$4 b=$5 addr_b=$6
  local w=(--dir "$dir/fed")
  "$cli" federation init "${w[@]}" --name bench >/dev/null || return 1
  "$cli" federation add-institution ia "${w[@]}" >/dev/null || return 1
  "$cli" federation add-institution ib "${w[@]}" >/dev/null || return 1
  "$cli" federation add-endpoint "$a" "${w[@]}" --institution ia --address "$addr_a" >/dev/null || return 1
  "$cli" federation add-endpoint "$b" "${w[@]}" --institution ib --address "$addr_b" >/dev/null || return 1
  "$cli" federation add-issuer https://t.ia "${w[@]}" --institution ia --key-out "$dir/issuer-ia.key" >/dev/null ||
    return 1
  "$cli" federation add-issuer https://t.ib "${w[@]}" --institution ib --key-out "$dir/issuer-ib.key" >/dev/null ||
    return 1
  local allow_all='[{"id":"bench","effect":"allow"}]'
  "$cli" federation policy set "${w[@]}" --rules "${BENCH_RULES:-$allow_all}" >/dev/null || return 1
  "$cli" federation sign "${w[@]}" --publish "$dir/manifest.json" >/dev/null
}

bench_config() {
  local dir=$1 name=$2 listen=$3 root=$4 state=$5 sock=$6 inst=$7 own="BENCH_EXTRA_$2"
  cat <<TOML
[endpoint]
name = "$name"
[network]
listen = "$listen"
${BENCH_NETWORK_EXTRA:-}
[api]
socket = "$sock"
[storage]
export_root = "$root"
state_dir = "$state"
[tls]
ca = "$dir/fed/ca.crt"
cert = "$dir/fed/endpoints/$name.crt"
key = "$dir/fed/endpoints/$name.key"
[federation]
manifest = "$dir/manifest.json"
authority_key = "$dir/fed/authority.pub"
[tokens]
issuer = "https://t.$inst"
key = "$dir/issuer-$inst.key"
[[users]]
uid = $(id -u)
identity = "$(id -un)@$inst"
${BENCH_EXTRA:-}
${!own:-}
TOML
}

bench_pair() {
  local bin=$1 dir=$2 port_a=$((30000 + RANDOM % 5000)) n port inst
  bench_federation "$bin/cli/pororoca" "$dir" a "127.0.0.1:$port_a" b "127.0.0.1:$((port_a + 1))" || return 1
  for n in a b; do
    if [ $n = a ]; then port=$port_a inst=ia; else port=$((port_a + 1)) inst=ib; fi
    mkdir -p "$dir/$n/data" "$dir/$n/state"
    bench_config "$dir" $n "127.0.0.1:$port" "$dir/$n/data" "$dir/$n/state" "$dir/$n.sock" $inst > "$dir/$n.toml"
    "$bin/daemon/pororocad" --config "$dir/$n.toml" 2>"$dir/$n.log" &
    BENCH_PIDS+=($!)
  done
  bench_wait_socket "$dir/a.sock" "$dir/b.sock" && return 0
  cat "$dir"/*.log >&2
  return 1
}

# bench_wait_socket SOCKET...: waits until every SOCKET exists (a daemon's API is up), for at most
# about 5 s, looking every millisecond without starting a process each time (an external `sleep`
# costs more than the wait on this machine, and the harness row times the sending daemon's start).
bench_wait_socket() {
  local tick i s ok=0
  exec {tick}<> <(:)  # a pipe nobody writes to: `read -t` on it is a sleep inside bash
  for ((i = 0; i < 5000; i++)); do
    ok=1
    for s in "$@"; do [ -S "$s" ] || { ok=0; break; }; done
    [ $ok = 1 ] && break
    read -r -t 0.001 -u "$tick" _ || true
  done
  exec {tick}>&-
  [ $ok = 1 ]
}

# This VM hands freed memory back to its host, and touching it again costs a host fault per page
# (see ../shared/peers/README.md): touch and release what a run will need right before it, as
# ../shared/peers/run.sh does before every timed run, so runs start from the same state.
bench_prefault() {
  python3 -c 'import mmap, sys
n = int(sys.argv[1]) << 20
m = mmap.mmap(-1, n)
for i in range(0, n, 4096): m[i] = 1' "$1"
}

# CPU seconds (user + system) that process PID has used so far.
bench_cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / hz }' "/proc/$1/stat"; }
# The median of the numbers on stdin, one per line.
bench_median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
