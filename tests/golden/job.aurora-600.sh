#!/bin/bash
#PBS -N rayhpc-20260101
#PBS -l select=600
#PBS -l place=scatter:excl
#PBS -l walltime=12:00:00
#PBS -o /lus/flare/projects/PROJ/runs/20260101-000000-abcd/job.out
#PBS -j oe
#PBS -l filesystems=flare
#PBS -q prod
#PBS -A PROJ

# Rendered by rayhpc for run 20260101-000000-abcd on site aurora (600 nodes).
# Do not edit: `rayhpc launch` writes it anew; `--dry-run` prints it.
set -u
export RAYHPC_RUN_DIR=/lus/flare/projects/PROJ/runs/20260101-000000-abcd
# No signal comes from pbs before its walltime kill: this timer asks the agents to stop
# 60 s before the walltime (12:00:00, counted from the script's start),
# as a Slurm job's --signal would.
(
  sleep 43140 & sleeper=$!
  trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
  wait "$sleeper" && (set -C; echo "job script: walltime in 60 s" > "$RAYHPC_RUN_DIR/stop") 2>/dev/null
) &
timer=$!
trap 'kill "$timer" 2>/dev/null' EXIT  # the timer ends with the script
# The site's setup (set +u: module scripts may read unset variables).
set +u
module load apptainer
set -u
export ZE_FLAT_DEVICE_HIERARCHY=FLAT
export LC_ALL=C.UTF-8
export LANG=C.UTF-8
export http_proxy=http://proxy.alcf.anl.gov:3128
export https_proxy=http://proxy.alcf.anl.gov:3128
export ftp_proxy=http://proxy.alcf.anl.gov:3128
export HTTP_PROXY=http://proxy.alcf.anl.gov:3128
export HTTPS_PROXY=http://proxy.alcf.anl.gov:3128
export no_proxy='admin,*.hostmgmt.cm.aurora.alcf.anl.gov,*.alcf.anl.gov,localhost'
export NO_PROXY='admin,*.hostmgmt.cm.aurora.alcf.anl.gov,*.alcf.anl.gov,localhost'
export RAYHPC_RANK_VARS=PALS_RANKID,PMI_RANK
# NCCL and Gloo on the interface Ray uses (hsn0), unless the job's environment sets them.
export NCCL_SOCKET_IFNAME="${NCCL_SOCKET_IFNAME:-hsn0}"
export GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-hsn0}"
# Where the head's agent listens (rank 0's host): workers reach it over the network,
# not by polling the shared file system.
export RAYHPC_HEAD_HOST="$(head -n 1 "$PBS_NODEFILE")"
if ! command -v apptainer >/dev/null 2>&1; then
  echo 'rayhpc: site aurora: apptainer is not on PATH after the site setup (modules: module load apptainer); fix `setup` in the site file' | tee "$RAYHPC_RUN_DIR/error" >&2
  echo 1 > "$RAYHPC_RUN_DIR/exit_code"
  exit 1
fi
# Ray gives each task its own Intel GPU (ZE_AFFINITY_MASK) only with dpctl in the
# image (ray-project/ray python/ray/_private/accelerators/intel_gpu.py).
if ! apptainer exec --no-home --bind /lus/flare/projects/PROJ /lus/flare/projects/PROJ/ray.sif python -c 'import dpctl' >/dev/null 2>&1; then
  echo 'rayhpc: site aurora: /lus/flare/projects/PROJ/ray.sif has no dpctl: Ray would take the Intel GPUs for NVIDIA ones and every task would see every tile; add dpctl to the image (pip install dpctl), or set RAY_EXPERIMENTAL_NOSET_ZE_AFFINITY_MASK and RAY_EXPERIMENTAL_NOSET_ONEAPI_DEVICE_SELECTOR to '"'"'1'"'"' in the site'"'"'s environment to manage devices yourself' | tee "$RAYHPC_RUN_DIR/error" >&2
  echo 1 > "$RAYHPC_RUN_DIR/exit_code"
  exit 1
fi
cd /lus/flare/projects/PROJ

# One node agent per node, in the container; rank 0 becomes the Ray head.
mpiexec -n 600 --ppn 1 --cpu-bind none apptainer exec --no-home --bind /lus/flare/projects/PROJ --pwd /lus/flare/projects/PROJ /lus/flare/projects/PROJ/ray.sif python /lus/flare/projects/PROJ/runs/20260101-000000-abcd/node_agent.pyz --run-dir /lus/flare/projects/PROJ/runs/20260101-000000-abcd &
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
