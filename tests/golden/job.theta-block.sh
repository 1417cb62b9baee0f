#!/bin/bash
#COBALT -t 30
#COBALT -n 3
#COBALT -o /lus/proj/shared/runs/20260101-000000-abcd/blocks/b2.out
#COBALT -e /lus/proj/shared/runs/20260101-000000-abcd/blocks/b2.out
#COBALT --jobname rayhpc-20260101-000000-abcd-b2
#COBALT -q debug-cache-quad
#COBALT -A PROJ
#COBALT --attrs filesystems=home,theta-fs0:mcdram=cache:numa=quad

# Rendered by rayhpc for block b2 of run 20260101-000000-abcd on site theta (3 worker nodes, joining the head's cluster).
# Do not edit: `rayhpc grow` writes it.
set -u
export RAYHPC_RUN_DIR=/lus/proj/shared/runs/20260101-000000-abcd
# No signal comes from cobalt before its walltime kill: this timer asks the agents to stop
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
module unload trackdeps darshan xalt
ulimit -c 0
set -u
export PMI_NO_FORK=1
export KMP_AFFINITY=disabled
export LC_ALL=C.UTF-8
export LANG=C.UTF-8
export RAYHPC_RANK_VARS=ALPS_APP_PE
# NCCL and Gloo on the interface Ray uses (ipogif0), unless the job's environment sets them.
export NCCL_SOCKET_IFNAME="${NCCL_SOCKET_IFNAME:-ipogif0}"
export GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-ipogif0}"
# Where the head's agent listens (its address, from head.json when the block was
# submitted): the block's nodes read nothing of the shared file system to find it.
export RAYHPC_HEAD_HOST=10.1.2.3
if ! command -v singularity >/dev/null 2>&1; then
  echo 'rayhpc: site theta: singularity is not on PATH after the site setup (modules: module unload trackdeps darshan xalt); fix `setup` in the site file' | tee "$RAYHPC_RUN_DIR/blocks/b2.error" >&2
  exit 1
fi
cd /lus/proj/shared

# One worker agent per node, in the container: they join the running cluster.
aprun -n 3 -N 1 --cc none singularity exec --no-home --bind /lus/proj/shared --pwd /lus/proj/shared /lus/theta-fs0/projects/PROJ/ray.sif python /lus/proj/shared/runs/20260101-000000-abcd/blocks/b2.pyz --run-dir /lus/proj/shared/runs/20260101-000000-abcd --role worker --block b2 &
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
