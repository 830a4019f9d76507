#!/bin/bash
# The host side of one lsbench array task (started by the batch script that `sweep submit` writes).
#
#   exec /bin/bash lsbench-job.sh WORKER_COMMAND...
#
# WORKER_COMMAND is the container command up to and including `python -m lsbench worker --sweep-dir DIR
# --backend slurm`; this script appends `--index I --job-id J` for each unit of its task (`--index I+J+K` for runs
# trained together as one fused model, resources.runs_per_worker). It
#
#  1. reads its line of the task table ($LSBENCH_TASKS, "TASK INDEX:RUN_ID ...") for $SLURM_ARRAY_TASK_ID: the
#     array indices are re-based to 0 per array, the table holds the sweep's plan indices;
#  2. optionally stages $LSBENCH_DATA_DIR to node-local scratch (once per node, under a lock) and makes the data
#     visible in the container at the same path ($APPTAINER_BIND, $APPTAINERENV_LSBENCH_DATA);
#  3. starts one worker per unit (a run, or a fused group): with placement "gpu" directly (the task holds exactly the
#     unit's GPUs), with placement "node" as one `srun --exact` step per slot, so every worker gets its own GPU(s)
#     and CPUs; each worker's output is appended to its (first) run's log, logs/<run_id>.log;
#  4. forwards SIGUSR2 (sent by Slurm before the time limit, --signal=B:USR2@T, or at preemption), SIGTERM and
#     SIGINT to the workers, which checkpoint and exit with code 4 ("interrupted");
#  5. after a USR2, requeues its own array element from the host -- `scontrol requeue JOB_TASK` (scontrol does
#     not exist inside containers) -- unless it has been restarted $LSBENCH_MAX_REQUEUES times already; the
#     requeued element starts over and the workers resume from their checkpoints. After SIGTERM (scancel, an
#     outside requeue, the time limit itself) Slurm decides what happens next and this script only waits.
#
# Exit status: 0 when every worker finished (completed, diverged, already done) or was interrupted, 1 when a
# worker failed. Settings come from the environment the batch script exports (LSBENCH_*).
set -uo pipefail

: "${LSBENCH_SWEEP_DIR:?}" "${LSBENCH_TASKS:?}" "${SLURM_ARRAY_TASK_ID:?}" "${SLURM_ARRAY_JOB_ID:?}"
PLACEMENT=${LSBENCH_PLACEMENT:-gpu}
MAX_REQUEUES=${LSBENCH_MAX_REQUEUES:-3}
RESTARTS=${SLURM_RESTART_COUNT:-0}
JOB="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
EXIT_INTERRUPTED=4

log() { printf '%s lsbench-job %s: %s\n' "$(date '+%F %T')" "$JOB" "$*"; }

(($# > 0)) || { log "no worker command given"; exit 2; }

# Signals are trapped first: Slurm may send USR2 at any moment, also while the data is being staged.
STOP_SIGNAL=""
PIDS=()
forward() {
    STOP_SIGNAL=$1
    log "got SIG$1; forwarding it to the workers (${PIDS[*]})"
    local pid
    for pid in "${PIDS[@]}"; do
        kill -s "$1" "$pid" 2>/dev/null || true
    done
}
trap 'forward USR2' USR2
trap 'forward TERM' TERM
trap 'forward INT' INT

# -- 1. this task's runs -------------------------------------------------------------------------------------
read -r -a RUNS < <(awk -v task="$SLURM_ARRAY_TASK_ID" '$1 == task { $1 = ""; print; exit }' "$LSBENCH_TASKS")
((${#RUNS[@]} > 0)) || { log "task $SLURM_ARRAY_TASK_ID is not in $LSBENCH_TASKS"; exit 2; }
log "restart $RESTARTS on $(hostname -s); runs ${RUNS[*]}; CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-}"

# -- 2. data ---------------------------------------------------------------------------------------------------
scratch_dir() {
    local scratch=${LSBENCH_SCRATCH:-\$TMPDIR}
    if [[ $scratch == \$* ]]; then
        local name=${scratch#\$}
        scratch=${!name:-/tmp}
    fi
    printf '%s\n' "$scratch"
}

if [[ -n ${LSBENCH_DATA_DIR:-} ]]; then
    data=$LSBENCH_DATA_DIR
    if [[ ${LSBENCH_STAGE_DATA:-0} == 1 ]]; then
        target="$(scratch_dir)/lsbench-data-$(id -u)"
        mkdir -p "$target"
        # One copy per node: the first task copies, the others wait on the lock and find it complete.
        if ! (
            flock 9
            if [[ ! -e $target/.lsbench-staged || $LSBENCH_DATA_DIR -nt $target/.lsbench-staged ]]; then
                log "staging $LSBENCH_DATA_DIR to $target"
                rm -f "$target/.lsbench-staged"
                cp -a "$LSBENCH_DATA_DIR/." "$target/" && touch "$target/.lsbench-staged"
            fi
        ) 9>"$target.lock"; then
            log "staging failed; the workers read $LSBENCH_DATA_DIR directly"
        else
            data=$target
        fi
    fi
    prefix=${LSBENCH_CONTAINER_ENV_PREFIX:-APPTAINER}
    bind_var="${prefix}_BIND"
    export "${bind_var}=${!bind_var:+${!bind_var},}$data:$data:ro"
    export "${prefix}ENV_LSBENCH_DATA=$data"
    export LSBENCH_DATA=$data
fi

# -- 3. workers ------------------------------------------------------------------------------------------------
export PYTHONNOUSERSITE=1
export OMP_NUM_THREADS=${LSBENCH_THREADS_PER_RUN:-1} MKL_NUM_THREADS=${LSBENCH_THREADS_PER_RUN:-1}

mkdir -p "$LSBENCH_SWEEP_DIR/logs"
for entry in "${RUNS[@]}"; do
    index=${entry%%:*} # "I", or "I+J+K" for runs trained together as one fused model
    run_id=${entry#*:}
    run_log="$LSBENCH_SWEEP_DIR/logs/${run_id%%+*}.log" # a fused group's worker writes each run's lines itself
    if [[ $PLACEMENT == node ]]; then
        srun --exact --ntasks=1 --nodes=1 --gres="gpu:${LSBENCH_GPUS_PER_RUN:-1}" \
            --cpus-per-task="${LSBENCH_CPUS_PER_RUN:-1}" --mem="${LSBENCH_MEMORY_PER_RUN:-1G}" \
            --job-name="lsbench-$run_id" --output="$run_log" --open-mode=append --kill-on-bad-exit=0 \
            "$@" --index "$index" --job-id "$JOB" </dev/null &
    else
        "$@" --index "$index" --job-id "$JOB" </dev/null >>"$run_log" 2>&1 &
    fi
    PIDS+=($!)
    log "run $run_id (index $index): worker $!"
done
[[ -n $STOP_SIGNAL ]] && forward "$STOP_SIGNAL" # a signal that came while the workers were starting

# -- 4. wait: `wait` returns early when a trapped signal arrives, so wait again until each worker is gone --------
running() { [[ -e /proc/$1 ]] && [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]; }
interrupted=0 failed=0
for k in "${!PIDS[@]}"; do
    pid=${PIDS[k]}
    while running "$pid"; do wait "$pid"; done
    wait "$pid"
    code=$?
    entry=${RUNS[k]}
    case $code in
        0 | 3 | 5) ;; # completed or already finished, diverged, or another worker trains the run
        "$EXIT_INTERRUPTED" | 140 | 143 | 130) interrupted=$((interrupted + 1)) ;; # checkpointed, or killed by USR2/TERM/INT before it could
        *)
            failed=$((failed + 1))
            IFS=+ read -r -a unit_runs <<<"${entry#*:}"
            for run_id in "${unit_runs[@]}"; do
                printf '%s lsbench-job %s: the worker exited with status %s\n' "$(date '+%F %T')" "$JOB" "$code" \
                    >>"$LSBENCH_SWEEP_DIR/logs/$run_id.log"
            done
            ;;
    esac
    log "run ${entry#*:}: worker exited with status $code"
done

# -- 5. requeue --------------------------------------------------------------------------------------------------
if ((interrupted > 0)) && [[ $STOP_SIGNAL == USR2 ]]; then
    if ((RESTARTS < MAX_REQUEUES)); then
        log "requeueing $JOB (restart $((RESTARTS + 1)) of at most $MAX_REQUEUES)"
        if scontrol requeue "$JOB"; then
            exit 0
        fi
        log "scontrol requeue failed; \`sweep resubmit --failed\` continues the interrupted runs"
    else
        log "$JOB was restarted $RESTARTS times (the limit); \`sweep resubmit --failed\` continues its runs"
    fi
fi
((failed == 0)) || exit 1
exit 0
