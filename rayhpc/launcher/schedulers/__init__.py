"""Batch schedulers: one module each, behind the interface in base.py."""

from __future__ import annotations

from rayhpc.launcher.schedulers.base import Job, Scheduler, Shell
from rayhpc.launcher.schedulers.cobalt import Cobalt
from rayhpc.launcher.schedulers.lsf import LSF
from rayhpc.launcher.schedulers.pbs import PBS
from rayhpc.launcher.schedulers.slurm import Slurm

SCHEDULERS: dict[str, Scheduler] = {s.name: s for s in (Slurm(), PBS(), Cobalt(), LSF())}


def current_allocation(environ) -> Scheduler | None:
    """The scheduler whose allocation we are in, if any."""
    for scheduler in SCHEDULERS.values():
        if scheduler.in_allocation(environ):
            return scheduler
    return None


__all__ = ["SCHEDULERS", "Job", "Scheduler", "Shell", "current_allocation"]
