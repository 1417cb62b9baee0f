"""The scheduler interface: directives, the per-node launch command, submission, following,
the allocation (node count, rank variables). Walltimes come in seconds (`launcher.times`)."""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field


def minutes(seconds: int) -> int:
    """Whole minutes, rounded up (schedulers that count in minutes must not cut a job short)."""
    return max(1, math.ceil(seconds / 60))


class Shell(str):
    """A word of the launch command that the job script's shell expands (rendered unquoted),
    e.g. a CPU count the script computes from the allocation."""


def shell_join(argv: list[str]) -> str:
    """A command line for the script: every word quoted, except the ones the shell expands."""
    return " ".join(word if isinstance(word, Shell) else shlex.quote(word) for word in argv)


@dataclass(frozen=True)
class JobGroup:
    """One node group of a job (see `launcher.groups`): its nodes run ``command``."""
    name: str
    nodes: int
    command: list[str]  # the node agent in this group's image, through the runtime
    queue: str = ""  # this group's partition / queue ("" : the job's)
    extra: dict = field(default_factory=dict)  # the site's scheduler_options, then the group's
    gpu: str = ""  # "", nvidia, amd or intel: the GPUs this group's nodes bring
    gpus: int = 0  # GPUs per node asked of the scheduler (0: none; see `launcher.gpus`)


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
    extra: dict = field(default_factory=dict)  # the site's scheduler_options
    gpu: str = ""  # "", nvidia, amd or intel: the nodes' GPUs
    exclusive: bool = True  # whole nodes, shared with no other job (site: shared_nodes)
    paths: tuple[str, ...] = ()  # file system paths the job uses (shared dir, image file)
    directives: tuple[str, ...] = ()  # the site's raw `directives`, passed through
    groups: tuple[JobGroup, ...] = ()  # node groups, the head's first (() : one kind of node)
    gpus: int = 0  # GPUs per node asked of the scheduler (0: none; see `launcher.gpus`)
    # The variables the job script exports for the agents (for launchers that do not pass the
    # script's environment to their tasks: they get them on the command line).
    exports: tuple[str, ...] = ()
    restarts: int = 0  # times the job may start again (`--restarts`; see `requeue_lines`)


# What every scheduler's refusal may say (pattern, the setting to check: a key of
# `backends.batch.rejections.SETTINGS`): each scheduler puts its own messages first.
COMMON_REJECTIONS: tuple[tuple[str, str], ...] = (
    (r"[Uu]nknown queue|queue .*(disabled|not exist)", "queue"),
    (r"[Aa]ccount", "account"),
    (r"time limit|walltime", "walltime"),
)


class Scheduler:
    name = ""  # the site file's `scheduler`
    title = ""  # how the documentation and messages name it
    has_qos = False  # queue tables may name a QOS (`queues: qos`)
    # What its submit command's refusals say, as the sites document them (each cited), the
    # first match wins (see `backends.batch.rejections`).
    rejections: tuple[tuple[str, str], ...] = COMMON_REJECTIONS
    launcher = ""  # the program that starts one task per node
    job_id_var = ""  # set inside an allocation
    directive = ""  # the job script's directive prefix
    # The launcher's rank variables (rank 0 becomes the head), in the order trusted. The job
    # script names them to the agent (RAYHPC_RANK_VARS) and runtimes that pass no host
    # environment pass them on.
    rank_vars: tuple[str, ...] = ()
    # A shell command printing the host where rank 0 (the head) runs, the allocation's first:
    # workers reach the head's agent there without reading the shared file system. ""
    # (unknown): they learn it from head.json, looked at every 15 s.
    head_host = ""
    # Host variables a container that passes no host environment (podman-hpc) must be given
    # for the launcher's tasks to work (`-e NAME`, `-e PREFIX*`).
    env_passthrough: tuple[str, ...] = ()
    # The site file's scheduler_options this scheduler knows, with the types they take.
    options: dict[str, tuple[type, ...]] = {}
    # True where the scheduler itself signals the job before the walltime kill (Slurm's
    # --signal, LSF's -wa/-wt); elsewhere a timer in the job script asks the agents to stop.
    warns_before_walltime = False
    # Why the scheduler cannot run node groups (each its own kind of node and image), naming
    # what it would take; "" where it can (see `launcher.groups`).
    groups_unsupported = ""

    # Why a job cannot put itself back in the queue for a run's next attempt ("" : it can,
    # with `requeue_lines`; see `launcher.contract.attempts`).
    requeue_unsupported = ""

    # How a site file's `scheduler_options.gpu_request` may say GPUs are asked for, the first
    # the default; "none": the GPUs come with the node (asked for by no option).
    gpu_requests: tuple[str, ...] = ("none",)

    def requests_gpus(self, options: Mapping[str, object]) -> bool:
        """Whether a job on a site with these scheduler_options asks the scheduler for its
        GPUs (False: the nodes come with theirs, or the scheduler has no way to ask)."""
        return options.get("gpu_request", self.gpu_requests[0]) != "none"

    def task_rank_vars(self, options: Mapping[str, object]) -> tuple[str, ...]:
        """The rank variables of the tasks this site's launcher starts (rank_vars, unless the
        site picks another launcher)."""
        return self.rank_vars

    def launcher_for(self, options: Mapping[str, object]) -> str:
        """The program that starts one task per node on a site with these options."""
        return self.launcher

    def groups_problem(self, options: Mapping[str, object]) -> str:
        """Why a site with these scheduler_options cannot run node groups ("" : it can)."""
        return self.groups_unsupported

    def directives(self, job: Job) -> list[str]:
        """The scheduler's own directive lines (without the site's raw ones)."""
        raise NotImplementedError

    def render_directives(self, job: Job) -> list[str]:
        """Every directive line of the job script: the scheduler's, then the site's own."""
        return [*self.directives(job), *self.restart_directives(job), *self.site_directives(job)]

    def restart_directives(self, job: Job) -> list[str]:
        """A job that may start again (``job.restarts``): the directives that let the
        scheduler rerun it itself (a node's failure, a preemption) and keep every attempt's
        output in the job's output file."""
        return self.prefixed(self.requeue_options()) if job.restarts else []

    def requeue_options(self) -> list[str]:
        return []

    def requeue_lines(self, job_script: str, job_id_file: str) -> list[str]:
        """Job script lines that put this job back in the queue for the run's next attempt
        (``job_script``, ``job_id_file``: shell words for the run's job.sh and job_id)."""
        raise NotImplementedError

    def last_attempt_lines(self) -> list[str]:
        """Lines run as the last attempt the run allows starts: the scheduler must not rerun
        the job once more by itself (none where it cannot be told; the next attempt's script
        then ends at once, saying so)."""
        return []

    def prefixed(self, options: list[str]) -> list[str]:
        """Options as directive lines (`#SBATCH --nodes=4`)."""
        return [f"{self.directive} {option}" for option in options]

    def site_directives(self, job: Job) -> list[str]:
        """The site's raw `directives`, prefixed unless a line already is."""
        return [line if line.startswith(self.directive) else f"{self.directive} {line}"
                for line in job.directives]

    def option_problem(self, options: Mapping[str, object]) -> str:
        """Why the site's scheduler_options do not make sense together ("" : they do)."""
        return choice_problem(options, "gpu_request", self.gpu_requests)

    def head_host_for(self, job: Job) -> str:
        """The shell command printing the head's host for ``job`` ("" : unknown)."""
        return self.head_host

    def prologue(self, job: Job) -> list[str]:
        """Job script lines run before the launch command (e.g. computing a CPU count)."""
        return []

    def launch_lines(self, job: Job, command: list[str], options: list[str]) -> list[str]:
        """Job script lines that start every node's agent in the background and leave the
        PID to wait for in ``step``. ``command``: the agent of a job without groups (a grouped
        job's commands are in ``job.groups``)."""
        return [shell_join(self.launch_command(job, command, options)) + " &", "step=$!"]

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

    def allocated_nodes(self, environ: Mapping[str, str],
                        options: Mapping[str, object] | None = None) -> int | None:
        """The node count of the allocation we are in (None: not known); ``options``: the
        site's scheduler_options (e.g. LSF's csm)."""
        raise NotImplementedError

    def allocation_problem(self, groups: int, environ: Mapping[str, str]) -> str:
        """Why the job script of a launch with ``groups`` node groups (0: none) cannot run in
        the allocation we are in ("" : it can)."""
        return ""


def choice_problem(options: Mapping[str, object], key: str, choices: tuple[str, ...]) -> str:
    """Why ``options[key]`` is not one of ``choices`` ("" : it is, or it is not set)."""
    if key in options and options[key] not in choices:
        return f"{key}: {options[key]!r} is not one of: {', '.join(choices)}"
    return ""


def env_words(names: tuple[str, ...]) -> list[str]:
    """`env NAME="$NAME" ...`: the job script's values of ``names`` on a task's command line,
    for launchers that start tasks without the script's environment."""
    return ["env", *(Shell(f'{name}="${{{name}}}"') for name in names)]


def filesystem_names(paths: tuple[str, ...], always: list[str],
                     mounts: Mapping[str, str]) -> list[str]:
    """The names of the file systems a job uses (ALCF's `filesystems=`): ``always``, then the
    one of each path by its longest mount prefix in ``mounts`` (prefix -> name)."""
    names = list(always)
    for path in paths:
        matches = [prefix for prefix in mounts
                   if path == prefix or path.startswith(prefix.rstrip("/") + "/")]
        if matches:
            name = mounts[max(matches, key=len)]
            if name not in names:
                names.append(name)
    return names
