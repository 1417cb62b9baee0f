#!/bin/bash
#COBALT -t 30
#COBALT -n 4
#COBALT -o /lus/proj/shared/runs/20260101-000000-abcd/job.out
#COBALT -e /lus/proj/shared/runs/20260101-000000-abcd/job.out
#COBALT --jobname rayhpc-20260101-000000-abcd
#COBALT -q debug-cache-quad
#COBALT --attrs mcdram=cache:numa=quad

# Rendered by rayhpc for run 20260101-000000-abcd on site theta (4 nodes).
# Do not edit: `invoke launch` writes it anew; `--dry-run` prints it.
set -u
module unload trackdeps darshan xalt 2>/dev/null || true
ulimit -c 0
export PMI_NO_FORK=1
export KMP_AFFINITY=disabled
export LC_ALL=C.UTF-8
export LANG=C.UTF-8
export RAYHPC_RUN_DIR=/lus/proj/shared/runs/20260101-000000-abcd
cd /lus/proj/shared

# One node agent per node, in the container; rank 0 becomes the Ray head.
aprun -n 4 -N 1 --cc none singularity exec --no-home --bind /lus/proj/shared --pwd /lus/proj/shared /lus/proj/ray.sif python /lus/proj/shared/runs/20260101-000000-abcd/node_agent.py --run-dir /lus/proj/shared/runs/20260101-000000-abcd &
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
