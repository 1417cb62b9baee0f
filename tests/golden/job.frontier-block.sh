#!/bin/bash
#SBATCH --job-name=rayhpc-20260101-000000-abcd-b2
#SBATCH --nodes=8
#SBATCH --ntasks-per-node=1
#SBATCH --time=00:30:00
#SBATCH --output=/lus/proj/shared/runs/20260101-000000-abcd/blocks/b2.out
#SBATCH --signal=B:TERM@60
#SBATCH --exclusive
#SBATCH --account=PROJ
#SBATCH --partition=batch
#SBATCH --gpus-per-node=8

# Rendered by rayhpc for block b2 of run 20260101-000000-abcd on site frontier (8 worker nodes, joining the head's cluster).
# Do not edit: `rayhpc grow` writes it.
set -u
export RAYHPC_RUN_DIR=/lus/proj/shared/runs/20260101-000000-abcd
export NCCL_SOCKET_IFNAME=hsn0,hsn1,hsn2,hsn3
export RAYHPC_RANK_VARS=SLURM_PROCID
# NCCL and Gloo on the interface Ray uses (hsn0), unless the job's environment sets them.
export GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-hsn0}"
# Where the head's agent listens (its address, from head.json when the block was
# submitted): the block's nodes read nothing of the shared file system to find it.
export RAYHPC_HEAD_HOST=10.1.2.3
if ! command -v apptainer >/dev/null 2>&1; then
  echo 'rayhpc: site frontier: apptainer is not on PATH after the site setup (the site setup loads no module); fix `setup` in the site file' | tee "$RAYHPC_RUN_DIR/blocks/b2.error" >&2
  exit 1
fi
cd /lus/proj/shared

# One worker agent per node, in the container: they join the running cluster.
srun --nodes=8 --ntasks=8 --ntasks-per-node=1 --cpus-per-task=56 --cpu-bind=none --gpus-per-node=8 --kill-on-bad-exit=0 apptainer exec --no-home --rocm --bind /lus/proj/shared --pwd /lus/proj/shared /lus/proj/ray.sif python /lus/proj/shared/runs/20260101-000000-abcd/blocks/b2.pyz --run-dir /lus/proj/shared/runs/20260101-000000-abcd --role worker --block b2 &
step=$!
# The walltime warning comes here. Ask the head to release this block (its stop
# file): it drains the block's nodes, then tells their agents to stop; they stop
# Ray and keep the logs, and the cluster goes on without them.
# (set -C: the stop file is made once, by whoever asks first.)
trap '(set -C; echo job script: walltime or cancel > "$RAYHPC_RUN_DIR/blocks/b2.stop") 2>/dev/null' TERM INT
wait "$step"
code=$?
# A trapped signal ends the first wait early: the step's own end is its code.
if kill -0 "$step" 2>/dev/null; then wait "$step"; code=$?; fi
exit "$code"
