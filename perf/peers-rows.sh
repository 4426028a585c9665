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

: "${PORO_BIN:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/build/release}"
export PORO_BIN

server_pororoca() {
  PORO_PORT=$(pick_port); export PORO_PORT
  PORO_RUN="$RUNDIR/pororoca"; export PORO_RUN
  mkdir -p "$PORO_RUN"
  if [ ! -f "$PORO_RUN/fed/ca.crt" ]; then
    "$PORO_BIN/cli/pororoca" federation init --dir "$PORO_RUN/fed" >/dev/null || return 1
    "$PORO_BIN/cli/pororoca" federation add-endpoint src --dir "$PORO_RUN/fed" >/dev/null || return 1
    "$PORO_BIN/cli/pororoca" federation add-endpoint dst --dir "$PORO_RUN/fed" >/dev/null || return 1
  fi
  local side
  for side in src dst; do
    local listen="127.0.0.1:0" peer_name=dst peer_addr="$PEER_HOST:$PORO_PORT"
    if [ "$side" = dst ]; then listen="$PEER_HOST:$PORO_PORT"; peer_name=src; peer_addr="127.0.0.1:1"; fi
    rm -rf "$PORO_RUN/$side-state"
    cat > "$PORO_RUN/$side.toml" <<TOML
[endpoint]
name = "$side"
[network]
listen = "$listen"
[api]
socket = "$PORO_RUN/$side.sock"
[storage]
export_root = "/"
state_dir = "$PORO_RUN/$side-state"
[tls]
ca = "$PORO_RUN/fed/ca.crt"
cert = "$PORO_RUN/fed/endpoints/$side.crt"
key = "$PORO_RUN/fed/endpoints/$side.key"
[[peers]]
name = "$peer_name"
address = "$peer_addr"
TOML
  done
  start_server pororoca "$PORO_PORT" "$PORO_BIN/daemon/pororocad" --config "$PORO_RUN/dst.toml"
}

row_pororoca() {
  local sock="$PORO_RUN/src.sock" pid rc=0 i
  "$PORO_BIN/daemon/pororocad" --config "$PORO_RUN/src.toml" 2>>"$PORO_RUN/src.log" &
  pid=$!
  for i in $(seq 200); do [ -S "$sock" ] && break; sleep 0.01; done
  PORO_SOCKET=$sock "$PORO_BIN/cli/pororoca" cp -r --no-progress "$1" "dst:$2/" >/dev/null || rc=$?
  kill "$pid"; wait "$pid"
  return $rc
}

add_row "pororoca cp (defaults)" "W1 W2 W3 W4" row_pororoca pororoca
