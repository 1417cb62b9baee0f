#!/bin/bash
#PBS -N rayhpc-20260101
#PBS -l select=4:system=polaris
#PBS -l place=scatter
#PBS -l walltime=01:00:00
#PBS -o /lus/proj/shared/runs/20260101-000000-abcd/job.out
#PBS -j oe
#PBS -l filesystems=home:eagle
#PBS -q debug

# Rendered by rayhpc for run 20260101-000000-abcd on site polaris (4 nodes).
# Do not edit: `invoke launch` writes it anew; `--dry-run` prints it.
set -u
module use /soft/modulefiles 2>/dev/null || true
module load apptainer 2>/dev/null || true
export LC_ALL=C.UTF-8
export LANG=C.UTF-8
export RAYHPC_RUN_DIR=/lus/proj/shared/runs/20260101-000000-abcd
cd /lus/proj/shared

# One node agent per node, in the container; rank 0 becomes the Ray head.
mpiexec -n 4 --ppn 1 --cpu-bind none apptainer exec --no-home --nv --bind /lus/proj/shared --pwd /lus/proj/shared /lus/proj/ray.sif python /lus/proj/shared/runs/20260101-000000-abcd/node_agent.py --run-dir /lus/proj/shared/runs/20260101-000000-abcd &
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
