#!/usr/bin/env bash
# Cluster test: runs the main job (results/patching/cross_experiment_summary.csv) from
# scratch through profiles/slurm on a single-node SLURM cluster that it starts on this
# host, then checks that every non-local job went through SLURM.
#
#   bash tests/cluster/run_cluster_test.sh
#
# Needs root (it installs slurm-wlm and munge with apt-get when missing, writes
# /etc/slurm/slurm.conf and gres.conf, and runs munged, slurmctld and slurmd as root).
# Prints "SKIP: ..." and exits 0 where that is impossible (not root, no apt, packages not
# installable, a SLURM daemon already running here). Exits non-zero on any failure.
# Everything it starts is stopped by PID on exit, failure included; files it replaced in
# /etc/slurm are restored.
#
# Environment: SNAKEMAKE (default <repo>/.venv/bin/snakemake), CLUSTER_TEST_TIMEOUT
# (seconds for the workflow, default 1200), CLUSTER_TEST_KEEP=1 keeps the temporary
# directories, CLUSTER_TEST_SNAKEMAKE_ARGS (extra arguments for snakemake, e.g. a
# --config override).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV_BIN="$REPO/.venv/bin"
SNAKEMAKE="${SNAKEMAKE:-$VENV_BIN/snakemake}"
TIMEOUT="${CLUSTER_TEST_TIMEOUT:-1200}"
TARGET="results/patching/cross_experiment_summary.csv"
PARTITION="ipdtest"
T0=$(date +%s)

log() { echo "[cluster-test +$(($(date +%s) - T0))s] $*"; }
skip() { echo "SKIP: $*"; exit 0; }
fail() { echo "FAIL: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || skip "needs root (installs slurm-wlm/munge and runs the SLURM daemons)"
[ -x "$SNAKEMAKE" ] || fail "snakemake not found at $SNAKEMAKE (create the venv first)"
"$VENV_BIN/python" -c "import snakemake_executor_plugin_slurm" 2>/dev/null ||
    fail "snakemake-executor-plugin-slurm is not installed in $REPO/.venv (pip install -e '.[slurm]')"

# --- packages ---------------------------------------------------------------------
export PATH="$VENV_BIN:$PATH:/usr/sbin:/sbin"
need_pkgs=0
for cmd in slurmctld slurmd sbatch squeue sinfo munged munge; do
    command -v "$cmd" >/dev/null 2>&1 || need_pkgs=1
done
if [ "$need_pkgs" -eq 1 ]; then
    command -v apt-get >/dev/null 2>&1 || skip "slurm-wlm/munge missing and no apt-get to install them"
    log "installing slurm-wlm and munge with apt-get"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends slurm-wlm munge; } >/tmp/cluster-test-apt.log 2>&1; then
        tail -5 /tmp/cluster-test-apt.log
        skip "apt-get could not install slurm-wlm and munge (log: /tmp/cluster-test-apt.log)"
    fi
fi
for cmd in slurmctld slurmd sbatch squeue sinfo munged munge unmunge; do
    command -v "$cmd" >/dev/null 2>&1 || skip "command $cmd still missing after installing slurm-wlm and munge"
done
if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
    skip "a slurmctld or slurmd already runs on this host; not touching that cluster"
fi

# --- cleanup (trap) ---------------------------------------------------------------
TMP="$(mktemp -d /tmp/ipd-slurm.XXXXXX)"
WD="$(mktemp -d /tmp/ipd-cluster-wd.XXXXXX)"
STARTED_PIDS=()
RESTORE=()

cleanup() {
    local rc=$?
    set +e
    if [ "$rc" -ne 0 ]; then
        echo "---- slurmctld log (tail) ----" >&2
        tail -n 30 "$TMP/slurmctld.log" >&2 2>/dev/null
        echo "---- slurmd log (tail) ----" >&2
        tail -n 30 "$TMP/slurmd.log" >&2 2>/dev/null
    fi
    # Cancel whatever of this cluster's jobs is left, then stop the daemons we started,
    # newest first (slurmd, slurmctld, munged), by PID.
    if [ "${#STARTED_PIDS[@]}" -gt 0 ]; then
        scancel --quiet --partition="$PARTITION" 2>/dev/null
        for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
            kill "${STARTED_PIDS[i]}" 2>/dev/null
        done
        for pid in "${STARTED_PIDS[@]}"; do
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
        done
    fi
    for f in "${RESTORE[@]}"; do
        if [ -e "$TMP/etc-backup/$(basename "$f")" ]; then
            cp -p "$TMP/etc-backup/$(basename "$f")" "$f"
        else
            rm -f "$f"
        fi
    done
    if [ "${CLUSTER_TEST_KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
        echo "kept: $TMP (cluster state, logs) and $WD (workflow directory)" >&2
    else
        rm -rf "$TMP" "$WD"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- configuration -----------------------------------------------------------------
HOST="$(hostname -s)"
CPUS="$(nproc)"
MEM_MB="$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)"
mkdir -p "$TMP/state" "$TMP/spool" "$TMP/etc-backup" /etc/slurm
for f in /etc/slurm/slurm.conf /etc/slurm/gres.conf; do
    [ -e "$f" ] && cp -p "$f" "$TMP/etc-backup/"
    RESTORE+=("$f")
done

# The job step (snakemake-executor-plugin-slurm-jobstep) drops SLURM_CONF from the
# environment of its nested srun, so the configuration must be at the default path.
cat >/etc/slurm/slurm.conf <<EOF
# Written by tests/cluster/run_cluster_test.sh (restored/removed when it exits).
ClusterName=ipdtest
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
ReturnToService=2
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# squeue reports finished jobs for MinJobAge seconds: the executor plugin's squeue
# status command needs it well above its status check interval.
MinJobAge=3600
StateSaveLocation=$TMP/state
SlurmdSpoolDir=$TMP/spool
SlurmctldPidFile=$TMP/slurmctld.pid
SlurmdPidFile=$TMP/slurmd.pid
SlurmctldLogFile=$TMP/slurmctld.log
SlurmdLogFile=$TMP/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
# A fake GPU, so that jobs that request one (sbatch --gpus=1) can be scheduled.
cat >/etc/slurm/gres.conf <<EOF
NodeName=$HOST Name=gpu File=/dev/null
EOF

# --- daemons -----------------------------------------------------------------------
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "using the munged that already runs"
else
    mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null ||
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        chmod 400 /etc/munge/munge.key
    fi
    munged -F --force >"$TMP/munged.out" 2>&1 &
    STARTED_PIDS+=($!)
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
    munge -n | unmunge >/dev/null || fail "munged did not start (see $TMP/munged.out)"
    log "munged started (pid ${STARTED_PIDS[-1]})"
fi
slurmctld -D -i >"$TMP/slurmctld.out" 2>&1 &
STARTED_PIDS+=($!)
slurmd -D >"$TMP/slurmd.out" 2>&1 &
STARTED_PIDS+=($!)
state=""
for _ in $(seq 120); do
    state="$(sinfo -h -N -n "$HOST" -o '%T' 2>/dev/null | head -1)"
    [ "$state" = idle ] && break
    sleep 0.5
done
if [ "$state" != idle ]; then
    cat "$TMP/slurmctld.out" "$TMP/slurmd.out" >&2
    fail "node $HOST did not become idle (state: '${state:-no answer}')"
fi
log "SLURM up: node $HOST idle, $CPUS CPUs, ${MEM_MB} MB, 1 fake GPU, partition $PARTITION"
# Smoke test of the GPU request path (sbatch/srun --gpus) before the workflow.
timeout 60 srun --gpus=1 -n1 true || fail "srun --gpus=1 true failed"

# --- workflow ----------------------------------------------------------------------
cp "$REPO/config.yaml" "$WD/config.yaml"
cd "$WD"
# Test-only overrides (the profile is used otherwise unchanged):
#  - squeue as status command: this cluster has no accounting, so sacct does not work;
#  - shorter status check interval (the jobs here take seconds, not minutes);
#  - keep the SLURM logs of successful jobs, to count them below;
#  - cache_activations requests the (fake) GPU, as it does with analysis.device: cuda,
#    so that the GPU request path (sbatch --gpus=1, then srun --gpus=1 in the job) runs;
#  - unless CLUSTER_TEST_FULL=1: two patch scenarios instead of five (28 jobs instead of
#    52: the whole DAG shape, in about half the time), and the embedded family trained
#    briefly (30 pre-training steps instead of 300, 5 RL steps instead of 60: the same jobs
#    through SLURM, about 2 minutes sooner; this test checks the scheduling, and the family's
#    behaviour is the slow tier's business; CLUSTER_TEST_FULL=1 trains it in full).
# Partition (the cluster's default one) and account (none) come from the cluster.
SM_ARGS=(-s "$REPO/Snakefile" --directory "$WD" --profile "$REPO/profiles/slurm"
    --slurm-status-command squeue
    --slurm-init-seconds-before-status-checks 2
    --seconds-between-status-checks 2
    --slurm-keep-successful-logs
    --set-resources cache_activations:gpu=1)
CONFIG_ARGS=()
if [ "${CLUSTER_TEST_FULL:-0}" != 1 ]; then
    CONFIG_ARGS=(--config "analysis={patch_scenarios: [CC_continue, CD_punished]}"
        "embedded={pretrain_steps: 30, rl_steps: 5}")
fi
eval "EXTRA=(${CLUSTER_TEST_SNAKEMAKE_ARGS:-})"
EXTRA=("${CONFIG_ARGS[@]}" "${EXTRA[@]}")

"$SNAKEMAKE" "$TARGET" "${SM_ARGS[@]}" --dry-run "${EXTRA[@]}" >"$TMP/dryrun_full.txt" 2>&1 ||
    { cat "$TMP/dryrun_full.txt" >&2; fail "dry run failed"; }
# The slurm executor's dry run prints local jobs as "rule" too: take the workflow's own
# `localrules:` declarations to tell them apart.
LOCAL_RULES=$(sed -n '/^localrules:/,/^$/p' "$REPO"/Snakefile "$REPO"/workflow/rules/*.smk |
    grep -oE '^[[:space:]]+[A-Za-z_][A-Za-z0-9_]*' | awk '{print $1}' | tr '\n' ' ')
n_jobs=$(grep -cE '^(local)?rule ' "$TMP/dryrun_full.txt" || true)
n_local=0
for rule in $(grep -oE '^(local)?rule [A-Za-z0-9_]+' "$TMP/dryrun_full.txt" | awk '{print $2}'); do
    case " $LOCAL_RULES " in *" $rule "*) n_local=$((n_local + 1)) ;; esac
done
n_remote=$((n_jobs - n_local))
log "dry run: $n_remote jobs for SLURM, $n_local local jobs; running the workflow (timeout ${TIMEOUT}s)"

t_wf=$(date +%s)
set +e
timeout "$TIMEOUT" "$SNAKEMAKE" "$TARGET" "${SM_ARGS[@]}" "${EXTRA[@]}" >"$TMP/snakemake.out" 2>&1
rc=$?
set -e
wf_s=$(($(date +%s) - t_wf))
if [ "$rc" -ne 0 ]; then
    tail -n 60 "$TMP/snakemake.out" >&2
    [ "$rc" -eq 124 ] && fail "workflow timed out after ${TIMEOUT}s"
    fail "workflow failed (exit $rc)"
fi
log "workflow done in ${wf_s}s"

# --- checks ------------------------------------------------------------------------
[ -s "$WD/$TARGET" ] || fail "$TARGET missing or empty"
# SLURM job ids that snakemake reported at submission, ...
grep -o 'submitted with SLURM jobid [0-9]*' "$TMP/snakemake.out" | awk '{print $NF}' | sort -un >"$TMP/submitted_ids"
n_submitted=$(wc -l <"$TMP/submitted_ids")
# ... the plugin's per-job logs (.snakemake/slurm_logs/rule_<rule>/<wildcards>/<id>.log), ...
find "$WD/.snakemake/slurm_logs" -name '*.log' -printf '%f\n' 2>/dev/null | sed 's/\.log$//' | sort -un >"$TMP/log_ids"
n_logs=$(wc -l <"$TMP/log_ids")
# ... and what slurmctld knows (finished jobs stay visible for MinJobAge): job name =
# the run's uuid, state COMPLETED.
run_id="$(grep -o 'SLURM run ID: [0-9a-f-]*' "$TMP/snakemake.out" | head -1 | awk '{print $NF}')"
[ -n "$run_id" ] || fail "no 'SLURM run ID' in the snakemake output: did it use the slurm executor?"
squeue --states=all -h -n "$run_id" -O 'JobID:12,State:14,tres-per-job:30,Comment:300' | sort -n >"$TMP/squeue_jobs"
n_gpu_jobs=$(awk '$3 ~ /gpu/' "$TMP/squeue_jobs" | wc -l)
n_cache=$(grep -c '^rule cache_activations:' "$TMP/dryrun_full.txt" || true)
n_completed=$(awk '$2 == "COMPLETED"' "$TMP/squeue_jobs" | wc -l)
n_failed=$(awk '$2 != "COMPLETED"' "$TMP/squeue_jobs" | wc -l)
log "SLURM jobs: $n_submitted submitted, $n_logs job logs, $n_completed COMPLETED and $n_failed other in squeue (expected $n_remote), $n_gpu_jobs with a GPU (expected $n_cache)"

[ "$n_submitted" -gt 0 ] || fail "no job was submitted to SLURM"
[ "$n_submitted" -ge "$n_remote" ] || fail "$n_submitted SLURM jobs for $n_remote non-local jobs"
[ "$n_completed" -ge "$n_remote" ] || fail "only $n_completed COMPLETED SLURM jobs for $n_remote non-local jobs"
[ "$n_gpu_jobs" -eq "$n_cache" ] || fail "$n_gpu_jobs SLURM jobs requested a GPU, expected one per cache_activations job ($n_cache)"
awk '$3 ~ /gpu/ && $4 !~ /^rule_cache_activations/ {bad = 1} END {exit bad}' "$TMP/squeue_jobs" ||
    fail "a job other than cache_activations requested a GPU (see $TMP/squeue_jobs)"
cmp -s "$TMP/submitted_ids" "$TMP/log_ids" || fail "SLURM job ids in the snakemake output and in .snakemake/slurm_logs differ"
# Each job ran the venv's snakemake on the node (the job log shows its command line).
while read -r f; do
    grep -q "Command: $REPO/.venv/" "$f" || fail "SLURM job log $f: the job did not run $REPO/.venv's snakemake"
done < <(find "$WD/.snakemake/slurm_logs" -name '*.log')
# Nothing is left to do (by modification times: the code and params triggers are the
# workflow tests' business, and the library may change under a long test).
"$SNAKEMAKE" "$TARGET" -s "$REPO/Snakefile" --directory "$WD" --dry-run --rerun-triggers mtime "${EXTRA[@]}" >"$TMP/after.txt" 2>&1 ||
    { cat "$TMP/after.txt" >&2; fail "dry run after the workflow failed"; }
grep -q "Nothing to be done" "$TMP/after.txt" || { cat "$TMP/after.txt" >&2; fail "jobs left after the cluster run"; }

log "PASS: $TARGET built through SLURM ($n_submitted jobs) in ${wf_s}s; total $(($(date +%s) - T0))s"
