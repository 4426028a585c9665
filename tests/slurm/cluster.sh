#!/usr/bin/env bash
# A single-node Slurm for tests, from Debian's packages (slurmctld, slurmd, slurm-client, munge),
# everything in one directory: a munge key and munged with its socket there, slurm.conf, state,
# spool and logs. Runs as root (slurmd must, to run jobs as their users).
#
#   cluster.sh start DIR [PROLOG EPILOG TASKPROLOG]   start munged, slurmctld, slurmd; wait until
#                                                    the node is idle (bounded); prints
#                                                    SLURM_CONF=DIR/etc/slurm.conf on stdout
#   cluster.sh stop DIR                             cancel every job, stop what start started
#
# With SLURM_TEST_OWNER_PID set, start also leaves a watcher that runs stop once that process is
# gone: a test killed by its timeout does not leave Slurm running.
#
# PROLOG, EPILOG and TASKPROLOG (optional, absolute paths) become Prolog=, Epilog= and
# TaskProlog= with PrologFlags=Alloc. Clients then need SLURM_CONF=DIR/etc/slurm.conf (the munge
# socket is named in it by AuthInfo). Environment: SLURM_TEST_START_TIMEOUT (seconds, default 60).
#
# Made for containers: no systemd, no cgroups (proctrack/linuxproc, task/none), non-default ports
# picked free at start, controller and node on 127.0.0.1. The node has 2 CPUs whatever the machine
# has (SlurmdParameters=config_overrides), so two one-CPU jobs run at once; a requeued job may
# start again 30 s after its requeue (AuthInfo cred_expire=30; Slurm's default is 120 s), and the
# scheduler looks at pending jobs every 5 s (sched_interval; default 60 s). DIR must be reachable by the job users
# only for what a test puts there; the daemons' own files stay root's.
set -euo pipefail

die() { printf 'cluster.sh: %s\n' "$*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: cluster.sh start|stop DIR [PROLOG EPILOG TASKPROLOG]"
cmd=$1
DIR=$(realpath -m "$2")
CONF=$DIR/etc/slurm.conf
NODE=pororoca-node1

need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: install Debian's $2 package (setup.sh deps)"; }

# A TCP port nothing listens on (ss lists the listeners), from a range away from Slurm's defaults.
free_port() {
  local p used
  used=$(ss -Htln 2>/dev/null | awk '{print $4}' | sed 's/.*://' | sort -u)
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 20000))
    grep -qx "$p" <<<"$used" || { echo "$p"; return; }
  done
  die "no free TCP port found"
}

# Pid in FILE if that process is alive.
live_pid() { local p; p=$(cat "$1" 2>/dev/null) || return 1; [ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"; }

dump_logs() {
  local f
  for f in "$DIR"/log/*.log; do
    [ -f "$f" ] || continue
    printf '==== %s (last 30 lines)\n' "$f" >&2
    tail -n 30 "$f" >&2
  done
}

start() {
  local prolog=${1:-} epilog=${2:-} taskprolog=${3:-}
  need munged munge; need mungekey munge; need slurmctld slurmctld; need slurmd slurmd
  need scontrol slurm-client; need sinfo slurm-client
  [ "$(id -u)" -eq 0 ] || die "must run as root (slurmd runs jobs as their users)"
  local timeout=${SLURM_TEST_START_TIMEOUT:-60}
  mkdir -p "$DIR"/{etc,munge,state,spool,log,run}
  chmod 0755 "$DIR" "$DIR/etc" "$DIR/log"
  chmod 0700 "$DIR/munge" "$DIR/state" "$DIR/run"
  chmod 0755 "$DIR/spool"

  # munge: its own key and socket; munged checks that only root can write the key's directories.
  [ -f "$DIR/munge/munge.key" ] || mungekey --create --keyfile="$DIR/munge/munge.key" 2>/dev/null \
    || die "mungekey failed"
  chmod 0400 "$DIR/munge/munge.key"
  # The socket's directory must be reachable by every user (clients of any uid authenticate there).
  mkdir -p "$DIR/munge/sock"; chmod 0755 "$DIR/munge" "$DIR/munge/sock"
  munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/sock/munged.socket" \
    --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" \
    >>"$DIR/log/munged.stderr" 2>&1 </dev/null || { dump_logs; die "munged did not start"; }

  local ctld_port slurmd_port
  ctld_port=$(free_port)
  slurmd_port=$(free_port)
  while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port=$(free_port); done
  local host
  host=$(hostname -s)
  : >"$DIR/etc/plugstack.conf"
  {
    echo "# Written by tests/slurm/cluster.sh"
    echo "ClusterName=pororoca-test"
    echo "SlurmctldHost=$host(127.0.0.1)"
    echo "SlurmctldPort=$ctld_port"
    echo "SlurmdPort=$slurmd_port"
    echo "SlurmUser=root"
    echo "SlurmdUser=root"
    echo "AuthType=auth/munge"
    echo "CredType=cred/munge"
    # cred_expire: also how long a requeued job waits before it may start again (default 120 s).
    echo "AuthInfo=socket=$DIR/munge/sock/munged.socket,cred_expire=30"
    echo "StateSaveLocation=$DIR/state"
    echo "SlurmdSpoolDir=$DIR/spool"
    echo "SlurmctldPidFile=$DIR/run/slurmctld.pid"
    echo "SlurmdPidFile=$DIR/run/slurmd.pid"
    echo "SlurmctldLogFile=$DIR/log/slurmctld.log"
    echo "SlurmdLogFile=$DIR/log/slurmd.log"
    echo "SlurmctldDebug=info"
    echo "SlurmdDebug=info"
    echo "PlugStackConfig=$DIR/etc/plugstack.conf"
    echo "ProctrackType=proctrack/linuxproc"
    echo "TaskPlugin=task/none"
    echo "JobAcctGatherType=jobacct_gather/none"
    echo "AccountingStorageType=accounting_storage/none"
    echo "JobCompType=jobcomp/none"
    echo "SwitchType=switch/none"
    echo "MpiDefault=none"
    echo "SchedulerType=sched/builtin"
    # The main scheduling loop every 5 s (default 60 s): a released job starts soon after it is
    # eligible again.
    echo "SchedulerParameters=sched_interval=5"
    echo "SelectType=select/cons_tres"
    echo "SelectTypeParameters=CR_CPU"
    echo "ReturnToService=2"
    # Two CPUs on any machine: two one-CPU jobs run (and stage) at once.
    echo "SlurmdParameters=config_overrides"
    echo "SlurmdTimeout=60"
    echo "InactiveLimit=0"
    echo "KillWait=5"
    echo "MinJobAge=300"
    if [ -n "$prolog" ]; then echo "Prolog=$prolog"; echo "PrologFlags=Alloc"; fi
    [ -z "$epilog" ] || echo "Epilog=$epilog"
    [ -z "$taskprolog" ] || echo "TaskProlog=$taskprolog"
    echo "NodeName=$NODE NodeHostname=$host NodeAddr=127.0.0.1 CPUs=2 RealMemory=64 State=UNKNOWN"
    echo "PartitionName=test Nodes=$NODE Default=YES MaxTime=INFINITE State=UP"
  } >"$CONF"
  chmod 0644 "$CONF"
  export SLURM_CONF=$CONF

  # Foreground daemons (-D) in sessions of their own; their pids are what stop kills.
  setsid slurmctld -D -i -f "$CONF" >>"$DIR/log/slurmctld.stderr" 2>&1 </dev/null &
  echo $! >"$DIR/run/slurmctld.launch.pid"
  setsid slurmd -D -N "$NODE" -f "$CONF" >>"$DIR/log/slurmd.stderr" 2>&1 </dev/null &
  echo $! >"$DIR/run/slurmd.launch.pid"

  local deadline=$((SECONDS + timeout)) state=""
  while [ $SECONDS -lt $deadline ]; do
    live_pid "$DIR/run/slurmctld.launch.pid" >/dev/null || { dump_logs; die "slurmctld exited"; }
    live_pid "$DIR/run/slurmd.launch.pid" >/dev/null || { dump_logs; die "slurmd exited"; }
    state=$(sinfo -h -n "$NODE" -o '%T' 2>/dev/null || true)
    if [ "$state" = "idle" ]; then
      if [ -n "${SLURM_TEST_OWNER_PID:-}" ]; then
        setsid bash "${BASH_SOURCE[0]}" watch "$DIR" "$SLURM_TEST_OWNER_PID" >>"$DIR/log/watch.log" 2>&1 </dev/null &
        echo $! >"$DIR/run/watch.pid"
      fi
      echo "SLURM_CONF=$CONF"
      return 0
    fi
    sleep 0.5
  done
  dump_logs
  die "node $NODE not idle after ${timeout}s (state: '${state:-no answer}')"
}

# Kills pid (TERM, then KILL after 10 s) and waits for it to go.
end_pid() {
  local p=$1
  kill -TERM "$p" 2>/dev/null || return 0
  for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
}

# Runs stop once process `owner` is gone (or stop ran: the pid file is removed).
watch() {
  local owner=$1
  while kill -0 "$owner" 2>/dev/null; do
    [ -f "$DIR/run/watch.pid" ] || return 0
    sleep 1
  done
  [ -f "$DIR/run/watch.pid" ] || return 0
  rm -f "$DIR/run/watch.pid"
  stop
}

stop() {
  [ -d "$DIR" ] || return 0
  # The watcher (if any) is not needed any more: it ends when its pid file goes.
  local w
  if w=$(live_pid "$DIR/run/watch.pid") && [ "$w" != "$$" ]; then rm -f "$DIR/run/watch.pid"; fi
  export SLURM_CONF=$CONF
  # Jobs first, so slurmd kills their processes and runs their epilogs (bounded).
  if live_pid "$DIR/run/slurmctld.launch.pid" >/dev/null && live_pid "$DIR/run/slurmd.launch.pid" >/dev/null; then
    scancel --full -p test 2>/dev/null || true
    for _ in $(seq 1 60); do
      [ -z "$(squeue -h -t RUNNING,COMPLETING,CONFIGURING -o %i 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
  local f p
  for f in slurmd slurmctld; do
    p=$(live_pid "$DIR/run/$f.launch.pid") && end_pid "$p"
  done
  # slurmstepd outlives slurmd: a step daemon of this cluster keeps this cluster's slurmd log
  # open. Kill those and the processes of their jobs (their children).
  local pid target
  for pid in $(pgrep -x slurmstepd 2>/dev/null || true); do
    for target in /proc/"$pid"/fd/*; do
      if [[ $(readlink "$target" 2>/dev/null) == "$DIR"/* ]]; then
        pkill -KILL -P "$pid" 2>/dev/null || true
        kill -KILL "$pid" 2>/dev/null || true
        break
      fi
    done
  done
  p=$(live_pid "$DIR/run/munged.pid") && end_pid "$p"
  rm -f "$DIR"/run/*.pid
}

case $cmd in
  start) start "${@:3}" ;;
  stop) stop ;;
  watch) watch "${3:?owner pid}" ;;
  *) die "unknown command '$cmd' (start|stop)" ;;
esac
