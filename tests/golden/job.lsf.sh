#!/bin/bash
#BSUB -J rayhpc-20260101-000000-abcd
#BSUB -n 4
#BSUB -R "span[ptile=1]"
#BSUB -W 0:30
#BSUB -o /lus/proj/shared/runs/20260101-000000-abcd/job.out
#BSUB -e /lus/proj/shared/runs/20260101-000000-abcd/job.out
#BSUB -wa TERM
#BSUB -wt 1
#BSUB -P PROJ

# Rendered by rayhpc for run 20260101-000000-abcd on site lsf (4 nodes).
# Do not edit: `rayhpc launch` writes it anew; `--dry-run` prints it.
set -u
export RAYHPC_RUN_DIR=/lus/proj/shared/runs/20260101-000000-abcd
export RAYHPC_RANK_VARS=RAYHPC_HOST_INDEX
# Where the head's agent listens (rank 0's host): workers reach it over the network,
# not by polling the shared file system.
export RAYHPC_HEAD_HOST="$(echo "$LSB_MCPU_HOSTS" | awk '{for (i = 1; i < NF; i += 2) print $i}' | head -n 1)"
if ! command -v apptainer >/dev/null 2>&1; then
  echo 'rayhpc: site lsf: apptainer is not on PATH after the site setup (the site setup loads no module); fix `setup` in the site file' | tee "$RAYHPC_RUN_DIR/error" >&2
  echo 1 > "$RAYHPC_RUN_DIR/exit_code"
  exit 1
fi
cd /lus/proj/shared

# One node agent per node, in the container; rank 0 becomes the Ray head.
(
  RAYHPC_HOST_INDEX=0
  for host in $(echo "$LSB_MCPU_HOSTS" | awk '{for (i = 1; i < NF; i += 2) print $i}'); do
    blaunch "$host" env PATH="${PATH}" RAYHPC_RUN_DIR="${RAYHPC_RUN_DIR}" RAYHPC_RANK_VARS="${RAYHPC_RANK_VARS}" RAYHPC_HEAD_HOST="${RAYHPC_HEAD_HOST}" RAYHPC_HOST_INDEX="${RAYHPC_HOST_INDEX}" apptainer exec --no-home --bind /lus/proj/shared --pwd /lus/proj/shared /lus/proj/ray.sif python /lus/proj/shared/runs/20260101-000000-abcd/node_agent.pyz --run-dir /lus/proj/shared/runs/20260101-000000-abcd &
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
exit "$code"
