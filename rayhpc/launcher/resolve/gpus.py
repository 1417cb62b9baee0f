"""One GPU count per node drives Ray's count, the scheduler's request and the runtime's GPU
flag (pure: data in, decisions out).

A node's GPUs are a kind (the site's `gpu`, or a group's own: nvidia, amd, intel; "" none) and
a count (`--num-gpus`/`num_gpus`, a group's `num_gpus`; None: not given). Where the site asks
the scheduler for GPUs (each scheduler module's `gpu_requests`: the site's `gpu_request`
option), a node with a kind and a count asks for that many and gets the
runtime's flag; a count of 0, or none, asks for nothing (a CPU launch on a GPU-capable site).
Where the GPUs come with the node (`gpu_request: none`: Polaris, Aurora, CSM sites), the kind
alone gives the flag, as before. A group without a kind asks for none.
"""

from __future__ import annotations

from dataclasses import dataclass

from rayhpc.common.user_error import UserError


@dataclass(frozen=True)
class NodeGpus:
    """What one kind of node gets: ``request`` GPUs asked of the scheduler per node (0: none)
    and ``kind`` for the runtime's GPU flag ("" : no flag)."""
    kind: str = ""
    request: int = 0


def node_gpus(kind: str, count: int | None, requests: bool) -> NodeGpus:
    """The GPUs of a node of GPU ``kind`` ("" none) told ``count`` per node (None: not given)
    on a site that asks the scheduler for GPUs (``requests``) or whose nodes come with them."""
    if not kind or count == 0:
        return NodeGpus()
    if not requests:
        return NodeGpus(kind=kind)
    if count is None:
        return NodeGpus()  # nothing asked: a CPU launch on a site whose nodes may have GPUs
    return NodeGpus(kind=kind, request=count)


def count_problem(site_name: str, kind: str, count: int | None) -> str:
    """Why a launch's GPU count cannot be served on a site of GPU ``kind`` ("" : it can)."""
    if count and not kind:
        return (f"--num-gpus: {count}: site {site_name} has no GPUs (its `gpu` is none or "
                "unset), so its scheduler cannot be asked for any; drop --num-gpus (or give "
                "0), or set `gpu: nvidia`, `amd` or `intel` in a copy of the site file")
    return ""


def group_problem(site_name: str, group: str, kind: str, count: int | None,
                  requests: bool) -> str:
    """Why a group's GPUs cannot be asked for ("" : they can): on a site that asks the
    scheduler for GPUs, a group of GPU ``kind`` needs a count, else its nodes get none."""
    if kind and requests and count is None:
        return (f"group {group}: gpu: {kind}: site {site_name} asks its scheduler for each "
                "node's GPUs, and the group gives no count: add num_gpus=N (GPUs per node) to "
                "the group, or give --num-gpus N")
    return ""


def check_launch_gpus(site_name: str, kind: str, count: int | None, requests: bool,
                      groups: tuple[tuple[str, str, int | None], ...]) -> None:
    """UserError (one line, naming the flag or group and the fix) when the launch's GPUs cannot
    be asked for. ``groups``: (name, kind, count) of each group (count: its own, else the
    launch's)."""
    problems = [count_problem(site_name, kind, count) if not groups else "",
                *(group_problem(site_name, *group, requests) for group in groups)]
    problem = next((p for p in problems if p), "")
    if problem:
        raise UserError(problem)
