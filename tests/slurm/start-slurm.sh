#!/usr/bin/env bash
# Start (or check) a single-node Slurm on this machine, for tests and local trials.
#
#   sudo tests/slurm/start-slurm.sh          # start munged, slurmctld, slurmd; wait for idle
#   sudo tests/slurm/start-slurm.sh --stop   # stop the daemons this script started
#
# Idempotent: daemons that already run are left alone (a changed slurm.conf restarts the
# Slurm daemons). Needs root and Debian's packages `munge slurmctld slurmd slurm-client`
# (.ci/slurm-setup installs them). The configuration is cgroup-free (proctrack/linuxproc,
# task/none), so it works in containers and VMs without a systemd or cgroup delegation.
# State, spool, logs and pid files live in $MPITRAIN_SLURM_DIR (default
# /tmp/mpitrain-slurm); the config goes to /etc/slurm/slurm.conf so that every client
# (sbatch, srun, squeue, ... and srun inside jobs) finds it without SLURM_CONF. An existing
# /etc/slurm/slurm.conf that this script did not write is never overwritten.
#
# MpiDefault=none like most sites: `srun --mpi=pmi2 ...` wires MPI up, a bare `srun` does
# not (each task then sees a world of 1, which mpitrain.runtime.launch.check_mpi_wiring reports).
#
# Exit status: 0 when the node is idle, 1 on failure (the log tails are printed), 3 when
# this machine cannot run it (not root, packages missing).
set -euo pipefail

DIR=${MPITRAIN_SLURM_DIR:-/tmp/mpitrain-slurm}
CONF=/etc/slurm/slurm.conf
MARKER="# written by mpitrain tests/slurm/start-slurm.sh"
PARTITION=${MPITRAIN_SLURM_PARTITION:-debug}
WAIT_SECONDS=${MPITRAIN_SLURM_WAIT:-60}

say() { printf 'start-slurm: %s\n' "$*" >&2; }
die() { say "$1"; exit "${2:-1}"; }

alive() {  # alive PIDFILE: the pid in the file names a running process
    [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

stop_pidfile() {  # stop_pidfile PIDFILE NAME: TERM, wait up to 10 s, then KILL
    local pidfile=$1 name=$2 pid
    alive "$pidfile" || { rm -f "$pidfile"; return 0; }
    pid=$(cat "$pidfile")
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

show_logs() {
    local f
    for f in "$DIR"/log/munged.log "$DIR"/log/slurmctld.log "$DIR"/log/slurmd.log; do
        [[ -f $f ]] || continue
        say "---- last lines of $f"
        tail -n 15 "$f" >&2 || true
    done
}

[[ $(id -u) -eq 0 ]] || die "must run as root (it starts munged, slurmctld and slurmd)" 3

if [[ ${1:-} == --stop ]]; then
    stop_pidfile "$DIR/run/slurmd.pid" slurmd
    stop_pidfile "$DIR/run/slurmctld.pid" slurmctld
    stop_pidfile "$DIR/run/munged.pid" munged
    exit 0
fi
[[ $# -eq 0 ]] || die "usage: $0 [--stop]" 3

missing=()
for cmd in munged munge slurmctld slurmd sinfo sbatch srun scontrol; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
((${#missing[@]} == 0)) || die "missing commands: ${missing[*]} (apt-get install munge slurmctld slurmd slurm-client)" 3

mkdir -p "$DIR"/{state,spool,log,run}
chmod 755 "$DIR"

# ---------------------------------------------------------------- munge (authentication)
[[ -s /etc/munge/munge.key ]] || {
    say "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --force
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
}
install -d -o munge -g munge -m 755 /run/munge
install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
touch "$DIR/log/munged.log" "$DIR/run/munged.pid"
chown munge:munge "$DIR/log/munged.log" "$DIR/run/munged.pid"
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    :  # a munged (ours or the system's) already answers
else
    say "starting munged"
    runuser -u munge -- munged --force --log-file="$DIR/log/munged.log" \
        --pid-file="$DIR/run/munged.pid" \
        || { show_logs; die "munged did not start"; }
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n | unmunge >/dev/null || { show_logs; die "munge does not answer"; }
fi

# ---------------------------------------------------------------- slurm.conf
node=$(hostname -s)
# `slurmd -C` prints this node's layout: "NodeName=vm CPUs=2 Boards=1 ... RealMemory=24105".
layout=$(slurmd -C | head -n 1 | sed -e 's/^NodeName=[^ ]* //')
[[ $layout == *CPUs=* ]] || die "slurmd -C printed no node layout: $layout"

conf_text=$(cat <<EOF
$MARKER; state in $DIR
ClusterName=mpitrain
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups: works in containers and VMs without cgroup delegation
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
# finished jobs stay visible to 'scontrol show job' for 10 minutes (there is no sacct)
MinJobAge=600
KillWait=10
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$node NodeAddr=127.0.0.1 $layout State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
)

mkdir -p /etc/slurm
if [[ -e $CONF ]] && ! grep -qF "$MARKER" "$CONF"; then
    die "$CONF exists and was not written by this script; not touching it" 3
fi
conf_changed=0
if [[ ! -e $CONF ]] || [[ $(cat "$CONF") != "$conf_text" ]]; then
    printf '%s\n' "$conf_text" >"$CONF.tmp"
    mv "$CONF.tmp" "$CONF"
    conf_changed=1
fi
# Debian's slurmd also reads cgroup.conf when a cgroup plugin is named; we name none.

if ((conf_changed)); then
    stop_pidfile "$DIR/run/slurmd.pid" slurmd
    stop_pidfile "$DIR/run/slurmctld.pid" slurmctld
fi

# ---------------------------------------------------------------- daemons
if ! alive "$DIR/run/slurmctld.pid"; then
    say "starting slurmctld"
    slurmctld -f "$CONF" || { show_logs; die "slurmctld did not start"; }
fi
if ! alive "$DIR/run/slurmd.pid"; then
    say "starting slurmd"
    slurmd -f "$CONF" || { show_logs; die "slurmd did not start"; }
fi

# ---------------------------------------------------------------- wait for an idle node
deadline=$((SECONDS + WAIT_SECONDS))
resumed=0
state=""
while ((SECONDS < deadline)); do
    state=$(sinfo -h -N -n "$node" -o '%t' 2>/dev/null | head -n 1 || true)
    case $state in
        idle | mix | alloc)
            if alive "$DIR/run/slurmctld.pid" && alive "$DIR/run/slurmd.pid"; then
                say "node $node is $state (partition $PARTITION)"
                exit 0
            fi
            ;;
        down* | drain* | drng* | fail*)
            if ((!resumed)); then
                say "node $node is $state; resuming it"
                scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true
                resumed=1
            fi
            ;;
    esac
    sleep 0.5
done
show_logs
die "node $node not idle after ${WAIT_SECONDS}s (state: ${state:-no answer from slurmctld})"
