#!/usr/bin/env bash
# Runs the commands of docs/control-plane.md's "Running it" with the configuration of its
# "Configuration" section, so that neither can drift from the code. Paths (/etc/pororoca, /srv/fedd,
# /var/lib/pororoca-fedd) move into a scratch directory and the listen address to a free loopback
# port; the authority's workspace `fed` is made first (federation.md has those commands); the last
# command, which runs the service in the foreground, runs in the background and must stay up.
#   control_plane.sh docs/control-plane.md PORORCA_BINARY PORORCA_FEDD_BINARY
set -euo pipefail
# shellcheck source=tests/docs/lib.sh
. "$(dirname "$0")/lib.sh"
DOC=$1 CLI=$2 FEDD=$3
W=$(mktemp -d /tmp/poro-cpdoc.XXXXXX)
mkdir -p "$W/bin"
ln -s "$CLI" "$W/bin/pororoca"
ln -s "$FEDD" "$W/bin/pororoca-fedd"
cleanup() {
  stop_matching "pororoca-fedd --config $W/"
  rm -rf "$W"
}
trap cleanup EXIT
fail() { echo "control_plane.sh: $*" >&2; exit 1; }
export PATH="$W/bin:$PATH"
port=$(free_port) || fail "no free port"
# A block: the fenced block after heading $1 whose fence is $2 ("sh" or "toml").
block() {
  awk -v head="$1" -v fence="$2" '
    $0 == head { in_section = 1; next }
    in_section && /^## / { exit }
    in_section && $0 == "```" fence { in_block = 1; next }
    in_block && /^```/ { exit }
    in_block { print }
  ' "$DOC"
}
localize() {
  sed -e "s|/etc/pororoca|$W/etc|g" -e "s|/srv/fedd|$W/srv|g" -e "s|/var/lib/pororoca-fedd|$W/state|g" \
      -e "s|0\.0\.0\.0:47700|127.0.0.1:$port|g"
}
run_cmds=$(block "## Running it" sh | localize)
config=$(block "## Configuration" toml | localize)
[ -n "$run_cmds" ] || fail "no sh block under 'Running it' in $DOC"
[ -n "$config" ] || fail "no toml block under 'Configuration' in $DOC"
cd "$W"
pororoca federation init --dir fed --name escience >/dev/null
pororoca federation add-institution lncc --dir fed >/dev/null
pororoca federation add-endpoint lncc-dtn1 --dir fed --institution lncc --address 127.0.0.1:1 >/dev/null
mkdir -p "$W/etc"
printf '%s\n' "$config" > "$W/etc/fedd.toml"
# The foreground service goes to the background; everything before it must succeed.
last=$(printf '%s\n' "$run_cmds" | tail -n 1)
case "$last" in "pororoca-fedd --config "*) ;; *) fail "the last command is not the service: $last" ;; esac
printf '%s\n' "$run_cmds" | sed '$d' > "$W/steps.sh"
echo "== docs/control-plane.md, Running it:"; sed 's/^/   /' "$W/steps.sh"
bash -euo pipefail "$W/steps.sh" || fail "the commands of 'Running it' failed"
$last > "$W/fedd.out" 2>&1 &
pid=$!
for _ in $(seq 1 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$W/fedd.out" >&2; fail "pororoca-fedd exited"; }
  sleep 0.1
done
(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { cat "$W/fedd.out" >&2; fail "pororoca-fedd does not listen on $port"; }
grep -q "listening on" "$W/fedd.out" || { cat "$W/fedd.out" >&2; fail "no start-up line in the service's log"; }
echo "control_plane.sh: the commands and the configuration of docs/control-plane.md work"
