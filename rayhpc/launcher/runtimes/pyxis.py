"""Pyxis (NVIDIA/pyxis): containers through Slurm's own srun, with enroot underneath.

Pyxis is a SPANK plugin: its flags are srun's (`srun --container-image=... cmd`), so the
"command" it makes is srun's container flags followed by the agent, and the Slurm scheduler
puts its own srun in front. Source: NVIDIA/pyxis README.md, "Usage" (release 0.24.0).
"""

from __future__ import annotations

from pathlib import Path

from rayhpc.launcher.runtimes.runtime_interface import ExecRequest, Runtime


class Pyxis(Runtime):
    name = "pyxis"
    # The job script checks this is on PATH: "Pyxis requires the enroot container utility"
    # (README, "Installation"), on the nodes where the batch script runs too.
    program = "enroot"
    image_kind = "pyxis"
    image_hint = ("give a registry image as enroot names it ([USER@][REGISTRY#]IMAGE[:TAG], e.g. "
                  "nvcr.io#nvidia/pytorch:24.05-py3) or the path of a squashfs file that "
                  "`enroot import` made, on a file system every node sees")
    schedulers = ("slurm",)
    # GPUs: no flag. enroot's hook NVIDIA/enroot conf/hooks/98-nvidia.sh configures the
    # container's NVIDIA devices through nvidia-container-cli where the image (or the task)
    # sets NVIDIA_VISIBLE_DEVICES (CUDA images do; rayproject/ray's -gpu images are CUDA
    # images); no hook for AMD or Intel GPUs in enroot's conf/hooks.
    gpus = ("nvidia",)
    # --container-mounts=SRC:DST[:FLAGS][,SRC:DST...], --container-workdir=PATH (README).
    bind_flag = "--container-mounts={path}:{path}"
    workdir_flag = "--container-workdir={path}"
    # README --container-env: "By default, all exported host environment variables are set in
    # the container": the job's and the rank variables need no flag. Values are not set here.
    env_flag = ""

    def exec_command(self, request: ExecRequest) -> list[str]:
        mounts = ",".join(f"{path}:{path}" for path in request.binds)
        argv = [f"--container-image={request.image}",
                *([f"--container-mounts={mounts}"] if mounts else []),
                *([f"--container-workdir={request.workdir}"] if request.workdir else []),
                # Not the user's home: rayproject/ray keeps its Python under /home/ray (as
                # Apptainer's --no-home); --no-container-mount-home (README).
                "--no-container-mount-home",
                # Ray writes ~/.ray (its token) in the image's home: --container-writable "make
                # the container filesystem writable" (README; enroot's default may be read-only).
                "--container-writable",
                *self.options]
        return [*argv, *request.command]

    def image_problem(self, image: str, on_this_host: bool) -> str:
        if image.endswith(".sif"):
            return f"pyxis runs a registry image or a squashfs file, not a SIF ({image}); " \
                   f"{self.image_hint}"
        if image.startswith(("/", ".")) and on_this_host and not Path(image).is_file():
            return f"{image} is not a file; {self.image_hint}"
        return ""
