#!/usr/bin/env bash
# The Debian package, for real (docs/operations.md, section 14): makes the .deb with CPack from an
# already built tree, installs it with dpkg, checks what it installed (programs, docs, examples,
# units, completion, the pororoca user and its directories), fills the example configurations in
# with a test federation made by the installed CLI and has `pororocad --check-config` and
# `pororoca-fedd --check-config` accept them as the pororoca user, starts pororocad as that user
# and asks it `pororoca endpoints` over the default socket, checks the units with
# `systemd-analyze verify` and the bash completion through bash-completion's loader, then purges
# the package and checks that nothing of it is left. The machine is restored whatever happens
# (trap): this script refuses to start where pororoca is installed or has left anything.
#   deb_test.sh BUILD_DIR
# Root only (dpkg -i); exits 77 (ctest: skipped) otherwise.
set -euo pipefail
BUILD=$(cd "${1:?usage: deb_test.sh BUILD_DIR}" && pwd)
fail() {
  echo "deb_test.sh: FAILED: $*" >&2
  exit 1
}
step() { echo "== $*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "deb_test.sh: needs root (dpkg -i, a system user); skipped" >&2
  exit 77
fi
missing=()
for tool in cpack:cmake dpkg-deb:dpkg dpkg-shlibdeps:dpkg-dev file:file systemd-analyze:systemd \
  adduser:adduser runuser:util-linux setpriv:util-linux flock:util-linux timeout:coreutils; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool%%:*} (Debian package ${tool#*:})")
done
[ -r /usr/share/bash-completion/bash_completion ] ||
  missing+=("/usr/share/bash-completion/bash_completion (Debian package bash-completion)")
[ ${#missing[@]} -eq 0 ] || fail "missing: ${missing[*]} (setup.sh deps installs them)"
[ -r "$BUILD/CPackConfig.cmake" ] || fail "$BUILD/CPackConfig.cmake: not a configured build tree"

# One run at a time on a machine (another build tree's ctest may run this test too).
mkdir -p /run/lock
exec 9>/run/lock/pororoca-deb-test.lock
flock -w 240 9 || fail "another deb_test.sh holds /run/lock/pororoca-deb-test.lock"

# ---- nothing of pororoca may be here: installing would clobber it, purging would remove it ----
PATHS=(/usr/bin/pororoca /usr/bin/pororocad /usr/bin/pororoca-fedd /usr/share/doc/pororoca
  /usr/lib/systemd/system/pororocad.service /usr/lib/systemd/system/pororoca-fedd.service
  /usr/share/bash-completion/completions/pororoca /etc/pororoca /var/lib/pororoca
  /var/lib/pororoca-fedd /run/pororoca /usr/libexec/pororoca)
status=$(dpkg-query -W -f='${db:Status-Status}' pororoca 2>/dev/null || true)
[ -z "$status" ] || [ "$status" = not-installed ] ||
  fail "the package pororoca is on this machine (dpkg status '$status'): installing would replace it" \
    "and purging would remove it. Remove it first (dpkg --purge pororoca) or run this test elsewhere"
for p in "${PATHS[@]}"; do
  [ ! -e "$p" ] || fail "$p exists: pororoca is installed here by other means; this test would clobber" \
    "it. Remove it or run the test elsewhere"
done
getent passwd pororoca >/dev/null && fail "a user 'pororoca' exists: the test would take it over and remove it"
getent group pororoca >/dev/null && fail "a group 'pororoca' exists: the test would take it over and remove it"

W=$(mktemp -d /tmp/poro-deb.XXXXXX)
chmod 0755 "$W" # the pororoca user reaches the export root and the manifest below it
installed=false
daemon_pid=""
cleanup() {
  local rc=$?
  set +e
  if [ -n "$daemon_pid" ]; then
    kill "$daemon_pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$daemon_pid" 2>/dev/null
  fi
  if $installed; then
    # What the test put into /etc/pororoca is not the package's: purge keeps a non-empty /etc/pororoca.
    rm -f /etc/pororoca/pororocad.toml /etc/pororoca/fedd.toml /etc/pororoca/ca.crt \
      /etc/pororoca/authority.pub /etc/pororoca/manifest.json /etc/pororoca/pkgtest-dtn1.crt \
      /etc/pororoca/pkgtest-dtn1.key /etc/pororoca/fedd.crt /etc/pororoca/fedd.key
    if dpkg-query -W pororoca >/dev/null 2>&1; then
      echo "== cleanup: dpkg --purge pororoca"
      timeout 120 dpkg --purge pororoca >/dev/null
    fi
    # Only if the package's own scripts failed to: the machine goes back to how it was.
    getent passwd pororoca >/dev/null && userdel pororoca
    getent group pororoca >/dev/null && groupdel pororoca
    rm -rf /var/lib/pororoca /var/lib/pororoca-fedd /run/pororoca
    rmdir /etc/pororoca 2>/dev/null
  fi
  rm -rf "$W"
  exit $rc
}
trap cleanup EXIT

# ---- the package ----------------------------------------------------------------------------
step "cpack -G DEB (the build tree $BUILD)"
(cd "$W" && timeout 240 cpack -G DEB --config "$BUILD/CPackConfig.cmake" -B "$W/pkg" >"$W/cpack.log" 2>&1) ||
  { cat "$W/cpack.log" >&2; fail "cpack failed"; }
mapfile -t debs < <(find "$W/pkg" -maxdepth 1 -name 'pororoca_*.deb')
[ ${#debs[@]} -eq 1 ] || fail "expected one pororoca_*.deb in $W/pkg, found ${#debs[@]}"
deb=${debs[0]}
version=$("$BUILD/daemon/pororocad" --version | awk '{print $2}')
[ -n "$version" ] || fail "no version from $BUILD/daemon/pororocad --version"
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = pororoca ] || fail "Package: $(field Package)"
[[ $(field Version) == "$version"-* ]] || fail "Version $(field Version) is not the project's $version"
depends=$(field Depends)
echo "   $(basename "$deb"): Version $(field Version), Depends: $depends"
for lib in libc6 libstdc++6 libssl3 libsqlite3-0 liburing2 libxxhash0 libboost-program-options adduser; do
  [[ $depends == *"$lib"* ]] || fail "Depends lacks $lib: $depends"
done
control=$(dpkg-deb --ctrl-tarfile "$deb" | tar -t)
grep -qx './conffiles' <<<"$control" &&
  fail "the package has conffiles: the example configuration is not valid as it is and must not be one"
for script in postinst prerm postrm; do
  grep -qx "./$script" <<<"$control" || fail "no $script in the package"
done
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' > "$W/contents"
grep -q '^/etc' "$W/contents" && fail "the package ships files in /etc: $(grep '^/etc' "$W/contents")"

step "dpkg -i $(basename "$deb")"
installed=true
timeout 120 dpkg -i "$deb" >"$W/dpkg.log" 2>&1 || { cat "$W/dpkg.log" >&2; fail "dpkg -i failed"; }
[ "$(dpkg-query -W -f='${db:Status-Status}' pororoca)" = installed ] || fail "dpkg does not say installed"

step "what it installed"
for prog in pororocad pororoca pororoca-fedd; do
  [ -x "/usr/bin/$prog" ] || fail "/usr/bin/$prog missing"
  [ "$("/usr/bin/$prog" --version)" = "$prog $version" ] || fail "/usr/bin/$prog --version: $("/usr/bin/$prog" --version)"
  [[ $(file -b "/usr/bin/$prog") == *", stripped"* ]] || fail "/usr/bin/$prog is not stripped: $(file -b "/usr/bin/$prog")"
done
for f in README.md docs/operations.md docs/cli.md docs/control-plane.md docs/api/openapi.yaml \
  examples/pororocad.toml examples/fedd.toml; do
  [ -s "/usr/share/doc/pororoca/$f" ] || fail "/usr/share/doc/pororoca/$f missing"
done
for u in pororocad pororoca-fedd; do
  unit=/usr/lib/systemd/system/$u.service
  [ -s "$unit" ] || fail "$unit missing"
  grep -qx "ExecStart=/usr/bin/$u --config /etc/pororoca/${u/pororoca-fedd/fedd}.toml" "$unit" ||
    fail "$unit: ExecStart does not run /usr/bin/$u: $(grep ExecStart= "$unit")"
done
[ -s /usr/share/bash-completion/completions/pororoca ] || fail "the bash completion is missing"
# The Slurm scripts (docs/staging-slurm.md): root's, not writable by others, and they parse.
for f in prolog epilog task-prolog common.sh; do
  s=/usr/libexec/pororoca/slurm/$f
  [ -s "$s" ] || fail "$s missing"
  if [ "$(stat -c %U "$s")" != root ] || [ $((0$(stat -c %a "$s") & 022)) -ne 0 ]; then
    fail "$s: owner $(stat -c %U "$s"), mode $(stat -c %a "$s") (root's, not writable by others)"
  fi
  [ "$f" = common.sh ] || [ -x "$s" ] || fail "$s is not executable"
  bash -n "$s" || fail "$s does not parse"
done
entry=$(getent passwd pororoca) || fail "postinst did not create the user pororoca"
IFS=: read -r _ _ uid _ _ home shell <<<"$entry"
[ "$uid" -lt 1000 ] || fail "pororoca is not a system user (uid $uid)"
[ "$shell" = /usr/sbin/nologin ] || fail "pororoca's shell is $shell, not /usr/sbin/nologin"
[ "$home" = /var/lib/pororoca ] || fail "pororoca's home is $home"
getent group pororoca >/dev/null || fail "postinst did not create the group pororoca"
[ "$(stat -c '%U:%G %a' /var/lib/pororoca)" = "pororoca:pororoca 700" ] ||
  fail "/var/lib/pororoca: $(stat -c '%U:%G %a' /var/lib/pororoca)"
[ "$(stat -c '%U:%G %a' /var/lib/pororoca-fedd/accounting)" = "pororoca:pororoca 750" ] ||
  fail "/var/lib/pororoca-fedd/accounting: $(stat -c '%U:%G %a' /var/lib/pororoca-fedd/accounting)"
[ -d /etc/pororoca ] || fail "postinst did not create /etc/pororoca"

# ---- the example configurations, filled in with a test federation (README.md's steps) ---------
step "a test federation (installed pororoca federation ...) and the files README.md installs"
free_port() {
  for _ in $(seq 1 200); do
    local p=$((20000 + RANDOM % 10000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  fail "no free loopback port"
}
peer_port=$(free_port)
fedd_port=$(free_port)
fed="$W/fed"
(
  cd "$W"
  export PATH=/usr/bin:$PATH # the installed CLI
  pororoca federation init --dir fed --name pkgtest >/dev/null
  pororoca federation add-institution pkg --dir fed >/dev/null
  pororoca federation add-endpoint pkgtest-dtn1 --dir fed --institution pkg --address "127.0.0.1:$peer_port" >/dev/null
  pororoca federation add-service fedd --dir fed >/dev/null
  pororoca federation sign --dir fed --publish fed/published.json >/dev/null
) || fail "pororoca federation ... failed"
install -m 644 "$fed/ca.crt" "$fed/authority.pub" /etc/pororoca/
install -m 644 "$fed/published.json" /etc/pororoca/manifest.json
install -m 644 "$fed/endpoints/pkgtest-dtn1.crt" "$fed/services/fedd.crt" /etc/pororoca/
install -m 640 -g pororoca "$fed/endpoints/pkgtest-dtn1.key" "$fed/services/fedd.key" /etc/pororoca/
install -d -o pororoca -g pororoca "$W/export"

step "the example pororocad.toml, as shipped, is not valid here (it names lncc-dtn1's files)"
if runuser -u pororoca -- /usr/bin/pororocad --config /usr/share/doc/pororoca/examples/pororocad.toml \
  --check-config >"$W/asis.out" 2>&1; then
  fail "the example configuration was accepted as it is: $(cat "$W/asis.out")"
fi
sed 's/^/   /' "$W/asis.out"

step "filled in (name, certificate, key, listen address, export root): pororocad --check-config as pororoca"
sed -e 's/lncc-dtn1/pkgtest-dtn1/g' -e "s|^listen = \"0.0.0.0:7701\"|listen = \"127.0.0.1:$peer_port\"|" \
  -e "s|^export_root = \"/data\"|export_root = \"$W/export\"|" \
  /usr/share/doc/pororoca/examples/pororocad.toml >/etc/pororoca/pororocad.toml
for line in 'name = "pkgtest-dtn1"' "listen = \"127.0.0.1:$peer_port\"" "export_root = \"$W/export\"" \
  'cert = "/etc/pororoca/pkgtest-dtn1.crt"' 'key = "/etc/pororoca/pkgtest-dtn1.key"'; do
  grep -q "^$line " /etc/pororoca/pororocad.toml || fail "filling in the example: no line '$line'"
done
runuser -u pororoca -- /usr/bin/pororocad --config /etc/pororoca/pororocad.toml --check-config >"$W/check.out" 2>&1 ||
  { cat "$W/check.out" >&2; fail "pororocad --check-config refused the filled-in example"; }
grep -q "is valid: endpoint pkgtest-dtn1, export root $W/export, manifest serial 1 of federation 'pkgtest'" \
  "$W/check.out" || fail "unexpected --check-config output: $(cat "$W/check.out")"
sed 's/^/   /' "$W/check.out"

step "filled in (listen address, manifest file): pororoca-fedd --check-config as pororoca"
install -d "$W/srv"
install -m 644 "$fed/published.json" "$W/srv/manifest.json"
sed -e "s|^listen = \"0.0.0.0:47700\"|listen = \"127.0.0.1:$fedd_port\"|" -e "s|/srv/fedd|$W/srv|" \
  /usr/share/doc/pororoca/examples/fedd.toml >/etc/pororoca/fedd.toml
grep -q "^listen = \"127.0.0.1:$fedd_port\"" /etc/pororoca/fedd.toml || fail "filling in fedd.toml: listen"
grep -q "^file = \"$W/srv/manifest.json\"" /etc/pororoca/fedd.toml || fail "filling in fedd.toml: [manifest] file"
runuser -u pororoca -- /usr/bin/pororoca-fedd --config /etc/pororoca/fedd.toml --check-config >"$W/fcheck.out" 2>&1 ||
  { cat "$W/fcheck.out" >&2; fail "pororoca-fedd --check-config refused the filled-in example"; }
grep -q 'is valid' "$W/fcheck.out" || fail "unexpected output: $(cat "$W/fcheck.out")"
sed 's/^/   /' "$W/fcheck.out"

step "pororocad runs as pororoca with the package's directories; pororoca endpoints on the default socket"
# What the unit's RuntimeDirectory= makes when systemd starts it.
install -d -o pororoca -g pororoca -m 0755 /run/pororoca
# setpriv execs the daemon (no parent in between), so $! is the daemon and gets the SIGTERM below.
setpriv --reuid=pororoca --regid=pororoca --init-groups -- /usr/bin/pororocad \
  --config /etc/pororoca/pororocad.toml >"$W/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 100); do
  [ -S /run/pororoca/pororocad.sock ] && break
  kill -0 "$daemon_pid" 2>/dev/null || { cat "$W/daemon.log" >&2; fail "pororocad exited"; }
  sleep 0.1
done
[ -S /run/pororoca/pororocad.sock ] || { cat "$W/daemon.log" >&2; fail "no socket after 10 s"; }
timeout 20 /usr/bin/pororoca endpoints >"$W/endpoints.out" 2>&1 || { cat "$W/endpoints.out" >&2; fail "pororoca endpoints"; }
grep -q '^self: pkgtest-dtn1 (pkg), federation pkgtest manifest serial 1' "$W/endpoints.out" ||
  fail "pororoca endpoints: $(cat "$W/endpoints.out")"
sed 's/^/   /' "$W/endpoints.out"
[ "$(stat -c %U /var/lib/pororoca/manifest.json)" = pororoca ] || fail "state files not the pororoca user's"
kill "$daemon_pid"
for _ in $(seq 1 100); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
wait "$daemon_pid" || fail "pororocad did not stop cleanly on SIGTERM: $(tail -3 "$W/daemon.log")"
daemon_pid=""

# ---- the units --------------------------------------------------------------------------------
step "systemd-analyze verify"
for u in pororocad pororoca-fedd; do
  out=$(systemd-analyze verify "/usr/lib/systemd/system/$u.service" 2>&1) ||
    fail "systemd-analyze verify $u.service: $out"
  # Its remarks about other units of this machine are not ours; any about ours fail.
  if grep -i "$u" <<<"$out"; then fail "systemd-analyze verify $u.service complains (above)"; fi
  unit=/usr/lib/systemd/system/$u.service
  # shellcheck disable=SC2016 # $MAINPID is the unit's, not ours
  for key in User=pororoca ProtectSystem=strict LimitNOFILE= 'ExecReload=/bin/kill -HUP $MAINPID' \
    StateDirectory=; do
    grep -q "^$key" "$unit" || fail "$unit has no $key"
  done
  echo "   $u.service: verified"
done
grep -qx 'RuntimeDirectory=pororoca' /usr/lib/systemd/system/pororocad.service || fail "pororocad: RuntimeDirectory"
grep -qx 'LimitMEMLOCK=infinity' /usr/lib/systemd/system/pororocad.service || fail "pororocad: LimitMEMLOCK"

# ---- the bash completion, loaded as bash-completion loads it ---------------------------------
step "bash completion (bash-completion's loader, then completing)"
complete_words() { # complete_words WORD... -> the completions of the last word, one a line
  bash --norc --noprofile -c '
    . /usr/share/bash-completion/bash_completion
    _completion_loader pororoca
    complete -p pororoca | grep -q -- "-F _pororoca" || { echo "not loaded" >&2; exit 1; }
    COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
    _pororoca pororoca "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
    printf "%s\n" "${COMPREPLY[@]}"' complete "$@" | sort
}
[ "$(complete_words pororoca sta)" = "$(printf 'stage\nstaging\nstatus')" ] ||
  fail "pororoca sta<TAB>: $(complete_words pororoca sta | tr '\n' ' ')"
[ "$(complete_words pororoca cp --rec)" = --recursive ] || fail "pororoca cp --rec<TAB>: $(complete_words pororoca cp --rec)"
[ "$(complete_words pororoca --socket /tmp/x cp --protection pr)" = private ] ||
  fail "--protection pr<TAB> after a global option"
[ "$(complete_words pororoca federation policy re)" = remove ] || fail "pororoca federation policy re<TAB>"
# Every command of `pororoca --help`, and every long option of each command's --help, is completed.
all_commands=$(complete_words pororoca '')
mapfile -t commands < <(/usr/bin/pororoca --help | awk '/^Commands:/ { on = 1; next } on && /^$/ { exit } on { print $1 }')
[ ${#commands[@]} -ge 10 ] || fail "could not read the commands of pororoca --help"
# check_options WORD...: the long options of `pororoca WORD... --help` are offered after `pororoca WORD... --`
checked=0
check_options() {
  local helptext offered opt
  helptext=$(/usr/bin/pororoca "$@" --help 2>&1) || return 0 # commands without --help (cancel)
  offered=$(complete_words pororoca "$@" --)
  # shellcheck disable=SC2013 # the options are words
  for opt in $(grep -oE -- '--[a-z][a-z-]+' <<<"$helptext" | sort -u); do
    grep -qx -- "$opt" <<<"$offered" || fail "pororoca $* --<TAB> lacks $opt (in its --help)"
  done
  checked=$((checked + 1))
}
for c in "${commands[@]}"; do
  grep -qx -- "$c" <<<"$all_commands" || fail "the completion does not offer the command '$c' of pororoca --help"
  case "$c" in
    policy) check_options policy check ;;
    token) check_options token issue ;;
    federation | endpoints) ;;
    *) check_options "$c" ;;
  esac
done
fed_commands=$(complete_words pororoca federation '')
for sub in $(/usr/bin/pororoca federation --help | awk 'NR > 1 { print $1 }' | tr '|' ' ' | sort -u); do
  grep -qx -- "$sub" <<<"$fed_commands" || fail "pororoca federation <TAB> lacks $sub"
  if [ "$sub" = policy ]; then
    for p in add remove set; do check_options federation policy "$p"; done
  else
    check_options federation "$sub"
  fi
done
[ "$checked" -ge 20 ] || fail "only $checked --help texts were read: the check above saw too little"
echo "   every command and option of the --help texts is completed"

# ---- purge: nothing is left -------------------------------------------------------------------
step "dpkg --purge pororoca"
rm -f /etc/pororoca/pororocad.toml /etc/pororoca/fedd.toml /etc/pororoca/ca.crt /etc/pororoca/authority.pub \
  /etc/pororoca/manifest.json /etc/pororoca/pkgtest-dtn1.crt /etc/pororoca/pkgtest-dtn1.key \
  /etc/pororoca/fedd.crt /etc/pororoca/fedd.key
timeout 120 dpkg --purge pororoca >"$W/purge.log" 2>&1 || { cat "$W/purge.log" >&2; fail "dpkg --purge failed"; }
status=$(dpkg-query -W -f='${db:Status-Status}' pororoca 2>/dev/null || true)
[ -z "$status" ] || [ "$status" = not-installed ] || fail "after purge dpkg says '$status'"
while read -r p; do
  [ -z "$p" ] || [ -d "$p" ] || [ ! -e "$p" ] || fail "$p is left after the purge"
done <"$W/contents"
for p in "${PATHS[@]}"; do [ ! -e "$p" ] || fail "$p is left after the purge"; done
getent passwd pororoca >/dev/null && fail "the user pororoca is left after the purge"
getent group pororoca >/dev/null && fail "the group pororoca is left after the purge"
installed=false
echo "deb_test.sh: OK"
