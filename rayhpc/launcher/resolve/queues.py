"""A site's queue table (`queues:` in the site file) and the choice of a queue for a launch.

    queues_source: "ALCF user guides, docs/polaris/running-jobs/index.md, Queues"
    queues_read: "2026-11-29"   # the day the table was read against its source
    queues:                 # in the order they are tried when no --queue is given
      debug: {min_nodes: 1, max_nodes: 2, min_walltime: "5", max_walltime: "01:00:00"}
      prod:                 # a routing queue: the job goes to the route that takes its size
        min_nodes: 10
        max_nodes: 496
        routes:
          small: {min_nodes: 10, max_nodes: 24, max_walltime: "03:00:00"}
          large: {min_nodes: 25, max_nodes: 496, max_walltime: "24:00:00"}
      demand: {max_nodes: 56, auto: false}   # checked when asked for, never picked
      debug-qos: {qos: true}                 # a Slurm QOS, not a partition (--qos=)

A launch that no queue takes is refused, naming the limits and the source; a queue the user
names (--queue) that the table says cannot take the job only gets a warning (tables age: the
scheduler decides). Pure: data in, a name, a warning or a UserError out.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayhpc.common.user_error import UserError
from rayhpc.common.yaml_files import check_keys
from rayhpc.launcher.times import format_walltime, parse_walltime

LIMIT_KEYS = ("min_nodes", "max_nodes", "min_walltime", "max_walltime")
QUEUE_KEYS = (*LIMIT_KEYS, "auto", "qos", "routes")


@dataclass(frozen=True)
class Queue:
    name: str
    min_nodes: int = 1
    max_nodes: int | None = None  # None: no limit known
    min_walltime_s: int | None = None
    max_walltime_s: int | None = None
    auto: bool = True  # picked by node count when no queue is given
    qos: bool = False  # a Slurm QOS (rendered --qos=NAME), not a partition
    # A routing queue's execution queues (or a partition's size bins): the job must fit one.
    routes: tuple[Queue, ...] = ()

    def nodes_text(self) -> str:
        if self.max_nodes is None:
            return f"{self.min_nodes} or more nodes"
        return f"{self.min_nodes} to {self.max_nodes} nodes"

    def describe(self) -> str:
        limits = [self.nodes_text()]
        if self.min_walltime_s:
            limits.append(f"at least {format_walltime(self.min_walltime_s)}")
        if self.max_walltime_s:
            limits.append(f"at most {format_walltime(self.max_walltime_s)}")
        text = f"{self.name} ({', '.join(limits)}"
        if self.routes:
            text += "; routes " + ", ".join(route.describe() for route in self.routes)
        return text + ")"

    def problem(self, nodes: int, walltime_s: int) -> str:
        """Why this queue cannot take the job ("" when it can)."""
        if nodes < self.min_nodes or (self.max_nodes is not None and nodes > self.max_nodes):
            return f"takes {self.nodes_text()}, not {nodes}"
        if self.max_walltime_s is not None and walltime_s > self.max_walltime_s:
            return (f"runs jobs for at most {format_walltime(self.max_walltime_s)}, not "
                    f"{format_walltime(walltime_s)}")
        if self.min_walltime_s is not None and walltime_s < self.min_walltime_s:
            return (f"runs jobs of at least {format_walltime(self.min_walltime_s)}, not "
                    f"{format_walltime(walltime_s)}")
        if not self.routes or any(not route.problem(nodes, walltime_s)
                                  for route in self.routes):
            return ""
        sized = [route for route in self.routes if nodes >= route.min_nodes
                 and (route.max_nodes is None or nodes <= route.max_nodes)]
        if sized:
            return (f"routes {nodes} nodes to {sized[0].name}, which "
                    f"{sized[0].problem(nodes, walltime_s)}")
        return f"routes no job of {nodes} nodes"


def _limits(limits: dict, where: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in ("min_nodes", "max_nodes"):
        if key in limits:
            if not isinstance(limits[key], int) or isinstance(limits[key], bool) \
                    or limits[key] < 1:
                raise UserError(f"{where}{key}: must be a whole number, 1 or more")
            values[key] = limits[key]
    for key in ("min_walltime", "max_walltime"):
        if key in limits:
            try:
                values[f"{key}_s"] = parse_walltime(limits[key])
            except ValueError as exc:
                raise UserError(f"{where}{key}: {limits[key]!r}: {exc}") from None
    for key in ("auto", "qos"):
        if key in limits:
            if not isinstance(limits[key], bool):
                raise UserError(f"{where}{key}: must be true or false")
            values[key] = limits[key]
    return values


def parse_queues(data: Any, path: Path) -> list[Queue]:
    """The `queues:` mapping of a site file; UserError naming the file and key."""
    if not isinstance(data, dict):
        raise UserError(f"{path}: queues: must be a mapping of queue name to limits "
                        f"({', '.join(QUEUE_KEYS)})")
    queues = []
    for name, limits in data.items():
        where = f"{path}: queues: {name}: "
        limits = limits or {}
        if not isinstance(limits, dict):
            raise UserError(f"{where}must be a mapping ({', '.join(QUEUE_KEYS)})")
        check_keys(limits, QUEUE_KEYS, path, f"queues: {name}: ")
        values = _limits(limits, where)
        routes = limits.get("routes") or {}
        if not isinstance(routes, dict):
            raise UserError(f"{where}routes: must be a mapping of route name to limits "
                            f"({', '.join(LIMIT_KEYS)})")
        parsed = []
        for route, route_limits in routes.items():
            at = f"{where}routes: {route}: "
            if not isinstance(route_limits, dict):
                raise UserError(f"{at}must be a mapping ({', '.join(LIMIT_KEYS)})")
            check_keys(route_limits, LIMIT_KEYS, path, f"queues: {name}: routes: {route}: ")
            parsed.append(Queue(name=str(route), **_limits(route_limits, at)))
        queues.append(Queue(name=str(name), routes=tuple(parsed), **values))
    return queues


def _table(site: str, source: str) -> str:
    return f"site {site}'s queue table{f' ({source})' if source else ''}"


def choose_queue(queues: list[Queue], asked: str | None, nodes: int, walltime_s: int,
                 site: str, source: str = "") -> str | None:
    """The queue of a launch: the one asked for (as given: see `queue_warning`), else the
    first automatic queue of the table that takes the job, else None (the scheduler's default
    queue) when the site has no table. ``source``: where the table comes from, and when it
    was read (named in the refusal)."""
    if asked:
        return asked
    if not queues:
        return None
    for queue in queues:
        if queue.auto and not queue.problem(nodes, walltime_s):
            return queue.name
    tried = "; ".join(f"{q.describe()}: {q.problem(nodes, walltime_s)}" for q in queues
                      if q.auto)
    raise UserError(f"--nodes {nodes} --walltime {format_walltime(walltime_s)}: no queue of "
                    f"{_table(site, source)} takes this job: {tried}; change --nodes or "
                    "--walltime, or give --queue (checked only by the scheduler)")


def queue_warning(queues: list[Queue], asked: str | None, nodes: int, walltime_s: int,
                  site: str, source: str = "") -> str:
    """A warning when the queue the user asked for cannot take the job by the site's table
    ("" : it can, or it is not in the table). The launch goes on: the scheduler decides."""
    queue = next((q for q in queues if q.name == asked), None)
    problem = queue.problem(nodes, walltime_s) if queue else ""
    if not problem:
        return ""
    fits = [q.name for q in queues if q.auto and not q.problem(nodes, walltime_s)]
    hint = (f"--queue {fits[0]} (or no --queue) fits" if fits
            else "no queue of the table fits")
    return (f"warning: --queue: {asked} {problem} by {_table(site, source)}: "
            f"{queue.describe()}; {hint}; submitting anyway (the scheduler decides, and "
            "tables age)")


def queue_table_lines(queues: list[Queue], source: str) -> list[str]:
    """A site's queue table as `rayhpc sites --site SITE` prints it: each queue's limits, its
    routes, and where the table comes from and when it was read."""
    if not queues:
        return ["queues: no table (the scheduler's default queue; limits not checked here)"]
    lines = [f"queues ({source or 'source not given'}):"]
    for queue in queues:
        kind = ", ".join(word for word, on in (("a QOS", queue.qos),
                                               ("only when asked for", not queue.auto)) if on)
        lines.append(f"  {dataclasses.replace(queue, routes=()).describe()}"
                     + (f" [{kind}]" if kind else ""))
        lines += [f"    routes to {route.describe()}" for route in queue.routes]
    return lines


def queue_is_qos(queues: list[Queue] | tuple[Queue, ...], name: str | None) -> bool:
    """Whether the table marks ``name`` as a QOS (Slurm: --qos=NAME, not --partition)."""
    return any(queue.qos for queue in queues if queue.name == name)
