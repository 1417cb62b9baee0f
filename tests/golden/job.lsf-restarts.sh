#!/bin/bash
#BSUB -J rayhpc-20260101-000000-abcd
#BSUB -n 2
#BSUB -R "span[ptile=1]"
#BSUB -W 1:00
#BSUB -o /lus/PROJ/shared/runs/20260101-000000-abcd/job.out
#BSUB -e /lus/PROJ/shared/runs/20260101-000000-abcd/job.out
#BSUB -wa TERM
#BSUB -wt 1
#BSUB -P PROJ
#BSUB -r

# Rendered by rayhpc for run 20260101-000000-abcd on site lsf (2 nodes).
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
echo "$(date +%s) ${LSB_JOBID:-}" > "$RAYHPC_RUN_DIR"/attempts/"$attempt"/started
echo "rayhpc: attempt $attempt of 3 (job ${LSB_JOBID:-})"
if [ "$attempt" -gt 3 ]; then
  echo 'rayhpc: the job started again after the run'"'"'s last attempt (--restarts 2): the run ends here' | tee "$RAYHPC_RUN_DIR/error" >&2
  echo 1 > "$RAYHPC_RUN_DIR/exit_code"
  exit 1
fi
export RAYHPC_RANK_VARS=RAYHPC_HOST_INDEX
# Where the head's agent listens (rank 0's host): workers reach it over the network,
# not by polling the shared file system.
export RAYHPC_HEAD_HOST="$(echo "$LSB_MCPU_HOSTS" | awk '{for (i = 1; i < NF; i += 2) print $i}' | head -n 1)"
if ! command -v apptainer >/dev/null 2>&1; then
  echo 'rayhpc: site lsf: apptainer is not on PATH after the site setup (the site setup loads no module); fix `setup` in the site file' | tee "$RAYHPC_RUN_DIR/error" >&2
  echo 1 > "$RAYHPC_RUN_DIR/exit_code"
  exit 1
fi
cd /lus/PROJ/shared

# One node agent per node, in the container; rank 0 becomes the Ray head.
(
  RAYHPC_HOST_INDEX=0
  for host in $(echo "$LSB_MCPU_HOSTS" | awk '{for (i = 1; i < NF; i += 2) print $i}'); do
    blaunch "$host" env PATH="${PATH}" RAYHPC_RUN_DIR="${RAYHPC_RUN_DIR}" RAYHPC_RANK_VARS="${RAYHPC_RANK_VARS}" RAYHPC_HEAD_HOST="${RAYHPC_HEAD_HOST}" RAYHPC_HOST_INDEX="${RAYHPC_HOST_INDEX}" apptainer exec --no-home --bind /lus/PROJ/shared --pwd /lus/PROJ/shared /gpfs/PROJ/ray.sif python /lus/PROJ/shared/runs/20260101-000000-abcd/node_agent.pyz --run-dir /lus/PROJ/shared/runs/20260101-000000-abcd &
    RAYHPC_HOST_INDEX=$((RAYHPC_HOST_INDEX + 1))
  done
  wait
) &
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
    brequeue "$LSB_JOBID"
  }; then
    echo "rayhpc: the job could not be put back in the queue: the run ends here" >&2
    rm -f "$RAYHPC_RUN_DIR/restarting"
  fi
fi
exit "$code"
