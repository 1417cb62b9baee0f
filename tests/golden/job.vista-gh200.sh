#!/bin/bash
#SBATCH --job-name=rayhpc-20260101-000000-abcd
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --time=01:00:00
#SBATCH --output=/scratch/proj/shared/runs/20260101-000000-abcd/job.out
#SBATCH --signal=B:TERM@60
#SBATCH --exclusive
#SBATCH --account=PROJ
#SBATCH --partition=gh

# Rendered by rayhpc for run 20260101-000000-abcd on site vista-gh200 (4 nodes).
# Do not edit: `rayhpc launch` writes it anew; `--dry-run` prints it.
set -u
export RAYHPC_RUN_DIR=/scratch/proj/shared/runs/20260101-000000-abcd
# The site's setup (set +u: module scripts may read unset variables).
set +u
module load tacc-apptainer
set -u
export RAYHPC_RANK_VARS=SLURM_PROCID
# Where the head's agent listens (rank 0's host): workers reach it over the network,
# not by polling the shared file system.
export RAYHPC_HEAD_HOST="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
if ! command -v apptainer >/dev/null 2>&1; then
  echo 'rayhpc: site vista-gh200: apptainer is not on PATH after the site setup (modules: module load tacc-apptainer); fix `setup` in the site file' | tee "$RAYHPC_RUN_DIR/error" >&2
  echo 1 > "$RAYHPC_RUN_DIR/exit_code"
  exit 1
fi
cd /scratch/proj/shared
# srun gives each task one CPU unless told: since Slurm 22.05 it does not inherit
# --cpus-per-task (Slurm 22.05 release notes: srun no longer reads
# SLURM_CPUS_PER_TASK). Every CPU the allocation has on
# its smallest node: SLURM_JOB_CPUS_PER_NODE is CPU_count[(xnodes)][,...], e.g.
# 72(x2),36 (sbatch(1) OUTPUT ENVIRONMENT).
cpus=$(echo "${SLURM_JOB_CPUS_PER_NODE:-1}" | tr ',' '\n' | sed 's/(.*//' | sort -n | head -n 1)

# One node agent per node, in the container; rank 0 becomes the Ray head.
srun --nodes=4 --ntasks=4 --ntasks-per-node=1 --cpus-per-task="$cpus" --cpu-bind=none --kill-on-bad-exit=0 apptainer exec --no-home --nv --bind /scratch/proj/shared --pwd /scratch/proj/shared /scratch/proj/shared/ray-gpu-aarch64.sif python /scratch/proj/shared/runs/20260101-000000-abcd/node_agent.pyz --run-dir /scratch/proj/shared/runs/20260101-000000-abcd &
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
