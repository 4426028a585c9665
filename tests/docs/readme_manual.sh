#!/usr/bin/env bash
# Runs every command of README.md's section "Manual use in 30 seconds", in its order, so that the
# section cannot drift from the code. The two DTNs share this host: each one's paths (/etc/pororoca,
# /data, /var/lib/pororoca, /run/pororoca) move into a scratch directory of its own, the addresses
# (dtn1.*.example:7701, 0.0.0.0:7701) become free loopback ports, the [[users]] uid becomes the
# caller's, the CLI finds lncc-dtn1's socket through PORO_SOCKET, and a daemon started with `&` is
# waited for until its socket answers. Nothing else of the text changes.
#   readme_manual.sh README.md PORORCAD_BINARY PORORCA_BINARY
set -euo pipefail
# shellcheck source=tests/docs/lib.sh
. "$(dirname "$0")/lib.sh"
README=$1 DAEMON=$2 CLI=$3
W=$(mktemp -d /tmp/poro-readme.XXXXXX)
BIN="$W/bin"
mkdir -p "$BIN"
ln -s "$DAEMON" "$BIN/pororocad"
ln -s "$CLI" "$BIN/pororoca"
cleanup() {
  stop_matching "pororocad --config $W/"
  rm -rf "$W"
}
trap cleanup EXIT
fail() { echo "readme_manual.sh: $*" >&2; exit 1; }

PORT_lncc=$(free_port) || fail "no free port"
PORT_cenapad=$(free_port) || fail "no free port"
[ "$PORT_lncc" != "$PORT_cenapad" ] || PORT_cenapad=$((PORT_lncc + 1))

# The section's fenced blocks, one file each, numbered in order; the fence's language is kept.
awk -v out="$W/block" '
  /^## Manual use in 30 seconds/ { in_section = 1; next }
  in_section && /^## / { exit }
  in_section && /^```/ {
    if (!in_block) { in_block = 1; n++; lang = substr($0, 4); file = sprintf("%s.%02d.%s", out, n, lang); printf "" > file; next }
    in_block = 0; close(file); next
  }
  in_section && in_block { print >> file }
' "$README"
ls "$W"/block.* >/dev/null 2>&1 || fail "no code blocks in the manual section of $README"

# Paths and addresses of DTN $1 (lncc or cenapad) moved into the scratch directory.
localize() {
  local dtn=$1 port_var="PORT_$1"
  sed -e "s|/etc/pororoca|$W/$dtn/etc|g" -e "s|/var/lib/pororoca|$W/$dtn/state|g" \
      -e "s|/run/pororoca|$W/$dtn/run|g" -e "s|/data|$W/$dtn/data|g" \
      -e "s|0\.0\.0\.0:7701|127.0.0.1:${!port_var}|g" -e "s|^uid = 1001|uid = $(id -u)|" \
      -e "s|^\(pororocad --config [^ ]*\) &\$|\1 \& wait_socket $W/$dtn/run/pororocad.sock|"
}
PRELUDE="export PATH=\"$BIN:\$PATH\"
wait_socket() { for _ in \$(seq 1 200); do pororoca --socket \"\$1\" endpoints >/dev/null 2>&1 && return 0; sleep 0.1; done; echo \"no daemon on \$1\" >&2; return 1; }
set -euo pipefail"

toml_n=0
for b in "$W"/block.*; do
  lang=${b##*.}
  first=$(head -n 1 "$b")
  case "$lang" in
    toml)
      toml_n=$((toml_n + 1))
      dtn=$([ $toml_n -eq 1 ] && echo lncc || echo cenapad)
      mkdir -p "$W/$dtn/etc"
      localize "$dtn" < "$b" > "$W/$dtn/etc/pororocad.toml"
      echo "== $(basename "$b"): the configuration of $dtn-dtn1"
      ;;
    sh)
      case "$first" in
        "# on lncc-dtn1") dtn=lncc ;;
        "# on cenapad-dtn1") dtn=cenapad ;;
        *) dtn="" ;;
      esac
      if [ -z "$dtn" ]; then  # the authority's commands
        script=$(sed -e "s|dtn1\.lncc\.example:7701|127.0.0.1:$PORT_lncc|g" \
                     -e "s|dtn1\.cenapad\.example:7701|127.0.0.1:$PORT_cenapad|g" "$b")
      else
        script=$(localize "$dtn" < "$b")
      fi
      echo "== $(basename "$b") (${dtn:-authority}):"
      echo "$script" | sed 's/^/   /'
      (cd "$W" && PORO_SOCKET="$W/${dtn:-lncc}/run/pororocad.sock" bash -c "$PRELUDE
$script") || fail "the commands of $(basename "$b") failed"
      ;;
    *) fail "unexpected block language '$lang' in the manual section" ;;
  esac
done

# What the section promises: the tree arrived, verified, under the peer's /incoming/.
got=$(cat "$W/cenapad/data/incoming/x/hello.txt" 2>/dev/null) || fail "cenapad-dtn1 has no /incoming/x/hello.txt"
[ "$got" = "hello from lncc" ] || fail "/incoming/x/hello.txt holds '$got'"
echo "readme_manual.sh: every command of the manual section ran; the tree arrived"
