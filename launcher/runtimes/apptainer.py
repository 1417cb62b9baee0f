"""Apptainer (and Singularity, its former name): `apptainer exec` of a SIF.

Apptainer passes the host environment into the container by default (no --cleanenv here), so
the launcher's rank variables and the site's environment reach the agent without flags.
"""

from __future__ import annotations

from launcher.runtimes.base import ExecRequest, Runtime

# --nv: NVIDIA; --rocm: AMD ("The --rocm flag is required to support AMD GPUs inside the
# container", OLCF olcf/olcf_containers_examples frontier/.../gpu_aware_mpi_example/submit.sbatch).
# Intel: no flag; Apptainer binds the host's /dev by default and ALCF's Aurora container docs
# run `apptainer exec` without a GPU flag (argonne-lcf/user-guides docs/aurora/containers/).
GPU_FLAGS = {"nvidia": ["--nv"], "amd": ["--rocm"], "intel": []}


class Apptainer(Runtime):
    name = "apptainer"
    program = "apptainer"
    image_kind = "sif"
    image_hint = ("give the SIF path (`invoke build --sif` or `invoke convert` makes one), on a "
                  "file system every node sees")
    gpus = tuple(GPU_FLAGS)
    bind_flag = "--bind {path}"
    workdir_flag = "--pwd {path}"
    env_flag = "--env {key}={value}"

    def exec_command(self, request: ExecRequest) -> list[str]:
        # Never the user's own home: rayproject/ray keeps its Python under /home/ray, which a
        # user whose home is /home/ray would hide. --home gives a writable node-local HOME
        # instead (Ray writes ~/.ray; Apptainer refuses HOME through --env).
        # No --pid: Ray finds its raylet through the process table.
        argv = [self.program, "exec", *self.options,
                *(["--home", request.home] if request.home else ["--no-home"])]
        argv += GPU_FLAGS.get(request.gpu, [])
        return [*argv, *self.mapped(request), request.image, *request.command]


class Singularity(Apptainer):
    name = "singularity"
    program = "singularity"
