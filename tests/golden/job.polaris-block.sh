#!/bin/bash
#PBS -N rayhpc-20260101
#PBS -l select=3:system=polaris
#PBS -l place=scatter:excl
#PBS -l walltime=00:30:00
#PBS -o /lus/proj/shared/runs/20260101-000000-abcd/blocks/b2.out
#PBS -j oe
#PBS -l filesystems=home:eagle
#PBS -q debug-scaling
#PBS -A PROJ
#PBS -l singularity_fakeroot=true

# Rendered by rayhpc for block b2 of run 20260101-000000-abcd on site polaris (3 worker nodes, joining the head's cluster).
# Do not edit: `rayhpc grow` writes it.
set -u
export RAYHPC_RUN_DIR=/lus/proj/shared/runs/20260101-000000-abcd
# No signal comes from pbs before its walltime kill: this timer asks the agents to stop
# 60 s before the walltime (00:30:00, counted from the script's start),
# as a Slurm job's --signal would.
(
  sleep 1740 & sleeper=$!
  trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
  wait "$sleeper" && (set -C; echo "job script: walltime in 60 s" > "$RAYHPC_RUN_DIR/blocks/b2.stop") 2>/dev/null
) &
timer=$!
trap 'kill "$timer" 2>/dev/null' EXIT  # the timer ends with the script
# The site's setup (set +u: module scripts may read unset variables).
set +u
module use /soft/modulefiles
module load spack-pe-base
module load apptainer
set -u
export LC_ALL=C.UTF-8
export LANG=C.UTF-8
export http_proxy=http://proxy.alcf.anl.gov:3128
export https_proxy=http://proxy.alcf.anl.gov:3128
export ftp_proxy=http://proxy.alcf.anl.gov:3128
export HTTP_PROXY=http://proxy.alcf.anl.gov:3128
export HTTPS_PROXY=http://proxy.alcf.anl.gov:3128
export no_proxy='admin,polaris-adminvm-01,localhost,*.cm.polaris.alcf.anl.gov,polaris-*,*.polaris.alcf.anl.gov,*.alcf.anl.gov'
export NO_PROXY='admin,polaris-adminvm-01,localhost,*.cm.polaris.alcf.anl.gov,polaris-*,*.polaris.alcf.anl.gov,*.alcf.anl.gov'
export RAYHPC_RANK_VARS=PALS_RANKID,PMI_RANK
# NCCL and Gloo on the interface Ray uses (hsn0), unless the job's environment sets them.
export NCCL_SOCKET_IFNAME="${NCCL_SOCKET_IFNAME:-hsn0}"
export GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-hsn0}"
# Where the head's agent listens (its address, from head.json when the block was
# submitted): the block's nodes read nothing of the shared file system to find it.
export RAYHPC_HEAD_HOST=10.1.2.3
if ! command -v apptainer >/dev/null 2>&1; then
  echo 'rayhpc: site polaris: apptainer is not on PATH after the site setup (modules: module use /soft/modulefiles; module load spack-pe-base; module load apptainer); fix `setup` in the site file' | tee "$RAYHPC_RUN_DIR/blocks/b2.error" >&2
  exit 1
fi
cd /lus/proj/shared

# One worker agent per node, in the container: they join the running cluster.
mpiexec -n 3 --ppn 1 --cpu-bind none apptainer exec --fakeroot --no-home --nv --bind /lus/proj/shared --pwd /lus/proj/shared /eagle/PROJ/ray.sif python /lus/proj/shared/runs/20260101-000000-abcd/blocks/b2.pyz --run-dir /lus/proj/shared/runs/20260101-000000-abcd --role worker --block b2 &
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
