#!/bin/bash
#SBATCH --job-name=rayhpc-20260101-000000-abcd
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --time=01:00:00
#SBATCH --output=/lus/PROJ/shared/runs/20260101-000000-abcd/job.out
#SBATCH --signal=B:TERM@60
#SBATCH --exclusive
#SBATCH --mem=0
#SBATCH --account=PROJ
#SBATCH --requeue
#SBATCH --open-mode=append

# Rendered by rayhpc for run 20260101-000000-abcd on site slurm (2 nodes).
# Do not edit: `rayhpc launch` writes it anew; `--dry-run` prints it.
set -u
export RAYHPC_RUN_DIR=/lus/PROJ/shared/runs/20260101-000000-abcd
# --restarts 2: when the allocation ends before the driver (walltime, preemption, a node lost),
# the run starts again: this job is requeued. Each attempt claims attempts/<n>/, and the files of
# the attempt before it move there (rayhpc's contract.attempts).
mkdir -p "$RAYHPC_RUN_DIR"/attempts
attempt=1
while [ -e "$RAYHPC_RUN_DIR"/attempts/"$attempt" ]; do attempt=$((attempt + 1)); done
mkdir "$RAYHPC_RUN_DIR"/attempts/"$attempt"
if [ "$attempt" -gt 1 ]; then
  for name in head.json status.json driver.log connect.txt timing.json timeline.svg error exit_code stop restarting nodes.json nodes logs; do
    if [ -e "$RAYHPC_RUN_DIR"/"$name" ] || [ -L "$RAYHPC_RUN_DIR"/"$name" ]; then
      mv -f "$RAYHPC_RUN_DIR"/"$name" "$RAYHPC_RUN_DIR"/attempts/"$((attempt - 1))"/
    fi
  done
  mkdir -p "$RAYHPC_RUN_DIR"/nodes "$RAYHPC_RUN_DIR"/logs
fi
echo "$(date +%s) ${SLURM_JOB_ID:-}" > "$RAYHPC_RUN_DIR"/attempts/"$attempt"/started
echo "rayhpc: attempt $attempt of 3 (job ${SLURM_JOB_ID:-})"
if [ "$attempt" -gt 3 ]; then
  echo 'rayhpc: the job started again after the run'"'"'s last attempt (--restarts 2): the run ends here' | tee "$RAYHPC_RUN_DIR/error" >&2
  echo 1 > "$RAYHPC_RUN_DIR/exit_code"
  exit 1
fi
if [ "$attempt" -eq 3 ]; then
  # The last attempt: the scheduler must not run the job again by itself.
  scontrol update JobId="$SLURM_JOB_ID" Requeue=0 || true
fi
export RAYHPC_RANK_VARS=SLURM_PROCID
# Where the head's agent listens (rank 0's host): workers reach it over the network,
# not by polling the shared file system.
export RAYHPC_HEAD_HOST="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
if ! command -v apptainer >/dev/null 2>&1; then
  echo 'rayhpc: site slurm: apptainer is not on PATH after the site setup (the site setup loads no module); fix `setup` in the site file' | tee "$RAYHPC_RUN_DIR/error" >&2
  echo 1 > "$RAYHPC_RUN_DIR/exit_code"
  exit 1
fi
cd /lus/PROJ/shared
# srun gives each task one CPU unless told: since Slurm 22.05 it does not inherit
# --cpus-per-task (Slurm 22.05 release notes: srun no longer reads
# SLURM_CPUS_PER_TASK). Every CPU the allocation has on
# its smallest node: SLURM_JOB_CPUS_PER_NODE is CPU_count[(xnodes)][,...], e.g.
# 72(x2),36 (sbatch(1) OUTPUT ENVIRONMENT).
cpus=$(echo "${SLURM_JOB_CPUS_PER_NODE:-1}" | tr ',' '\n' | sed 's/(.*//' | sort -n | head -n 1)

# One node agent per node, in the container; rank 0 becomes the Ray head.
srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --cpus-per-task="$cpus" --cpu-bind=none --kill-on-bad-exit=0 apptainer exec --no-home --bind /lus/PROJ/shared --pwd /lus/PROJ/shared /lus/PROJ/ray.sif python /lus/PROJ/shared/runs/20260101-000000-abcd/node_agent.pyz --run-dir /lus/PROJ/shared/runs/20260101-000000-abcd &
step=$!
# The walltime warning comes here. Tell the agents through the run directory (srun
# would kill its tasks on SIGTERM, not pass it on): they stop the driver and Ray on
# every node and keep the logs.
# (set -C: the stop file is made once, by whoever asks first.)
trap '(set -C; echo job script: walltime or cancel > "$RAYHPC_RUN_DIR/stop") 2>/dev/null' TERM INT
wait "$step"
wait "$step" 2>/dev/null  # a trapped signal ends the first wait early
code=$(cat "$RAYHPC_RUN_DIR/exit_code" 2>/dev/null || echo 1)
# The run goes on (the head wrote `restarting`, before exit_code): back in the queue.
if [ -e "$RAYHPC_RUN_DIR/restarting" ]; then
  echo "rayhpc: $(head -n 1 "$RAYHPC_RUN_DIR/restarting")"
  if ! {
    scontrol requeue "$SLURM_JOB_ID"
  }; then
    echo "rayhpc: the job could not be put back in the queue: the run ends here" >&2
    rm -f "$RAYHPC_RUN_DIR/restarting"
  fi
fi
exit "$code"
