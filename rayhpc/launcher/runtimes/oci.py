"""Runtimes that run OCI images with a container engine on the node: Shifter (NERSC),
podman-hpc (NERSC Perlmutter), Docker; and bare: no container at all."""

from __future__ import annotations

from rayhpc.launcher.runtimes.runtime_interface import ExecRequest, Runtime


class Shifter(Runtime):
    name = "shifter"
    program = "shifter"
    image_hint = "give the name Shifter knows it by (`shifterimg pull NAME`)"
    bind_flag = "--volume={path}:{path}"
    workdir_flag = "--workdir={path}"
    env_flag = "--env={key}={value}"
    # `--module=gpu` for NVIDIA is not in the stored NERSC/Shifter docs (NERSC users' scripts
    # use it). Whether Shifter passes the host environment is not stated in the stored docs
    # (NERSC/shifter doc/command/shifter.rst): pass_env is not rendered.
    GPU_MODULES = {"nvidia": "gpu"}
    gpus = tuple(GPU_MODULES)

    def exec_command(self, request: ExecRequest) -> list[str]:
        argv = [self.program, f"--image={request.image}", *self.options]
        if request.gpu in self.GPU_MODULES:
            argv.append(f"--module={self.GPU_MODULES[request.gpu]}")
        return [*argv, *self.mapped(request), "--", *request.command]


class Docker(Runtime):
    """`docker run` on each node: host network and IPC, so Ray nodes reach each other and the
    object store gets the node's shared memory."""
    name = "docker"
    program = "docker"
    image_hint = "give an image tag on the engine (`rayhpc build` makes one)"
    batch = False
    bind_flag = "--volume {path}:{path}"
    workdir_flag = "--workdir {path}"
    env_flag = "--env {key}={value}"
    GPU_DEVICES = {"amd": ("/dev/kfd", "/dev/dri")}  # ROCm's device files
    GPU_FLAGS = {"nvidia": ["--gpus", "all"],
                 "amd": [arg for path in GPU_DEVICES["amd"] for arg in ("--device", path)]}
    gpus = tuple(GPU_FLAGS)

    def exec_command(self, request: ExecRequest) -> list[str]:
        return [self.program, "run", "--rm", "--init", "--network", "host", "--ipc", "host",
                *self.user_flags(), *self.options, *self.GPU_FLAGS.get(request.gpu, []),
                *self.mapped(request), *self.passed_env(request), request.image,
                *request.command]

    def user_flags(self) -> list[str]:
        return []

    def passed_env(self, request: ExecRequest) -> list[str]:
        """`-e NAME` (the host's value) for each variable the command needs: docker and podman
        pass no host environment by default."""
        return [arg for name in request.pass_env for arg in ("-e", name)]

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
        if request.gpu == "nvidia":
            # Compose's GPU access: the `devices` reservation of the Deploy specification,
            # `capabilities: [gpu]` ("You must set this field"; docs.docker.com/compose/
            # gpu-support, "Enabling GPU access to service containers").
            service["deploy"] = {"resources": {"reservations": {"devices": [
                {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]}}}
        elif request.gpu:
            service["devices"] = [f"{path}:{path}" for path in Docker.GPU_DEVICES[request.gpu]]
        return service


class PodmanHPC(Docker):
    """podman-hpc run (NERSC/podman-hpc): rootless podman with the site's squashed images.

    It passes no host environment (its default run args, podman_hpc/siteconfig.py
    default_run_args, have no --env-host): the rank and allocation variables and the job's own
    are passed with `-e NAME` / `-e PREFIX*` (podman run --env: "if an environment variable
    ending in * is specified without a value, Podman searches the host environment for
    variables starting with the prefix"), as its --mpi module does (`-e SLURM_*`, ...).
    """
    name = "podman-hpc"
    program = "podman-hpc"
    image_hint = ("give the image's name as `podman-hpc images` lists it (after `podman-hpc "
                  "pull NAME` or `podman-hpc migrate NAME`), not a file")
    batch = True
    # --gpu: podman-hpc's gpu module, "Enable NVIDIA GPU Support" (etc/modules.d/gpu.yaml).
    # No AMD or Intel module in podman-hpc.
    GPU_FLAGS = {"nvidia": ["--gpu"]}
    gpus = tuple(GPU_FLAGS)

    def user_flags(self) -> list[str]:
        # Rootless podman maps the image's uid 1000 to a sub-uid that cannot write the run
        # directory; keep-id runs the agent as the user's own uid ("keep-id | $UID | $UID (Map
        # user account to same UID within container.)", podman run --userns). NERSC's own
        # recommendation for this is not in the stored docs.
        return ["--userns=keep-id"]


class Bare(Runtime):
    """No container: the node's own Python with Ray installed (for sites that forbid them)."""
    name = "bare"
    program = "python"
    image_kind = "none"
    image_hint = "the bare runtime runs no image: leave --image out"
    gpus = ("nvidia", "amd", "intel")  # the node's own devices

    def exec_command(self, request: ExecRequest) -> list[str]:
        env = [f"{key}={value}" for key, value in request.env.items()]
        return [*(["env", *env] if env else []), *self.options, *request.command]
