#!/bin/bash
#COBALT -t 180
#COBALT -n 64
#COBALT -o /lus/grand/projects/PROJ/shared/runs/20260101-000000-abcd/job.out
#COBALT -e /lus/grand/projects/PROJ/shared/runs/20260101-000000-abcd/job.out
#COBALT --jobname rayhpc-20260101-000000-abcd
#COBALT -q default
#COBALT -A PROJ
#COBALT --attrs filesystems=home,grand:mcdram=cache:numa=quad

# Rendered by rayhpc for run 20260101-000000-abcd on site theta (64 nodes).
# Do not edit: `rayhpc launch` writes it anew; `--dry-run` prints it.
set -u
export RAYHPC_RUN_DIR=/lus/grand/projects/PROJ/shared/runs/20260101-000000-abcd
# No signal comes from cobalt before its walltime kill: this timer asks the agents to stop
# 60 s before the walltime (03:00:00, counted from the script's start),
# as a Slurm job's --signal would.
(
  sleep 10740 & sleeper=$!
  trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
  wait "$sleeper" && (set -C; echo "job script: walltime in 60 s" > "$RAYHPC_RUN_DIR/stop") 2>/dev/null
) &
timer=$!
trap 'kill "$timer" 2>/dev/null' EXIT  # the timer ends with the script
# The site's setup (set +u: module scripts may read unset variables).
set +u
module unload trackdeps darshan xalt
ulimit -c 0
set -u
export PMI_NO_FORK=1
export KMP_AFFINITY=disabled
export LC_ALL=C.UTF-8
export LANG=C.UTF-8
export RAYHPC_RANK_VARS=ALPS_APP_PE
# NCCL and Gloo on the interface Ray uses (ipogif0), unless the job's environment sets them.
export NCCL_SOCKET_IFNAME="${NCCL_SOCKET_IFNAME:-ipogif0}"
export GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-ipogif0}"
if ! command -v singularity >/dev/null 2>&1; then
  echo 'rayhpc: site theta: singularity is not on PATH after the site setup (modules: module unload trackdeps darshan xalt); fix `setup` in the site file' | tee "$RAYHPC_RUN_DIR/error" >&2
  echo 1 > "$RAYHPC_RUN_DIR/exit_code"
  exit 1
fi
cd /lus/grand/projects/PROJ/shared

# One node agent per node, in the container; rank 0 becomes the Ray head.
aprun -n 64 -N 1 --cc none singularity exec --no-home --bind /lus/grand/projects/PROJ/shared --pwd /lus/grand/projects/PROJ/shared /lus/grand/projects/PROJ/shared/ray.sif python /lus/grand/projects/PROJ/shared/runs/20260101-000000-abcd/node_agent.pyz --run-dir /lus/grand/projects/PROJ/shared/runs/20260101-000000-abcd &
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
