"""The scheduler interface: directives, the per-node launch command, submission, allocation."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Job:
    """What a job script needs, resolved from the site, the flags and the launch."""
    name: str
    nodes: int
    walltime_s: int
    output: str  # the job's own stdout/stderr file
    queue: str = ""
    account: str = ""
    stop_grace_s: int = 60
    extra: dict = field(default_factory=dict)  # scheduler-specific site keys


def parse_walltime(text: str) -> int:
    """Seconds from [[D-]HH:]MM[:SS] or a number of minutes, as schedulers write walltimes."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(text).strip())
    if not match:
        raise ValueError("must be a walltime like 00:30:00 or 30 (minutes)")
    days, a, b, c = match.groups()
    if b is None:  # plain minutes
        seconds = int(a) * 60
    elif c is None:  # HH:MM
        seconds = int(a) * 3600 + int(b) * 60
    else:
        seconds = int(a) * 3600 + int(b) * 60 + int(c)
    seconds += int(days or 0) * 86400
    if seconds <= 0:
        raise ValueError("must be more than zero")
    return seconds


def hms(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Scheduler:
    name = ""
    launcher = ""  # the program that starts one task per node
    job_id_var = ""  # set inside an allocation
    directive = ""  # the job script's directive prefix

    def directives(self, job: Job) -> list[str]:
        raise NotImplementedError

    def launch_command(self, job: Job, command: list[str], options: list[str]) -> list[str]:
        """One task per node, each running ``command``."""
        raise NotImplementedError

    def submit_command(self, script: str) -> tuple[list[str], bool]:
        """The submit command line, and whether the script goes on its standard input."""
        raise NotImplementedError

    def parse_job_id(self, output: str) -> str:
        return output.strip().splitlines()[-1].strip() if output.strip() else ""

    # The job's state: `state_command`'s output, read by `parse_state` (the scheduler's own
    # word, e.g. RUNNING, R, RUN, running; "" once the job left the queue or finished).
    running_states: tuple[str, ...] = ()  # the job script runs: it can be signalled
    finished_states: tuple[str, ...] = ()  # still listed a while, but over

    def state_command(self, job_id: str) -> list[str]:
        raise NotImplementedError

    def parse_state(self, output: str) -> str:
        """The last line's last word (one job asked about, one line of state)."""
        lines = [line.split() for line in output.strip().splitlines() if line.strip()]
        state = lines[-1][-1] if lines and lines[-1] else ""
        return "" if state in self.finished_states else state

    def cancel_command(self, job_id: str, running: bool) -> list[str]:
        """Stop the job the clean way: while it runs, SIGTERM to its job script alone (its trap
        asks the agents to stop and keep the logs, as on the walltime warning); a job still in
        the queue is removed."""
        raise NotImplementedError

    def in_allocation(self, environ: Mapping[str, str]) -> bool:
        return bool(environ.get(self.job_id_var))

    def allocated_nodes(self, environ: Mapping[str, str]) -> int | None:
        raise NotImplementedError


def minutes(seconds: int) -> int:
    return max(1, math.ceil(seconds / 60))
