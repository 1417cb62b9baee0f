"""A site's queue table (`queues:` in the site file) and the choice of a queue for a launch.

    queues:                 # in the order they are tried when no --queue is given
      debug: {min_nodes: 1, max_nodes: 2, max_walltime: "01:00:00"}
      prod: {min_nodes: 10, max_walltime: "24:00:00"}
      demand: {max_nodes: 56, auto: false}   # checked when asked for, never picked

Pure: data in, a name or a UserError out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from containers.datafiles import check_keys
from containers.errors import UserError
from launcher.times import format_walltime, parse_walltime

QUEUE_KEYS = ("min_nodes", "max_nodes", "max_walltime", "auto")


@dataclass(frozen=True)
class Queue:
    name: str
    min_nodes: int = 1
    max_nodes: int | None = None  # None: no limit known
    max_walltime_s: int | None = None
    auto: bool = True  # picked by node count when no queue is given

    def nodes_text(self) -> str:
        if self.max_nodes is None:
            return f"{self.min_nodes} or more nodes"
        return f"{self.min_nodes} to {self.max_nodes} nodes"

    def describe(self) -> str:
        limit = (f" for at most {format_walltime(self.max_walltime_s)}"
                 if self.max_walltime_s else "")
        return f"{self.name} ({self.nodes_text()}{limit})"

    def problem(self, nodes: int, walltime_s: int) -> str:
        """Why this queue cannot take the job ("" when it can)."""
        if nodes < self.min_nodes or (self.max_nodes is not None and nodes > self.max_nodes):
            return f"takes {self.nodes_text()}, not {nodes}"
        if self.max_walltime_s is not None and walltime_s > self.max_walltime_s:
            return (f"runs jobs for at most {format_walltime(self.max_walltime_s)}, not "
                    f"{format_walltime(walltime_s)}")
        return ""


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
        values: dict[str, Any] = {}
        for key in ("min_nodes", "max_nodes"):
            if key in limits:
                if not isinstance(limits[key], int) or limits[key] < 1:
                    raise UserError(f"{where}{key}: must be a whole number, 1 or more")
                values[key] = limits[key]
        if "max_walltime" in limits:
            try:
                values["max_walltime_s"] = parse_walltime(limits["max_walltime"])
            except ValueError as exc:
                raise UserError(f"{where}max_walltime: {limits['max_walltime']!r}: {exc}") \
                    from None
        if "auto" in limits:
            if not isinstance(limits["auto"], bool):
                raise UserError(f"{where}auto: must be true or false")
            values["auto"] = limits["auto"]
        queues.append(Queue(name=str(name), **values))
    return queues


def choose_queue(queues: list[Queue], asked: str | None, nodes: int, walltime_s: int,
                 site: str) -> str | None:
    """The queue of a launch: the one asked for (checked against the table where it is in
    it), else the first automatic queue of the table that takes the job, else None (the
    scheduler's default queue) when the site has no table."""
    table = {queue.name: queue for queue in queues}
    if asked:
        queue = table.get(asked)
        problem = queue.problem(nodes, walltime_s) if queue else ""
        if problem:
            fits = [q.name for q in queues if not q.problem(nodes, walltime_s)]
            hint = (f"use --queue {fits[0]} or leave --queue out (site {site} picks "
                    "by node count)" if fits else "lower --nodes or --walltime")
            raise UserError(f"--queue: {asked} {problem} (site {site}'s queue table: "
                            f"{queue.describe()}); {hint}")
        return asked
    if not queues:
        return None
    for queue in queues:
        if queue.auto and not queue.problem(nodes, walltime_s):
            return queue.name
    tried = ", ".join(q.describe() for q in queues if q.auto)
    raise UserError(f"--nodes {nodes} --walltime {format_walltime(walltime_s)}: no queue of "
                    f"site {site} takes this job ({tried}); change --nodes or --walltime, or "
                    "give --queue")
