"""Runtimes that run OCI images with a container engine on the node: Shifter (NERSC),
podman-hpc (NERSC Perlmutter), Docker; and bare: no container at all."""

from __future__ import annotations

from launcher.runtimes.base import ExecRequest, Runtime


class Shifter(Runtime):
    name = "shifter"
    image_hint = "give the name Shifter knows it by (`shifterimg pull NAME`)"
    bind_flag = "--volume={path}:{path}"
    workdir_flag = "--workdir={path}"
    env_flag = "--env={key}={value}"
    GPU_MODULES = {"nvidia": "gpu"}

    def exec_command(self, request: ExecRequest) -> list[str]:
        argv = ["shifter", f"--image={request.image}", *self.options]
        if request.gpu in self.GPU_MODULES:
            argv.append(f"--module={self.GPU_MODULES[request.gpu]}")
        return [*argv, *self.mapped(request), "--", *request.command]


class Docker(Runtime):
    """`docker run` on each node: host network and IPC, so Ray nodes reach each other and the
    object store gets the node's shared memory."""
    name = "docker"
    image_hint = "give an image tag on the engine (`invoke build` makes one)"
    batch = False
    bind_flag = "--volume {path}:{path}"
    workdir_flag = "--workdir {path}"
    env_flag = "--env {key}={value}"
    GPU_FLAGS = {"nvidia": ["--gpus", "all"],
                 "amd": ["--device", "/dev/kfd", "--device", "/dev/dri"]}

    def exec_command(self, request: ExecRequest) -> list[str]:
        return [self.name, "run", "--rm", "--init", "--network", "host", "--ipc", "host",
                *self.options, *self.GPU_FLAGS.get(request.gpu, []), *self.mapped(request),
                request.image, *request.command]

    @staticmethod
    def compose_service(request: ExecRequest) -> dict:
        """The same request as a docker compose service (the local site's form)."""
        service = {
            "image": request.image,
            "init": True,  # reaps Ray's orphans and forwards SIGTERM to the agent
            "working_dir": request.workdir,
            "command": request.command,
            "environment": dict(request.env),
            "volumes": [{"type": "bind", "source": path, "target": path}
                        for path in request.binds],
        }
        if request.home:
            service["environment"]["HOME"] = request.home
        return service


class PodmanHPC(Docker):
    name = "podman-hpc"
    image_hint = "give the image name after `podman-hpc migrate NAME`"
    batch = True
    GPU_FLAGS = {"nvidia": ["--gpu"]}


class Bare(Runtime):
    """No container: the node's own Python with Ray installed (for sites that forbid them)."""
    name = "bare"
    image_kind = "none"
    image_hint = "the bare runtime runs no image: leave --image out"

    def exec_command(self, request: ExecRequest) -> list[str]:
        env = [f"{key}={value}" for key, value in request.env.items()]
        return [*(["env", *env] if env else []), *self.options, *request.command]
