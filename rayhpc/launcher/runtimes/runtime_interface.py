"""The runtime interface: turn "run this command in this image" into a command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

IMAGE_KINDS = {
    "sif": "a SIF file",
    "oci": "an image name",
    "pyxis": "a registry image or a squashfs file",
    "none": "no image",
}


@dataclass(frozen=True)
class ExecRequest:
    image: str
    command: list[str]
    binds: list[str] = field(default_factory=list)  # host paths, mounted at the same path
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = ""
    gpu: str = ""  # "", "nvidia", "amd" or "intel"
    home: str = ""  # a writable node-local directory for HOME ("" : the runtime's choice)
    # Host variables the command needs (names, or PREFIX* for every one with that prefix):
    # only runtimes that pass no host environment (podman-hpc) have to be told.
    pass_env: list[str] = field(default_factory=list)


class Runtime:
    name = ""
    # The program the node runs (the job script checks it is on PATH after the site's setup).
    program = ""
    # What it runs: "sif" (a SIF file on a file system every node sees), "oci" (an image name
    # the node's container engine knows) or "none".
    image_kind = "oci"
    # How to get an image of the right kind, for the error that names a wrong one.
    image_hint = ""
    # Whether it runs on batch nodes (docker runs only the local site, through compose).
    batch = True
    # The site `gpu` values whose devices it can pass into a container.
    gpus: tuple[str, ...] = ()
    # How this runtime spells a bind mount (same path inside), the working dir and a variable.
    bind_flag = ""
    workdir_flag = ""
    env_flag = ""

    # The schedulers whose launcher runs it (() : any; Pyxis is a plugin of Slurm's srun).
    schedulers: tuple[str, ...] = ()

    def __init__(self, options: list[str] | None = None):
        self.options = list(options or [])  # the site's own flags, e.g. --unsquash

    def exec_command(self, request: ExecRequest) -> list[str]:
        raise NotImplementedError

    @classmethod
    def scheduler_problem(cls, scheduler: str) -> str:
        """Why this runtime cannot run under ``scheduler`` ("" : it can)."""
        if cls.schedulers and scheduler not in cls.schedulers:
            return (f"{cls.name} runs only through {' or '.join(cls.schedulers)} (scheduler: "
                    f"{scheduler}); use it on a {cls.schedulers[0]} site, or pick another "
                    "runtime (apptainer runs everywhere)")
        return ""

    def image_versions(self, image: str) -> dict[str, str] | None:
        """The Ray and Python versions in ``image`` ({"ray": ..., "python": ...}) where this
        host can read them (None: it cannot; groups' images are then not compared)."""
        return None

    def image_platform(self, image: str) -> str | None:
        """The platform ``image`` says it was built for (its org.rayhpc.platform label) where
        this host can read it (None: it cannot, or the image does not say)."""
        return None

    def image_problem(self, image: str, on_this_host: bool) -> str:
        """Why ``image`` is not an image this runtime runs ("" when it is). ``on_this_host``:
        the launch runs from here (not --dry-run), so a SIF must exist now."""
        if self.image_kind == "sif":
            if on_this_host and not Path(image).is_file():
                return f"{image} is not a file; {self.image_hint}"
            if not image.endswith(".sif") and not Path(image).is_file():
                return f"{self.name} runs a SIF file, not {image}; {self.image_hint}"
        elif self.image_kind == "oci" and (image.endswith(".sif") or image.startswith(("/", "."))):
            # An image name never starts with / or . (a path) nor ends with .sif.
            return (f"{self.name} runs an image name, not a file ({image}); "
                    f"{self.image_hint}")
        return ""

    def mapped(self, request: ExecRequest) -> list[str]:
        """The request's binds, working dir and environment, as this runtime's flags."""
        def flag(template: str, **fields: str) -> list[str]:
            return template.format(**fields).split(" ", 1)

        argv = [arg for path in request.binds for arg in flag(self.bind_flag, path=path)]
        if request.workdir:
            argv += flag(self.workdir_flag, path=request.workdir)
        for key, value in request.env.items():
            argv += flag(self.env_flag, key=key, value=value)
        return argv
