#!/bin/bash
#PBS -N rayhpc-20260101
#PBS -l select=4
#PBS -l place=scatter:excl
#PBS -l walltime=00:30:00
#PBS -o /lus/proj/shared/runs/20260101-000000-abcd/job.out
#PBS -j oe
#PBS -A PROJ

# Rendered by rayhpc for run 20260101-000000-abcd on site pbs (4 nodes).
# Do not edit: `rayhpc launch` writes it anew; `--dry-run` prints it.
set -u
export RAYHPC_RUN_DIR=/lus/proj/shared/runs/20260101-000000-abcd
# No signal comes from pbs before its walltime kill: this timer asks the agents to stop
# 60 s before the walltime (00:30:00, counted from the script's start),
# as a Slurm job's --signal would.
(
  sleep 1740 & sleeper=$!
  trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
  wait "$sleeper" && (set -C; echo "job script: walltime in 60 s" > "$RAYHPC_RUN_DIR/stop") 2>/dev/null
) &
timer=$!
trap 'kill "$timer" 2>/dev/null' EXIT  # the timer ends with the script
export RAYHPC_RANK_VARS=PBS_NODENUM
# Where the head's agent listens (rank 0's host): workers reach it over the network,
# not by polling the shared file system.
export RAYHPC_HEAD_HOST="$(head -n 1 "$PBS_NODEFILE")"
if ! command -v apptainer >/dev/null 2>&1; then
  echo 'rayhpc: site pbs: apptainer is not on PATH after the site setup (the site setup loads no module); fix `setup` in the site file' | tee "$RAYHPC_RUN_DIR/error" >&2
  echo 1 > "$RAYHPC_RUN_DIR/exit_code"
  exit 1
fi
cd /lus/proj/shared

# One node agent per node, in the container; rank 0 becomes the Ray head.
pbsdsh -v -- env PATH="${PATH}" RAYHPC_RUN_DIR="${RAYHPC_RUN_DIR}" RAYHPC_RANK_VARS="${RAYHPC_RANK_VARS}" RAYHPC_HEAD_HOST="${RAYHPC_HEAD_HOST}" apptainer exec --no-home --bind /lus/proj/shared --pwd /lus/proj/shared /lus/proj/ray.sif python /lus/proj/shared/runs/20260101-000000-abcd/node_agent.pyz --run-dir /lus/proj/shared/runs/20260101-000000-abcd &
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
