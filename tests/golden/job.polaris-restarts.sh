#!/bin/bash
#PBS -N rayhpc-20260101
#PBS -l select=2:system=polaris
#PBS -l place=scatter:excl
#PBS -l walltime=01:00:00
#PBS -o /lus/PROJ/shared/runs/20260101-000000-abcd/job.out
#PBS -j oe
#PBS -l filesystems=home:eagle
#PBS -q debug
#PBS -A PROJ
#PBS -r y
#PBS -l singularity_fakeroot=true

# Rendered by rayhpc for run 20260101-000000-abcd on site polaris (2 nodes).
# Do not edit: `rayhpc launch` writes it anew; `--dry-run` prints it.
set -u
export RAYHPC_RUN_DIR=/lus/PROJ/shared/runs/20260101-000000-abcd
# --restarts 2: when the allocation ends before the driver (walltime, preemption, a node lost),
# the run starts again: this job is requeued. Each attempt claims attempts/<n>/, and the files of
# the attempt before it move there (rayhpc's contract.attempts).
mkdir -p "$RAYHPC_RUN_DIR"/attempts
attempt=1
while [ -e "$RAYHPC_RUN_DIR"/attempts/"$attempt" ]; do attempt=$((attempt + 1)); done
mkdir "$RAYHPC_RUN_DIR"/attempts/"$attempt"
if [ "$attempt" -gt 1 ]; then
  for name in head.json status.json driver.log connect.txt timing.json timeline.svg error exit_code stop restarting nodes.json nodes logs; do
    if [ -e "$RAYHPC_RUN_DIR"/"$name" ] || [ -L "$RAYHPC_RUN_DIR"/"$name" ]; then
      mv -f "$RAYHPC_RUN_DIR"/"$name" "$RAYHPC_RUN_DIR"/attempts/"$((attempt - 1))"/
    fi
  done
  mkdir -p "$RAYHPC_RUN_DIR"/nodes "$RAYHPC_RUN_DIR"/logs
fi
echo "$(date +%s) ${PBS_JOBID:-}" > "$RAYHPC_RUN_DIR"/attempts/"$attempt"/started
echo "rayhpc: attempt $attempt of 3 (job ${PBS_JOBID:-})"
if [ "$attempt" -gt 3 ]; then
  echo 'rayhpc: the job started again after the run'"'"'s last attempt (--restarts 2): the run ends here' | tee "$RAYHPC_RUN_DIR/error" >&2
  echo 1 > "$RAYHPC_RUN_DIR/exit_code"
  exit 1
fi
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
cd /lus/PROJ/shared

# One node agent per node, in the container; rank 0 becomes the Ray head.
mpiexec -n 2 --ppn 1 --cpu-bind none apptainer exec --fakeroot --no-home --nv --bind /lus/PROJ/shared --pwd /lus/PROJ/shared /eagle/PROJ/ray.sif python /lus/PROJ/shared/runs/20260101-000000-abcd/node_agent.pyz --run-dir /lus/PROJ/shared/runs/20260101-000000-abcd &
step=$!
# The walltime warning comes here. Tell the agents through the run directory (srun
# would kill its tasks on SIGTERM, not pass it on): they stop the driver and Ray on
# every node and keep the logs.
# (set -C: the stop file is made once, by whoever asks first.)
trap '(set -C; echo job script: walltime or cancel > "$RAYHPC_RUN_DIR/stop") 2>/dev/null' TERM INT
wait "$step"
wait "$step" 2>/dev/null  # a trapped signal ends the first wait early
code=$(cat "$RAYHPC_RUN_DIR/exit_code" 2>/dev/null || echo 1)
# The run goes on (the head wrote `restarting`, before exit_code): back in the queue.
if [ -e "$RAYHPC_RUN_DIR/restarting" ]; then
  echo "rayhpc: $(head -n 1 "$RAYHPC_RUN_DIR/restarting")"
  if ! {
    next=$(qsub -W depend=afterany:"$PBS_JOBID" "$RAYHPC_RUN_DIR/job.sh") && echo "$next" > "$RAYHPC_RUN_DIR/job_id"
  }; then
    echo "rayhpc: the job could not be put back in the queue: the run ends here" >&2
    rm -f "$RAYHPC_RUN_DIR/restarting"
  fi
fi
exit "$code"
