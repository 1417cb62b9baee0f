"""Batch schedulers: one module each, behind the interface in base.py, registered below (one
line each). Everything that differs between schedulers is an attribute or a method of theirs:
nothing outside this package compares a scheduler's name."""

from __future__ import annotations

from collections.abc import Mapping

from rayhpc.launcher.schedulers.cobalt import Cobalt
from rayhpc.launcher.schedulers.lsf import LSF
from rayhpc.launcher.schedulers.pbs import PBS
from rayhpc.launcher.schedulers.scheduler_interface import Job, Scheduler, Shell
from rayhpc.launcher.schedulers.slurm import Slurm

SCHEDULERS: dict[str, Scheduler] = {s.name: s for s in (Slurm(), PBS(), Cobalt(), LSF())}


def batch_scheduler(name: str) -> Scheduler | None:
    """The batch scheduler a site file's `scheduler` names (None: a site with none, local)."""
    return SCHEDULERS.get(name)


def qos_titles() -> str:
    """The schedulers whose queue tables may name a QOS, as messages name them."""
    return " and ".join(s.title for s in SCHEDULERS.values() if s.has_qos)


def current_allocation(environ: Mapping[str, str]) -> Scheduler | None:
    """The scheduler whose allocation we are in, if any."""
    for scheduler in SCHEDULERS.values():
        if scheduler.in_allocation(environ):
            return scheduler
    return None


def allocated_nodes(environ: Mapping[str, str], site_scheduler: str,
                    site_options: Mapping[str, object]) -> int | None:
    """The node count of the allocation we are in (None: none, or not known); the site's
    scheduler_options count only where the allocation is its scheduler's."""
    allocation = current_allocation(environ)
    if allocation is None:
        return None
    options = site_options if allocation.name == site_scheduler else {}
    return allocation.allocated_nodes(environ, options)


__all__ = ["SCHEDULERS", "Job", "Scheduler", "Shell", "allocated_nodes", "batch_scheduler",
           "current_allocation", "qos_titles"]
