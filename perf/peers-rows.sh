# shellcheck shell=bash
# pororoca as one more row of ../shared/peers/run.sh (see ../shared/peers/README.md, "Adding a tool").
#
#   sudo ../shared/peers/run.sh --peers-only --rows-file perf/peers-rows.sh \
#        --rows 'pororoca|iperf3|xrdcp|globus|rsync|cp'
#
# The receiving pororocad is the row's server (started once per network context by run.sh, its CPU is
# the "server CPU" column). The sending pororocad is started by the row itself for every run and
# stopped at its end, so its CPU is counted in the "client CPU" column together with the CLI: the
# sender's whole cost shows, start-up included. Both run on embedded defaults (no per-workload flags);
# export_root is "/" because the workloads live in $TMPFS and $DISK.
# PORO_BIN: the build to measure (default: <this checkout>/build/release).

: "${PORO_PERF:=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
: "${PORO_BIN:=$(cd "$PORO_PERF/.." && pwd)/build/release}"
export PORO_BIN PORO_PERF

server_pororoca() {
  PORO_PORT=$(pick_port); export PORO_PORT
  PORO_RUN="$RUNDIR/pororoca"; export PORO_RUN
  rm -rf "$PORO_RUN"; mkdir -p "$PORO_RUN"
  # shellcheck source=perf/lib.sh
  . "$PORO_PERF/lib.sh"
  export -f bench_wait_socket  # the row runs in a fresh `bash -c`, which sees exported functions only
  # A federation of two institutions: src (ia) sends, dst (ib) receives at this context's address.
  bench_federation "$PORO_BIN/cli/pororoca" "$PORO_RUN" src 127.0.0.1:1 dst "$PEER_HOST:$PORO_PORT" || return 1
  bench_config "$PORO_RUN" src 127.0.0.1:0 / "$PORO_RUN/src-state" "$PORO_RUN/src.sock" ia > "$PORO_RUN/src.toml"
  bench_config "$PORO_RUN" dst "$PEER_HOST:$PORO_PORT" / "$PORO_RUN/dst-state" "$PORO_RUN/dst.sock" ib \
    > "$PORO_RUN/dst.toml"
  start_server pororoca "$PORO_PORT" "$PORO_BIN/daemon/pororocad" --config "$PORO_RUN/dst.toml"
}

row_pororoca() {
  local sock="$PORO_RUN/src.sock" pid rc=0
  "$PORO_BIN/daemon/pororocad" --config "$PORO_RUN/src.toml" 2>>"$PORO_RUN/src.log" &
  pid=$!
  bench_wait_socket "$sock" || true  # perf/lib.sh; if it never came, the CLI says why
  PORO_SOCKET=$sock "$PORO_BIN/cli/pororoca" cp -r --no-progress "$1" "dst:$2/" >/dev/null || rc=$?
  kill "$pid"; wait "$pid"
  return $rc
}

add_row "pororoca cp (defaults)" "W1 W2 W3 W4" row_pororoca pororoca

# The same pair of daemons over UCX (UCX_TLS=tcp) and over libfabric (tcp;ofi_rxm): no RDMA on the
# benchmark machine, so these rows measure each backend's code path against the tcp row, not RDMA;
# see docs/performance.md. $1: the transport.
server_pororoca_over() {
  local t=$1 port run extra
  port=$(pick_port)
  run="$RUNDIR/pororoca-$t"
  declare -gx "PORO_RUN_$t=$run"
  rm -rf "$run"; mkdir -p "$run"
  # shellcheck source=perf/lib.sh
  . "$PORO_PERF/lib.sh"
  export -f bench_wait_socket row_pororoca_over
  case $t in
    ucx) extra=$'transports = ["ucx", "tcp"]\nucx_tls = "tcp"' ;;
    fabric) extra=$'transports = ["fabric", "tcp"]\nfabric_provider = "tcp;ofi_rxm"' ;;
  esac
  local BENCH_NETWORK_EXTRA=$extra
  bench_federation "$PORO_BIN/cli/pororoca" "$run" src 127.0.0.1:1 dst "$PEER_HOST:$port" || return 1
  bench_config "$run" src 127.0.0.1:0 / "$run/src-state" "$run/src.sock" ia > "$run/src.toml"
  bench_config "$run" dst "$PEER_HOST:$port" / "$run/dst-state" "$run/dst.sock" ib > "$run/dst.toml"
  start_server "pororoca_$t" "$port" "$PORO_BIN/daemon/pororocad" --config "$run/dst.toml"
}

# $1: the transport, then the row's arguments.
row_pororoca_over() {
  local t=$1 run_var="PORO_RUN_$1" pid rc=0
  local run=${!run_var} sock
  sock="$run/src.sock"
  "$PORO_BIN/daemon/pororocad" --config "$run/src.toml" 2>>"$run/src.log" &
  pid=$!
  bench_wait_socket "$sock" || true
  PORO_SOCKET=$sock "$PORO_BIN/cli/pororoca" cp -r --no-progress --transport "$t" "$2" "dst:$3/" >/dev/null || rc=$?
  kill "$pid"; wait "$pid"
  return $rc
}

server_pororoca_ucx() { server_pororoca_over ucx; }
row_pororoca_ucx() { row_pororoca_over ucx "$@"; }
server_pororoca_fabric() { server_pororoca_over fabric; }
row_pororoca_fabric() { row_pororoca_over fabric "$@"; }

add_row "pororoca cp --transport ucx (UCX_TLS=tcp)" "W1 W3" row_pororoca_ucx pororoca_ucx
add_row "pororoca cp --transport fabric (tcp;ofi_rxm)" "W1 W3" row_pororoca_fabric pororoca_fabric
