"""The GPU variables Ray needs on a node, from those the scheduler set (pure: environment in,
additions out).

AMD: Slurm's GPU request sets ROCR_VISIBLE_DEVICES in every task (gres.conf(5): Flags=
amd_gpu_env "Set environment variable ROCR_VISIBLE_DEVICES"; SchedMD/slurm
src/plugins/gres/common/gres_common.c), never HIP_VISIBLE_DEVICES. Ray's AMD path refuses
that: with ROCR_VISIBLE_DEVICES set and HIP_VISIBLE_DEVICES unset it raises "Please use
HIP_VISIBLE_DEVICES instead of ROCR_VISIBLE_DEVICES" (ray-project/ray 2.60
python/ray/_private/accelerators/amd_gpu.py), and `ray start` fails on every GPU node (OLCF
Frontier, LUMI). ROCr applies ROCR_VISIBLE_DEVICES first and HIP's ids count only the devices
it left (ROCm docs/conceptual/gpu-isolation.md; PyTorch torch/cuda/__init__.py: "The ROCR env
var is processed first which then reduces the number of GPUs that HIP can select from"), so
HIP_VISIBLE_DEVICES=0..n-1 names exactly the allocated GPUs; Ray then gives each task one of
them, and ROCR_VISIBLE_DEVICES stays as the scheduler set it.
"""

from __future__ import annotations

from collections.abc import Mapping

ROCR = "ROCR_VISIBLE_DEVICES"
HIP = "HIP_VISIBLE_DEVICES"


def gpu_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables to add before `ray start` ({} : none)."""
    if ROCR in environ and HIP not in environ:
        count = len([word for word in environ[ROCR].split(",") if word.strip()])
        return {HIP: ",".join(str(index) for index in range(count))}
    return {}
