#!/bin/bash
# vLLM's OpenAI-compatible server as the driver of a rayhpc cluster: one model over every GPU
# node, tensor parallel over the GPUs of a node and pipeline parallel over the nodes, which is
# vLLM's documented multi-node form ("Set tensor_parallel_size to the number of GPUs per node
# and pipeline_parallel_size to the number of nodes": docs/serving/parallelism_scaling.md,
# https://docs.vllm.ai/en/latest/serving/parallelism_scaling.html), on vLLM's Ray executor.
#
#   rayhpc launch --site perlmutter --nodes 2 --image rayhpc/vllm:2.60.0-py311-gpu \
#       --driver "bash examples/vllm_serve.sh models/Qwen2.5-7B-Instruct" \
#       --serve-port 8000 --serve-bind network
#
# (--serve-port: rayhpc probes the server from the head and, once it answers, prints how to
# reach it, the ssh -L line included; `rayhpc status` shows it: docs/serving.md.)
#
# MODEL: a model directory in the shared dir (every node loads its part of the weights from the
# same path; download it there first, from the login node) or a Hugging Face name (then every
# node downloads it, through the site's proxy). Arguments after MODEL go to `vllm serve`
# (e.g. --api-key KEY, --max-model-len 8192). Sizes come from the running cluster: TP = the GPUs
# of the smallest GPU node, PP = the GPU nodes; VLLM_TP and VLLM_PP override them. The server
# listens on the head's address (the site's interface; VLLM_HOST=127.0.0.1 for the head's
# loopback, with --serve-bind loopback), port VLLM_PORT (default 8000), until the walltime or
# `rayhpc down`. Check it from a node that reaches the head (the job's output names
# the address):
#
#   curl http://HEAD:8000/v1/models
#   curl http://HEAD:8000/v1/completions -H 'Content-Type: application/json' \
#        -d '{"model": "MODEL", "prompt": "San Francisco is a", "max_tokens": 16}'
set -euo pipefail

model=${1:?usage: vllm_serve.sh MODEL [vllm serve arguments ...]}
shift
# rayhpc runs the driver with RAY_ADDRESS set to the head's ip:port: vLLM's Ray executor joins
# this cluster instead of starting one, and the server takes the head's address.
: "${RAY_ADDRESS:?vllm_serve.sh runs as a rayhpc driver (--driver), which sets RAY_ADDRESS}"
host=${VLLM_HOST:-${RAY_ADDRESS%:*}}
port=${VLLM_PORT:-8000}

# The GPUs of each live node, as Ray counts them (the site's GPUs per node, or --num-gpus).
read -r per_node nodes < <(python - <<'PY'
import ray

ray.init(logging_level="ERROR")
gpus = [int(n["Resources"].get("GPU", 0)) for n in ray.nodes() if n["Alive"]]
gpus = [g for g in gpus if g > 0]
print(min(gpus) if gpus else 0, len(gpus))
PY
)
if [ "$per_node" -eq 0 ]; then
  echo "vllm_serve.sh: the cluster has no GPUs; launch the vllm image on a GPU site (its" \
       "nodes' GPUs, or --num-gpus)" >&2
  exit 1
fi
tp=${VLLM_TP:-$per_node}
pp=${VLLM_PP:-$nodes}
echo "vllm_serve.sh: $model on $nodes node(s) x $per_node GPU(s):" \
     "--tensor-parallel-size $tp --pipeline-parallel-size $pp; http://$host:$port/v1"
exec vllm serve "$model" --distributed-executor-backend ray \
  --tensor-parallel-size "$tp" --pipeline-parallel-size "$pp" \
  --host "$host" --port "$port" "$@"
