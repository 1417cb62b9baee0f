#!/bin/bash
#BSUB -J rayhpc-20260101-000000-abcd-b2
#BSUB -n 3
#BSUB -R "span[ptile=1]"
#BSUB -W 0:30
#BSUB -o /lus/proj/shared/runs/20260101-000000-abcd/blocks/b2.out
#BSUB -e /lus/proj/shared/runs/20260101-000000-abcd/blocks/b2.out
#BSUB -wa TERM
#BSUB -wt 1
#BSUB -P PROJ

# Rendered by rayhpc for block b2 of run 20260101-000000-abcd on site lsf (3 worker nodes, joining the head's cluster).
# Do not edit: `rayhpc grow` writes it.
set -u
export RAYHPC_RUN_DIR=/lus/proj/shared/runs/20260101-000000-abcd
export RAYHPC_RANK_VARS=RAYHPC_HOST_INDEX
# Where the head's agent listens (its address, from head.json when the block was
# submitted): the block's nodes read nothing of the shared file system to find it.
export RAYHPC_HEAD_HOST=10.1.2.3
if ! command -v apptainer >/dev/null 2>&1; then
  echo 'rayhpc: site lsf: apptainer is not on PATH after the site setup (the site setup loads no module); fix `setup` in the site file' | tee "$RAYHPC_RUN_DIR/blocks/b2.error" >&2
  exit 1
fi
cd /lus/proj/shared

# One worker agent per node, in the container: they join the running cluster.
(
  RAYHPC_HOST_INDEX=0
  for host in $(echo "$LSB_MCPU_HOSTS" | awk '{for (i = 1; i < NF; i += 2) print $i}'); do
    blaunch "$host" env PATH="${PATH}" RAYHPC_RUN_DIR="${RAYHPC_RUN_DIR}" RAYHPC_RANK_VARS="${RAYHPC_RANK_VARS}" RAYHPC_HEAD_HOST="${RAYHPC_HEAD_HOST}" RAYHPC_HOST_INDEX="${RAYHPC_HOST_INDEX}" apptainer exec --no-home --bind /lus/proj/shared --pwd /lus/proj/shared /gpfs/PROJ/ray.sif python /lus/proj/shared/runs/20260101-000000-abcd/blocks/b2.pyz --run-dir /lus/proj/shared/runs/20260101-000000-abcd --role worker --block b2 &
    RAYHPC_HOST_INDEX=$((RAYHPC_HOST_INDEX + 1))
  done
  wait
) &
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
