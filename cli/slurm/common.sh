# shellcheck shell=bash
# Shared by pororoca's Slurm scripts (prolog, epilog, task-prolog in this directory); sourced, not run.
# docs/staging-slurm.md describes the set-up.
#
# Configuration: $PORORO_SLURM_CONF, else /etc/pororoca/slurm.conf (optional; KEY=VALUE lines,
# '#' comments, values optionally in quotes; the file is read, never executed):
#   PORORO_CLI            the pororoca CLI (default: pororoca on PATH, else /usr/bin/pororoca)
#   PORORO_SOCKET         the local daemon's socket (default: the CLI's, /run/pororoca/pororocad.sock)
#   PORORO_RUN_DIR        where the prolog leaves a job's environment for the task prolog
#                         (default /run/pororoca-slurm; created 0755 root)
#   PORORO_STAGE_TIMEOUT  seconds the prolog waits for the datasets (default 21600); then the job is held
#   PORORO_TTL_GRACE      seconds a lease outlives the job's time limit (default 3600)
#   PORORO_TTL_DEFAULT    lease seconds for a job without a time limit (default 604800)
#   PORORO_SLURM_LOG      also append the messages to this file (default: none)
# Messages go to stderr and to syslog (tag pororoca-slurm) when /dev/log exists.

PORORO_CLI=
PORORO_SOCKET=
PORORO_RUN_DIR=/run/pororoca-slurm
PORORO_STAGE_TIMEOUT=21600
PORORO_TTL_GRACE=3600
PORORO_TTL_DEFAULT=604800
PORORO_SLURM_LOG=

pororo_log() {
  local msg="pororoca-slurm $PORORO_CONTEXT job ${SLURM_JOB_ID:-?}: $*"
  printf '%s\n' "$msg" >&2
  if [ -S /dev/log ]; then logger --socket-errors=off -t pororoca-slurm -p user.notice -- "$msg" 2>/dev/null || true; fi
  if [ -n "$PORORO_SLURM_LOG" ]; then
    printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$msg" >>"$PORORO_SLURM_LOG" 2>/dev/null || true
  fi
}

# Reads the configuration file (if any) into the variables above; unknown keys are reported.
pororo_load_config() {
  local file=${PORORO_SLURM_CONF:-/etc/pororoca/slurm.conf} line key value
  [ -r "$file" ] || return 0
  while IFS= read -r line || [ -n "$line" ]; do
    line=${line%%#*}
    [[ $line =~ ^[[:space:]]*([A-Z_]+)[[:space:]]*=[[:space:]]*(.*[^[:space:]])?[[:space:]]*$ ]] || continue
    key=${BASH_REMATCH[1]}
    value=${BASH_REMATCH[2]}
    if [[ $value =~ ^\"(.*)\"$ || $value =~ ^\'(.*)\'$ ]]; then value=${BASH_REMATCH[1]}; fi
    case $key in
      PORORO_CLI | PORORO_SOCKET | PORORO_RUN_DIR | PORORO_STAGE_TIMEOUT | PORORO_TTL_GRACE | \
        PORORO_TTL_DEFAULT | PORORO_SLURM_LOG)
        printf -v "$key" '%s' "$value" ;;
      *) pororo_log "ignoring unknown key $key in $file" ;;
    esac
  done <"$file"
  local n
  for n in PORORO_STAGE_TIMEOUT PORORO_TTL_GRACE PORORO_TTL_DEFAULT; do
    [[ ${!n} =~ ^[0-9]+$ ]] || { pororo_log "$n='${!n}' in $file is not a number of seconds; using the default"; unset "$n"; }
  done
  : "${PORORO_STAGE_TIMEOUT:=21600}" "${PORORO_TTL_GRACE:=3600}" "${PORORO_TTL_DEFAULT:=604800}"
}

# The CLI to run (absolute path), or nothing.
pororo_cli() {
  if [ -n "$PORORO_CLI" ]; then printf '%s\n' "$PORORO_CLI"; return; fi
  command -v pororoca 2>/dev/null || printf '/usr/bin/pororoca\n'
}

# The CLI's global options (before the command).
pororo_cli_opts() {
  if [ -n "$PORORO_SOCKET" ]; then printf '%s\n' --socket "$PORORO_SOCKET"; fi
}

pororo_env_file() { printf '%s/%s.env\n' "$PORORO_RUN_DIR" "$SLURM_JOB_ID"; }
pororo_lease_file() { printf '%s/%s.lease\n' "$PORORO_RUN_DIR" "$SLURM_JOB_ID"; }
