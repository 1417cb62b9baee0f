#!/bin/bash
#SBATCH --job-name=rayhpc-20260101-000000-abcd
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --time=01:00:00
#SBATCH --output=/lus/proj/shared/runs/20260101-000000-abcd/job.out
#SBATCH --signal=B:TERM@60
#SBATCH --exclusive
#SBATCH --mem=0
#SBATCH --account=PROJ
#SBATCH --gpus-per-node=8

# Rendered by rayhpc for run 20260101-000000-abcd on site slurm-pyxis (4 nodes).
# Do not edit: `rayhpc launch` writes it anew; `--dry-run` prints it.
set -u
export RAYHPC_RUN_DIR=/lus/proj/shared/runs/20260101-000000-abcd
export RAYHPC_RANK_VARS=SLURM_PROCID
# Where the head's agent listens (rank 0's host): workers reach it over the network,
# not by polling the shared file system.
export RAYHPC_HEAD_HOST="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
if ! command -v enroot >/dev/null 2>&1; then
  echo 'rayhpc: site slurm-pyxis: enroot is not on PATH after the site setup (the site setup loads no module); fix `setup` in the site file' | tee "$RAYHPC_RUN_DIR/error" >&2
  echo 1 > "$RAYHPC_RUN_DIR/exit_code"
  exit 1
fi
cd /lus/proj/shared
# srun gives each task one CPU unless told: since Slurm 22.05 it does not inherit
# --cpus-per-task (Slurm 22.05 release notes: srun no longer reads
# SLURM_CPUS_PER_TASK). Every CPU the allocation has on
# its smallest node: SLURM_JOB_CPUS_PER_NODE is CPU_count[(xnodes)][,...], e.g.
# 72(x2),36 (sbatch(1) OUTPUT ENVIRONMENT).
cpus=$(echo "${SLURM_JOB_CPUS_PER_NODE:-1}" | tr ',' '\n' | sed 's/(.*//' | sort -n | head -n 1)

# One node agent per node, in the container; rank 0 becomes the Ray head.
srun --nodes=4 --ntasks=4 --ntasks-per-node=1 --cpus-per-task="$cpus" --cpu-bind=none --gpus-per-node=8 --kill-on-bad-exit=0 '--container-image=nvcr.io#nvidia/pytorch:24.05-py3' --container-mounts=/lus/proj/shared:/lus/proj/shared --container-workdir=/lus/proj/shared --no-container-mount-home --container-writable python /lus/proj/shared/runs/20260101-000000-abcd/node_agent.pyz --run-dir /lus/proj/shared/runs/20260101-000000-abcd &
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
