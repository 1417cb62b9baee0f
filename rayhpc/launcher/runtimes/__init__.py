"""Container runtimes: how to run a command in an image on a node. One module per runtime,
each a pure command-line builder behind the same small interface."""

from __future__ import annotations

from rayhpc.launcher.runtimes.apptainer import Apptainer, Singularity
from rayhpc.launcher.runtimes.oci import Bare, Docker, PodmanHPC, Shifter
from rayhpc.launcher.runtimes.pyxis import Pyxis
from rayhpc.launcher.runtimes.runtime_interface import ExecRequest, Runtime

RUNTIMES: dict[str, type[Runtime]] = {
    cls.name: cls for cls in (Apptainer, Singularity, Shifter, PodmanHPC, Pyxis, Docker, Bare)}


def runtime(name: str, options: list[str] | None = None) -> Runtime:
    return RUNTIMES[name](options)


__all__ = ["RUNTIMES", "ExecRequest", "Runtime", "runtime"]
