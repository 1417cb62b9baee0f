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
#SBATCH --partition=small-g
#SBATCH --gpus-per-node=8

# Rendered by rayhpc for run 20260101-000000-abcd on site lumi (4 nodes).
# Do not edit: `rayhpc launch` writes it anew; `--dry-run` prints it.
set -u
export RAYHPC_RUN_DIR=/lus/proj/shared/runs/20260101-000000-abcd
# The site's setup (set +u: module scripts may read unset variables).
set +u
module use /appl/local/laifs/modules
module load lumi-aif-singularity-bindings
set -u
export NCCL_SOCKET_IFNAME=hsn0,hsn1,hsn2,hsn3
export LC_ALL=C.UTF-8
export LANG=C.UTF-8
export RAYHPC_RANK_VARS=SLURM_PROCID
# NCCL and Gloo on the interface Ray uses (hsn0), unless the job's environment sets them.
export GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-hsn0}"
# Where the head's agent listens (rank 0's host): workers reach it over the network,
# not by polling the shared file system.
export RAYHPC_HEAD_HOST="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
if ! command -v singularity >/dev/null 2>&1; then
  echo 'rayhpc: site lumi: singularity is not on PATH after the site setup (modules: module use /appl/local/laifs/modules; module load lumi-aif-singularity-bindings); fix `setup` in the site file' | tee "$RAYHPC_RUN_DIR/error" >&2
  echo 1 > "$RAYHPC_RUN_DIR/exit_code"
  exit 1
fi
cd /lus/proj/shared

# One node agent per node, in the container; rank 0 becomes the Ray head.
srun --nodes=4 --ntasks=4 --ntasks-per-node=1 --cpus-per-task=56 --cpu-bind=none --gpus-per-node=8 --kill-on-bad-exit=0 singularity exec --no-home --bind /lus/proj/shared --pwd /lus/proj/shared /lus/proj/ray.sif python /lus/proj/shared/runs/20260101-000000-abcd/node_agent.pyz --run-dir /lus/proj/shared/runs/20260101-000000-abcd &
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
