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

    def __init__(self, options: list[str] | None = None):
        self.options = list(options or [])  # the site's own flags, e.g. --unsquash

    def exec_command(self, request: ExecRequest) -> list[str]:
        raise NotImplementedError
