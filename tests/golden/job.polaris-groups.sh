#!/bin/bash
#PBS -N rayhpc-20260101
#PBS -l select=1:system=polaris+2:system=polaris
#PBS -l place=scatter:excl
#PBS -l walltime=01:00:00
#PBS -o /home/me/shared/runs/20260101-000000-abcd/job.out
#PBS -j oe
#PBS -l filesystems=home:eagle
#PBS -q debug-scaling
#PBS -A PROJ
#PBS -l singularity_fakeroot=true

# Rendered by rayhpc for run 20260101-000000-abcd on site polaris (3 nodes: head 1 + gpu 2).
# Do not edit: `rayhpc launch` writes it anew; `--dry-run` prints it.
set -u
export RAYHPC_RUN_DIR=/home/me/shared/runs/20260101-000000-abcd
# No signal comes from pbs before its walltime kill: this timer asks the agents to stop
# 60 s before the walltime (01:00:00, counted from the script's start),
# as a Slurm job's --signal would.
(
  sleep 3540 & sleeper=$!
  trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
  wait "$sleeper" && (set -C; echo "job script: walltime in 60 s" > "$RAYHPC_RUN_DIR/stop") 2>/dev/null
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
# Where the head's agent listens (rank 0's host): workers reach it over the network,
# not by polling the shared file system.
export RAYHPC_HEAD_HOST="$(head -n 1 "$PBS_NODEFILE")"
if ! command -v apptainer >/dev/null 2>&1; then
  echo 'rayhpc: site polaris: apptainer is not on PATH after the site setup (modules: module use /soft/modulefiles; module load spack-pe-base; module load apptainer); fix `setup` in the site file' | tee "$RAYHPC_RUN_DIR/error" >&2
  echo 1 > "$RAYHPC_RUN_DIR/exit_code"
  exit 1
fi
cd /home/me/shared
# Each group's hosts, in a host file of its own: ALCF "Multi-node Ensemble
# Calculations Example" (argonne-lcf/user-guides docs/running-jobs/
# example-job-scripts.md) splits $PBS_NODEFILE and gives each mpiexec its part
# (--hostfile). Group by group, the head's first, each takes the next hosts of
# $PBS_NODEFILE (each host once, in the file's order).
# NOTE: that the node file lists the hosts of select's chunks in chunk order is
# not in the documentation we follow (pbs_resources(7B), ALCF's guides). Where the
# groups' chunks differ (system=...), check it on the site once: compare
# `qstat -f $PBS_JOBID` (exec_vnode, in chunk order) with $PBS_NODEFILE.
hosts_dir=$(mktemp -d)
awk '!seen[$0]++' "$PBS_NODEFILE" > "$hosts_dir/all"
if [ "$(wc -l < "$hosts_dir/all")" -lt 3 ]; then
  echo "rayhpc: the job has fewer than 3 hosts in $PBS_NODEFILE; the groups need head 1 + gpu 2" | tee "$RAYHPC_RUN_DIR/error" >&2
  echo 1 > "$RAYHPC_RUN_DIR/exit_code"
  exit 1
fi
sed -n '1,1p' "$hosts_dir/all" > "$hosts_dir/head"
sed -n '2,3p' "$hosts_dir/all" > "$hosts_dir/gpu"

# One node agent per node, in its group's container; rank 0 (the head's group) is the Ray head.
(
  mpiexec -n 1 --ppn 1 --hostfile "$hosts_dir/head" --cpu-bind none apptainer exec --fakeroot --no-home --bind /home/me/shared --pwd /home/me/shared /home/me/shared/cpu.sif python /home/me/shared/runs/20260101-000000-abcd/node_agent.pyz --run-dir /home/me/shared/runs/20260101-000000-abcd --group head &
  mpiexec -n 2 --ppn 1 --hostfile "$hosts_dir/gpu" --cpu-bind none apptainer exec --fakeroot --no-home --nv --bind /home/me/shared --pwd /home/me/shared /lus/eagle/projects/PROJ/gpu.sif python /home/me/shared/runs/20260101-000000-abcd/node_agent.pyz --run-dir /home/me/shared/runs/20260101-000000-abcd --group gpu --role worker &
  wait
  rm -rf "$hosts_dir"  # node-local, made above
) &
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
