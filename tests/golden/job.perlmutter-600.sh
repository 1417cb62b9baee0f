#!/bin/bash
#SBATCH --job-name=rayhpc-20260101-000000-abcd
#SBATCH --nodes=600
#SBATCH --ntasks-per-node=1
#SBATCH --time=12:00:00
#SBATCH --output=/lus/proj/shared/runs/20260101-000000-abcd/job.out
#SBATCH --signal=B:TERM@60
#SBATCH --exclusive
#SBATCH --account=PROJ
#SBATCH --qos=regular
#SBATCH --constraint=gpu
#SBATCH --gpus-per-node=4

# Rendered by rayhpc for run 20260101-000000-abcd on site perlmutter (600 nodes).
# Do not edit: `rayhpc launch` writes it anew; `--dry-run` prints it.
set -u
export RAYHPC_RUN_DIR=/lus/proj/shared/runs/20260101-000000-abcd
export NCCL_SOCKET_IFNAME=hsn
export RAYHPC_RANK_VARS=SLURM_PROCID
# NCCL and Gloo on the interface Ray uses (hsn0), unless the job's environment sets them.
export GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-hsn0}"
# Where the head's agent listens (rank 0's host): workers reach it over the network,
# not by polling the shared file system.
export RAYHPC_HEAD_HOST="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
if ! command -v podman-hpc >/dev/null 2>&1; then
  echo 'rayhpc: site perlmutter: podman-hpc is not on PATH after the site setup (the site setup loads no module); fix `setup` in the site file' | tee "$RAYHPC_RUN_DIR/error" >&2
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
srun --nodes=600 --ntasks=600 --ntasks-per-node=1 --cpus-per-task="$cpus" --cpu-bind=none --gpus-per-node=4 --kill-on-bad-exit=0 podman-hpc run --rm --init --network host --ipc host --userns=keep-id --nccl --gpu --volume /lus/proj/shared:/lus/proj/shared --workdir /lus/proj/shared -e 'SLURM_*' -e NCCL_SOCKET_IFNAME -e RAYHPC_RANK_VARS -e GLOO_SOCKET_IFNAME -e RAYHPC_HEAD_HOST rayhpc/ray:2.60.0-py311-gpu python /lus/proj/shared/runs/20260101-000000-abcd/node_agent.pyz --run-dir /lus/proj/shared/runs/20260101-000000-abcd &
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
