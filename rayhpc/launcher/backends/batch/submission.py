"""LaunchedRun a launch on a batch system: submit from a login node, or run inside an allocation."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from rayhpc.common.user_error import UserError
from rayhpc.launcher.backends.batch.jobscript import render_job_script
from rayhpc.launcher.backends.batch.rejections import rejection_hint
from rayhpc.launcher.backends.rundir import prepare_run_dir, remove_run_dir
from rayhpc.launcher.backends.watch import RunWatcher
from rayhpc.launcher.contract import (
    RECORD_MAX_BYTES,
    LaunchedRun,
    LaunchSpec,
    RunPaths,
    atomic_write,
    read_bounded,
    read_text_quietly,
)
from rayhpc.launcher.contract.records import JOB_ID
from rayhpc.launcher.resolve.config import Site, run_flags
from rayhpc.launcher.schedulers import SCHEDULERS, Scheduler, current_allocation
from rayhpc.launcher.times import duration, format_walltime


def login_name() -> str:
    """user@host of this machine when it submits (the login node: the SSH tunnel's middle);
    "" inside an allocation, where this host is a compute node."""
    if current_allocation(os.environ) is not None:
        return ""
    return f"{getpass.getuser()}@{socket.getfqdn()}"


def job_state(scheduler_name: str, job_id: str) -> str:
    """The scheduler's word for the job's state (RUNNING, R, RUN, ...); "" once it left the
    queue."""
    scheduler = SCHEDULERS[scheduler_name]
    try:
        result = subprocess.run(scheduler.state_command(job_id), capture_output=True, text=True)
    except OSError as exc:
        raise UserError(f"{scheduler.state_command(job_id)[0]} not found ({exc.strerror}): "
                        f"ask about {scheduler.name} jobs from a login node") from None
    return scheduler.parse_state(result.stdout) if result.returncode == 0 else ""


def describe_job(run: LaunchedRun) -> list[str]:
    """The job's state in the queue and about how much of its walltime is left."""
    if not run.job_id:
        return ["launched inside an allocation"]
    state = job_state(run.spec.scheduler, run.job_id)
    parts = [f"job {run.job_id} {state or 'not in the queue'}"]
    head = run.head
    started = head.time if head else None
    if state and started:  # the head came up seconds after the job started: about right
        left = run.spec.walltime_s - (time.time() - started)
        parts.append(f"~{duration(left)} left of {format_walltime(run.spec.walltime_s)}")
    return parts


def cancel_job(run: LaunchedRun, say: Callable[[str], None]) -> None:
    """Stop a batch run the clean way: its job script gets SIGTERM, as on the walltime warning,
    and the agents stop Ray and keep the logs (a job still waiting in the queue is just
    removed). Inside an allocation (no job id): the stop file asks the head directly."""
    if not run.job_id:
        run.paths.request_stop("rayhpc down")
        say("asked the head to stop (stop file): the run was launched inside an allocation")
        return
    scheduler = SCHEDULERS[run.spec.scheduler]
    state = job_state(scheduler.name, run.job_id)
    if state in scheduler.running_states:
        # The stop file before the signal: a run that may start again (`--restarts`) tells
        # this stop from its allocation's end by it (`contract.attempts.allocation_ended`).
        run.paths.request_stop("rayhpc down")
    cmd = scheduler.cancel_command(run.job_id, running=state in scheduler.running_states)
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 and job_state(scheduler.name, run.job_id):
        raise UserError(f"`{' '.join(cmd)}` failed (exit {result.returncode}): "
                        f"{(result.stderr or result.stdout).strip()[-400:]}")
    say(f"{' '.join(cmd)}: job {run.job_id} ({state or 'left the queue'}) told to stop")


class BatchLaunch:
    def __init__(self, spec: LaunchSpec, site: Site, out: TextIO | None = None):
        self.spec = spec
        self.site = site
        self.scheduler = SCHEDULERS[site.scheduler]
        self.paths = RunPaths(spec.run_dir)
        self.watcher = RunWatcher(spec.run_dir, out)

    def run(self, wait: bool = False, stopped_by: str = "") -> int:
        allocation = current_allocation(os.environ)
        problem = allocation.allocation_problem(len(self.spec.groups), os.environ) \
            if allocation is not None else ""
        if problem:
            raise UserError(f"groups: inside a {allocation.name} allocation: {problem}")
        if allocation is None:
            submit, _ = self.scheduler.submit_command(str(self.paths.job_script))
            if not shutil.which(submit[0]):
                raise UserError(f"{submit[0]} not found: submit from a login node of "
                                f"{self.site.name}, or see the job script with --dry-run")
        prepare_run_dir(self.spec)
        atomic_write(self.paths.job_script, render_job_script(self.spec, self.site), mode=0o755,
                     root=self.paths.dir)
        if allocation is not None:
            self.watcher.say(f"inside a {allocation.name} allocation: running "
                             f"{self.paths.job_script} here")
            with subprocess.Popen(["bash", str(self.paths.job_script)]) as job:
                return self.watcher.follow(InAllocation(job, self.watcher),
                                           self.spec.stop_timeout)
        job_id = self._submit()
        self.watcher.say(f"submitted job {job_id} to {self.scheduler.name}; run dir "
                         f"{self.paths.dir}")
        if self.spec.interactive:
            self.watcher.say(f"job output: {self.paths.job_output}; how to connect: "
                             f"{self.paths.connect} (once every node joined; `rayhpc status "
                             f"{run_flags(self.spec.run_id, self.spec.shared)}`)")
        else:
            self.watcher.say(f"job output: {self.paths.job_output}; driver output: "
                             f"{self.paths.driver_log}")
        if not wait:
            return 0
        # An interactive cluster: --wait returns once it is up; a driver run: at its end.
        code = self.watcher.follow(Submitted(self.scheduler, job_id, self.watcher),
                                   self.spec.stop_timeout, until_up=self.spec.interactive)
        if code is None:
            stopped_by = stopped_by or \
                f"`rayhpc down {run_flags(self.spec.run_id, self.spec.shared)}`"
            self.watcher.say(f"job {job_id} keeps the cluster up until its walltime; "
                             f"{stopped_by} stops it")
            return 0
        return code

    def _submit(self) -> str:
        try:
            job_id = submit_script(self.scheduler, self.paths.job_script, self.spec.shared,
                                   self.site)
        except UserError:
            remove_run_dir(self.paths.dir)
            raise
        atomic_write(self.paths.job_id, job_id + "\n", root=self.paths.dir)
        return job_id


def submit_script(scheduler: Scheduler, script: Path, cwd: Path, site: Site) -> str:
    """Submit a job script; its job id, or UserError in the scheduler's words (with a hint)."""
    cmd, on_stdin = scheduler.submit_command(str(script))
    # A block's script is in blocks/, which the containers can write: read with no link followed.
    text = (read_bounded(script, RECORD_MAX_BYTES) or b"").decode() if on_stdin else None
    result = subprocess.run(cmd, input=text,
                            capture_output=True, text=True, cwd=cwd)
    job_id = scheduler.parse_job_id(result.stdout) if result.returncode == 0 else ""
    if not job_id:
        said = " | ".join(line.strip() for line in
                          (result.stderr or result.stdout).strip().splitlines())
        said = said[-600:] or "no job id in its output"
        raise UserError(f"{cmd[0]} refused the job (exit {result.returncode}): {said}\n"
                        f"{rejection_hint(said, site.name, str(site.path), scheduler.rejections)}")
    return job_id


def ended_without_code(watcher: RunWatcher, why: str) -> int:
    watcher.say(f"{why} without an exit code; see {watcher.paths.job_output}")
    return 1


class InAllocation:
    """The job script running here, inside an allocation (`FollowedRun`)."""

    def __init__(self, job: subprocess.Popen, watcher: RunWatcher):
        self.job = job
        self.watcher = watcher

    def ended(self) -> str:
        return "" if self.job.poll() is None else "the job script ended"

    def gone(self, why: str) -> int:
        return ended_without_code(self.watcher, why)

    def stop(self, signum: int, again: bool) -> bool:
        # The job script traps TERM and asks the agents to stop (the stop file).
        if self.job.poll() is None:
            (self.job.kill if again else self.job.terminate)()
        return not again


class Submitted:
    """A submitted job, followed from the login node (`FollowedRun`)."""

    def __init__(self, scheduler: Scheduler, job_id: str, watcher: RunWatcher):
        self.scheduler = scheduler
        self.job_id = job_id
        self.watcher = watcher

    def ended(self) -> str:
        # A run that starts again may do so as a new job (PBS: its script submits itself
        # again, `Scheduler.requeue_lines`): the run's job id is the one its job_id says.
        paths = self.watcher.paths
        current = read_text_quietly(paths.job_id, paths.dir).strip()
        self.job_id = current if JOB_ID.fullmatch(current) else self.job_id
        return "" if job_state(self.scheduler.name, self.job_id) else \
            f"job {self.job_id} left the queue"

    def gone(self, why: str) -> int:
        return ended_without_code(self.watcher, why)

    def stop(self, signum: int, again: bool) -> bool:
        # Following is only watching: the job runs on.
        self.watcher.say(f"stopped following; job {self.job_id} runs on (the run directory "
                         "keeps its output)")
        return False
