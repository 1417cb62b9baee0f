"""Apptainer (and Singularity, its former name): `apptainer exec` of a SIF."""

from __future__ import annotations

from launcher.runtimes.base import ExecRequest, Runtime

GPU_FLAGS = {"nvidia": "--nv", "amd": "--rocm"}


class Apptainer(Runtime):
    name = "apptainer"
    image_kind = "sif"
    image_hint = ("give the SIF path (`invoke build --sif` or `invoke convert` makes one), on a "
                  "file system every node sees")
    bind_flag = "--bind {path}"
    workdir_flag = "--pwd {path}"
    env_flag = "--env {key}={value}"

    def exec_command(self, request: ExecRequest) -> list[str]:
        # Never the user's own home: rayproject/ray keeps its Python under /home/ray, which a
        # user whose home is /home/ray would hide. --home gives a writable node-local HOME
        # instead (Ray writes ~/.ray; Apptainer refuses HOME through --env).
        # No --pid: Ray finds its raylet through the process table.
        argv = [self.name, "exec", *self.options,
                *(["--home", request.home] if request.home else ["--no-home"])]
        if request.gpu:
            argv.append(GPU_FLAGS[request.gpu])
        return [*argv, *self.mapped(request), request.image, *request.command]


class Singularity(Apptainer):
    name = "singularity"
