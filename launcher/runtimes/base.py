"""The runtime interface: turn "run this command in this image" into a command line."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ExecRequest:
    image: str
    command: list[str]
    binds: list[str] = field(default_factory=list)  # host paths, mounted at the same path
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = ""
    gpu: str = ""  # "", "nvidia" or "amd"
    home: str = ""  # a writable node-local directory for HOME ("" : the runtime's choice)


class Runtime:
    name = ""
    # How this runtime spells a bind mount (same path inside), the working dir and a variable.
    bind_flag = ""
    workdir_flag = ""
    env_flag = ""

    def __init__(self, options: list[str] | None = None):
        self.options = list(options or [])  # the site's own flags, e.g. --unsquash

    def exec_command(self, request: ExecRequest) -> list[str]:
        raise NotImplementedError

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
