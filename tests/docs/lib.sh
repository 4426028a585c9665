# shellcheck shell=bash
# Shared by the docs-as-tests scripts of tests/docs/ (sourced).

# A loopback port nobody listens on (bounded tries).
free_port() {
  for _ in $(seq 1 200); do
    local p=$((20000 + RANDOM % 10000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  echo "no free loopback port" >&2
  return 1
}

# Stops every process whose command line contains $1 (SIGTERM, up to 5 s, then SIGKILL).
stop_matching() {
  pkill -f "$1" 2>/dev/null || true
  for _ in $(seq 1 50); do pgrep -f "$1" >/dev/null || return 0; sleep 0.1; done
  pkill -9 -f "$1" 2>/dev/null || true
}
