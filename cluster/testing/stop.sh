#!/usr/bin/env bash
# Stop the test cluster started by start.sh: cancel its jobs, then stop slurmd, slurmctld, slurmdbd, mariadbd and
# munged through their pid files (each is waited for until it is gone or a zombie; PID 1 reaps late).
#
#   cluster/testing/stop.sh [--purge]
#
# --purge also deletes the saved state, the logs and the accounting database (job ids restart at 1, and a kept
# database would then hold rows with colliding ids). Stopping what is not running is not an error.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=cluster/testing/common.sh
source "$HERE/common.sh"

PURGE=0
case ${1:-} in
    "") ;;
    --purge) PURGE=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (valid: --purge)" ;;
esac

ctld=$(pid_of_file "$RUN_DIR/slurmctld.pid")
node=$(pid_of_file "$RUN_DIR/slurmd.pid")
if alive "$ctld" && alive "$node" && timeout 5 scontrol ping >/dev/null 2>&1; then
    # Jobs first, so that no job step outlives its slurmd.
    if [[ -n $(squeue -h -t PD,R,CG,S -o %i 2>/dev/null) ]]; then
        log "cancelling the remaining jobs"
        scancel --full --state=PENDING 2>/dev/null || true
        scancel --full 2>/dev/null || true
        for _ in $(seq 100); do
            [[ -z $(squeue -h -t R,CG,S -o %i 2>/dev/null) ]] && break
            sleep 0.1
        done
    fi
fi
stop_pid slurmd "$node"
stop_pid slurmctld "$ctld"
stop_pid slurmdbd "$(pid_of_file "$RUN_DIR/slurmdbd.pid")"
stop_pid mariadbd "$(pid_of_file "$DB_DIR/mariadbd.pid")" 60
stop_pid munged "$(pid_of_file /run/munge/munged.pid)"
if ((PURGE)); then
    log "purging $BASE_DIR and the generated configuration"
    rm -rf "$BASE_DIR"
    for file in slurm.conf gres.conf slurmdbd.conf; do
        grep -qs "^$MARKER" "$CONF_DIR/$file" && rm -f "$CONF_DIR/$file"
    done
fi
log "stopped"
