#!/usr/bin/env bash
# pororoca's one setup script. On a fresh Debian 12 machine:
#   ./setup.sh demo    install dependencies, build, start two DTN daemons (two institutions) and move a
#                      generated multi-GiB dataset from one to the other, then verify it independently
#   ./setup.sh test    install dependencies, check the format, build with clang's thread-safety analysis,
#                      run the ThreadSanitizer subset, build with warnings as errors, run every test (ctest)
#   ./setup.sh deps    only install the Debian packages
#   ./setup.sh build [PRESET]   only configure and build (default preset: release)
# Environment for demo: DEMO_DIR (default /var/tmp/pororoca-demo), DEMO_GIB (dataset size, default 3),
# DEMO_SMALL_FILES (default 2000), DEMO_PORT_A / DEMO_PORT_B (default 47701 / 47702), KEEP=1 keeps it all.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$HERE"

PACKAGES=(cmake make g++ pkg-config liburing-dev libfabric-dev libucx-dev libxxhash-dev libssl-dev
          libboost-program-options-dev doctest-dev nlohmann-json3-dev libtomlplusplus-dev libsqlite3-dev sqlite3
          libbenchmark-dev openssl xxhash procps iproute2 util-linux libcpp-httplib-dev
          clang clang-format libtsan2 git python3 python3-yaml curl jq
          dpkg-dev file systemd adduser bash-completion chromium prometheus
          slurmctld slurmd slurm-client munge)

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }

deps() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then log "dependencies: all ${#PACKAGES[@]} packages present"; return; fi
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  log "installing: ${missing[*]}"
  $sudo apt-get update -q >/dev/null || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install failed for: ${missing[*]}"
}

build() {
  local preset=${1:-release}
  log "configure + build (preset $preset)"
  cmake --preset "$preset" >/dev/null || die "cmake configure failed (preset $preset)"
  cmake --build --preset "$preset" -j"$(nproc)" || die "build failed (preset $preset)"
}

# The style is checked, not only written down: any deviation from .clang-format fails.
check_format() {
  log "format check: clang-format --dry-run --Werror (.clang-format) on every tracked C++ file"
  local files
  mapfile -t files < <(git ls-files '*.cc' '*.h' 2>/dev/null || find src daemon cli include tests perf -name '*.cc' -o -name '*.h')
  clang-format --dry-run --Werror "${files[@]}" || die "files deviate from .clang-format (run: clang-format -i FILE)"
}

# clang's -Wthread-safety over every library, the daemons and the CLI (the annotations of base/mutex.h).
check_thread_safety() {
  log "thread-safety analysis: clang -Wthread-safety -Werror (preset tsa)"
  cmake --preset tsa >/dev/null || die "cmake configure failed (preset tsa)"
  cmake --build --preset tsa -j"$(nproc)" --target pororocad pororoca pororoca-fedd \
    || die "thread-safety analysis failed (preset tsa)"
}

# ThreadSanitizer on the concurrency-heavy tests: the engine's and the daemon's unit tests and the
# integration cases named in TSAN_CASES (real daemons built with -fsanitize=thread).
TSAN_CASES='^(engine|daemon|base):|^transport:fabric channel|^integration:(push and pull of a file|concurrent transfers between the same daemons|a push whose session set-up|re-running the same cp after a cancel|revoking an endpoint cuts|each protection level moves a tree|fabric: push and pull)'
run_tsan() {
  log "ThreadSanitizer subset (preset tsan): $TSAN_CASES"
  cmake --preset tsan >/dev/null || die "cmake configure failed (preset tsan)"
  cmake --build --preset tsan -j"$(nproc)" --target unit_engine unit_daemon unit_base unit_transport integration_tests \
    || die "build failed (preset tsan)"
  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" ctest --preset tsan -R "$TSAN_CASES" \
    || die "ThreadSanitizer subset failed"
}

run_tests() {
  check_format
  check_thread_safety
  run_tsan
  build ci
  log "running the test suite (ctest, preset ci)"
  ctest --preset ci
}

# ---- demo: the main job -----------------------------------------------------------------------
DEMO_PIDS=(); DEMO_DIR_USED=""
demo_cleanup() {
  local p
  for p in "${DEMO_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${DEMO_PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  if [ -n "$DEMO_DIR_USED" ] && [ "${KEEP:-0}" != 1 ]; then rm -rf "$DEMO_DIR_USED"; fi
}

# keystream NAME BYTES: deterministic incompressible bytes (AES-CTR of a fixed passphrase) on stdout
keystream() {
  head -c "$2" < <(openssl enc -aes-128-ctr -pass "pass:pororoca-demo-$1" -nosalt -pbkdf2 < /dev/zero 2>/dev/null)
}

demo() {
  build release
  local bin="$HERE/build/release"
  local dir=${DEMO_DIR:-/var/tmp/pororoca-demo} gib=${DEMO_GIB:-3} nsmall=${DEMO_SMALL_FILES:-2000}
  local pa=${DEMO_PORT_A:-47701} pb=${DEMO_PORT_B:-47702}
  local cli="$bin/cli/pororoca" daemon="$bin/daemon/pororocad"
  rm -rf "$dir"; mkdir -p "$dir"
  DEMO_PIDS=(); DEMO_DIR_USED=$dir
  trap demo_cleanup EXIT

  log "federation: authority key, CA, two institutions (lncc, cenapad), an endpoint each, a token issuer, a policy"
  local fed="$dir/federation" cfg=(--dir "$dir/federation")
  "$cli" federation init "${cfg[@]}" --name escience-demo >/dev/null
  "$cli" federation add-institution lncc "${cfg[@]}" --name "Laboratorio Nacional de Computacao Cientifica" >/dev/null
  "$cli" federation add-institution cenapad "${cfg[@]}" --name "CENAPAD regional HPC centre" >/dev/null
  "$cli" federation add-endpoint lncc-dtn1 "${cfg[@]}" --institution lncc --address "127.0.0.1:$pa" >/dev/null
  "$cli" federation add-endpoint cenapad-dtn1 "${cfg[@]}" --institution cenapad --address "127.0.0.1:$pb" >/dev/null
  "$cli" federation add-issuer https://tokens.lncc.demo "${cfg[@]}" --institution lncc \
    --key-out "$dir/lncc-token-issuer.key" >/dev/null
  "$cli" federation policy add "${cfg[@]}" --rule '{"id":"lncc-datasets-to-cenapad","effect":"allow",
    "source":["lncc"],"destination":["cenapad"],"direction":"push","source_paths":["/dataset"],
    "comment":"ingestion of LNCC datasets at CENAPAD"}' >/dev/null
  "$cli" federation sign "${cfg[@]}" --publish "$dir/manifest.json"
  "$cli" federation verify "$dir/manifest.json" --authority-key "$fed/authority.pub"

  local n port
  for n in lncc-dtn1 cenapad-dtn1; do
    if [ "$n" = lncc-dtn1 ]; then port=$pa; else port=$pb; fi
    mkdir -p "$dir/$n/export" "$dir/$n/state"
    cat > "$dir/$n.toml" <<TOML
# Only identity, paths and the federation: everything else is the embedded default.
[endpoint]
name = "$n"
[network]
listen = "127.0.0.1:$port"
[api]
socket = "$dir/$n.sock"
[storage]
export_root = "$dir/$n/export"
state_dir = "$dir/$n/state"
[tls]
ca = "$fed/ca.crt"
cert = "$fed/endpoints/$n.crt"
key = "$fed/endpoints/$n.key"
[federation]
manifest = "$dir/manifest.json"
authority_key = "$fed/authority.pub"
TOML
    if [ "$n" = lncc-dtn1 ]; then
      # LNCC's DTN mints short-lived bearer tokens for its local users (here: whoever runs the demo).
      cat >> "$dir/$n.toml" <<TOML
[tokens]
issuer = "https://tokens.lncc.demo"
key = "$dir/lncc-token-issuer.key"
[[users]]
uid = $(id -u)
identity = "$(id -un)@lncc"
TOML
    fi
    "$daemon" --config "$dir/$n.toml" --check-config >/dev/null || die "config $dir/$n.toml rejected"
    "$daemon" --config "$dir/$n.toml" >"$dir/$n.log" 2>&1 &
    DEMO_PIDS+=($!)
  done
  local i
  for i in $(seq 100); do
    [ -S "$dir/lncc-dtn1.sock" ] && [ -S "$dir/cenapad-dtn1.sock" ] && break
    sleep 0.1
  done
  [ -S "$dir/lncc-dtn1.sock" ] || { cat "$dir"/*.log >&2; die "daemons did not start"; }

  local src="$dir/lncc-dtn1/export/dataset"
  log "generating a ${gib} GiB dataset: 3 big files + $nsmall small files (AES-CTR keystream, incompressible)"
  mkdir -p "$src/big" "$src/small"
  local bigmib=$(( gib * 1024 / 3 ))
  for i in 1 2 3; do keystream "$i" $(( bigmib << 20 )) > "$src/big/part-$i.bin"; done
  keystream small $(( nsmall * 64 << 10 )) | split -b 64K -a 5 -d - "$src/small/sample-"
  : > "$src/small/empty-file"
  mkdir -p "$src/empty-dir"
  ln -s big/part-1.bin "$src/latest"
  log "dataset: $(du -sh "$src" | cut -f1) in $(find "$src" -type f | wc -l) files"

  log "admission (no data moves): pororoca policy check -r $src cenapad-dtn1:/"
  PORO_SOCKET="$dir/lncc-dtn1.sock" "$cli" policy check -r "$src" cenapad-dtn1:/ || die "the transfer would be refused"
  log "lncc-dtn1 -> cenapad-dtn1: pororoca cp -r $src cenapad-dtn1:/"
  local rc=0
  PORO_SOCKET="$dir/lncc-dtn1.sock" "$cli" cp -r "$src" cenapad-dtn1:/ || rc=$?
  [ $rc -eq 0 ] || { tail -20 "$dir"/*.log >&2; die "transfer failed (exit $rc)"; }

  log "independent check with xxhsum (XXH128) of every file at both ends"
  local dst="$dir/cenapad-dtn1/export/dataset"
  (cd "$src" && find . -type f -print0 | sort -z | xargs -0 xxhsum -H2) > "$dir/src.sums"
  (cd "$dst" && find . -type f -print0 | sort -z | xargs -0 xxhsum -H2) > "$dir/dst.sums"
  if cmp -s "$dir/src.sums" "$dir/dst.sums" && diff -r --no-dereference "$src" "$dst" >/dev/null \
     && [ "$(readlink "$dst/latest")" = big/part-1.bin ] && [ -d "$dst/empty-dir" ]; then
    printf '\n\033[32mVERIFIED\033[0m: %s files, %s, byte-identical at cenapad-dtn1 (XXH128 of every file)\n' \
      "$(wc -l < "$dir/dst.sums")" "$(du -sh "$dst" | cut -f1)"
  else
    die "verification FAILED: source and destination differ"
  fi
  log "audit (cenapad-dtn1, last records) and accounting"
  tail -n 3 "$dir/cenapad-dtn1/state/audit.log"
  PORO_SOCKET="$dir/cenapad-dtn1.sock" "$cli" accounting
}

case "${1:-}" in
  deps) deps ;;
  build) deps; build "${2:-release}" ;;
  test) deps; run_tests ;;
  demo) deps; demo ;;
  *) sed -n '2,9p' "$0"; exit 2 ;;
esac
