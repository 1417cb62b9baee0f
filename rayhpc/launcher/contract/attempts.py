"""A run's attempts (`--restarts N`): when its allocation ends before its driver does (the
walltime, a preemption, a node lost), the run starts again in the same run directory. Each
attempt claims attempts/<n>/ when it starts (the job script, or the local launcher); the files
of the attempt before it move there, so that the run directory's top always holds the current
attempt's, read as they always were. Standard library only: the head decides whether its run
goes on (`restart_reason`), the launcher and the job script act on it."""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass

from rayhpc.launcher.contract.atomic_io import atomic_write
from rayhpc.launcher.contract.json_types import RecordError
from rayhpc.launcher.contract.launch_spec import LaunchSpec
from rayhpc.launcher.contract.records import JOB_ID, TimingRecord, read_record
from rayhpc.launcher.contract.run_paths import RunPaths
from rayhpc.launcher.contract.untrusted_files import (
    directory_of,
    list_names,
    read_text_quietly,
)

# What the driver is told (`rayhpc launch --restarts N`): its attempt (1, 2, ...), "1" from the
# second on, and where its checkpoints go (in the shared directory: every attempt sees it).
ATTEMPT_ENV = "RAYHPC_ATTEMPT"
RESUME_ENV = "RAYHPC_RESUME"
CHECKPOINT_ENV = "RAYHPC_CHECKPOINT_DIR"

# The stop requests that mean the allocation is ending, not the user or the driver: the job
# script's (a scheduler's walltime warning or its TERM, e.g. a preemption; its walltime timer)
# and the local head's own walltime. `rayhpc down` writes "rayhpc down" before it signals the
# job, so its stop is never one of these.
ALLOCATION_ENDS = ("job script:", "walltime:")
ATTEMPT_DIR = re.compile(r"[1-9][0-9]{0,5}")
STARTED = "started"  # attempts/<n>/started: "<epoch seconds> <job id>" of the attempt's start
LATEST_TIME = 1e11  # epoch seconds (the year 5138): anything later in `started` is not a time


def allocation_ended(stop: str) -> bool:
    """Whether a stop request (the stop file's first line) came from the allocation's end."""
    return stop.startswith(ALLOCATION_ENDS)


def restart_reason(spec: LaunchSpec, attempt: int, stop: str, code: int,
                   driver_finished: bool) -> str:
    """Why the run starts again after this attempt ("" : it ends here). It does when the
    allocation ended first (``stop``: who asked), or, with restart_on_failure, when the driver
    (or the launch) failed on its own; never past spec.restarts, never for `rayhpc down` or a
    driver that finished."""
    if attempt > spec.restarts:
        return ""
    if driver_finished:  # it exited on its own, before any stop was asked
        return f"the driver exited with {code}" if code and spec.restart_on_failure else ""
    if allocation_ended(stop):
        return f"its allocation ended ({stop})"
    if code and spec.restart_on_failure and stop.startswith("head:"):
        return f"it failed (exit code {code})"
    return ""


def end_attempt(paths: RunPaths, spec: LaunchSpec, attempt: int, code: int,
                driver_finished: bool) -> tuple[str, str]:
    """The head's last word on its attempt (`restart_reason`): when the run goes on, why, in
    `restarting` (written before exit_code, so that no reader takes this attempt's end for the
    run's) and returned to be said; when the last attempt allowed ended at its allocation's
    end, the error that says so. ("", "") : an end like any run's."""
    stop = paths.read_stop_request()
    reason = restart_reason(spec, attempt, stop, code, driver_finished)
    allowed = spec.restarts + 1
    if reason:
        atomic_write(paths.restarting, f"attempt {attempt} ended: {reason}; attempt "
                     f"{attempt + 1} of {allowed} follows\n")
        return f"attempt {attempt} ended: {reason}; the run starts again", ""
    if allocation_ended(stop) and not driver_finished:
        before = "" if spec.interactive else " before the driver"
        return "", (f"attempt {attempt} of {allowed} ended{before}: its allocation ended "
                    f"({stop}); no restarts left (--restarts {spec.restarts})")
    return "", ""


def attempt_numbers(paths: RunPaths) -> list[int]:
    """The attempts begun so far, in order (one read of attempts/; [] : the run has none)."""
    return sorted(int(name) for name in list_names(paths.attempts, paths.dir)
                  if ATTEMPT_DIR.fullmatch(name))


def current_attempt(paths: RunPaths) -> int:
    """The attempt running now (1 for a run without restarts)."""
    numbers = attempt_numbers(paths)
    return numbers[-1] if numbers else 1


def attempt_started(paths: RunPaths, attempt: int) -> tuple[float, str]:
    """When an attempt started and its job id (0.0, "" : not recorded)."""
    words = read_text_quietly(paths.attempt_dir(attempt) / STARTED, paths.dir).split()
    try:
        started = float(words[0])
    except (IndexError, ValueError):
        return 0.0, ""
    # A container could write it: only a time a clock could show (not nan, inf or 1e308).
    if not 0 < started < LATEST_TIME:
        return 0.0, ""
    job_id = words[1] if len(words) > 1 else ""
    return started, job_id if JOB_ID.fullmatch(job_id) else ""


def begin_attempt(paths: RunPaths, job_id: str = "") -> int:
    """Claim the next attempt (attempts/<n>/, made once: mkdir is atomic) and move the files
    of the one before it there; the job script does the same in shell (`backends.batch.
    jobscript.attempt_lines`). The containers could write the run directory: every directory
    is opened from it with no link followed (the launcher may be root), and the ones made
    (attempts/<n>/, nodes/ and logs/ anew) get the run directory's group and mode."""
    status = paths.dir.stat()
    with directory_of(paths.spec, paths.dir) as top:
        _private_dir(top, paths.attempts.name, status)
        begun = attempt_numbers(paths)
        attempt = begun[-1] + 1 if begun else 1
        with directory_of(paths.attempt_dir(attempt), paths.dir) as attempts:
            _private_dir(attempts, str(attempt), status, exist_ok=False)
        if attempt > 1:
            with directory_of(paths.attempt_dir(attempt - 1) / STARTED, paths.dir) as kept:
                for path in paths.attempt_files():
                    with contextlib.suppress(FileNotFoundError):
                        os.rename(path.name, path.name, src_dir_fd=top, dst_dir_fd=kept)
        for path in (paths.nodes, paths.logs):
            _private_dir(top, path.name, status)
    atomic_write(paths.attempt_dir(attempt) / STARTED, f"{time.time():.3f} {job_id}\n",
                 root=paths.dir)
    return attempt


def _private_dir(parent: int, name: str, like: os.stat_result, exist_ok: bool = True) -> None:
    """A directory ``name`` in the directory open as ``parent`` (made unless there), with the
    group and mode of ``like``, set through a descriptor opened with no link followed."""
    try:
        os.mkdir(name, 0o700, dir_fd=parent)
    except FileExistsError:
        if not exist_ok:
            raise
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
    try:
        if os.geteuid() == 0:
            os.fchown(fd, -1, like.st_gid)
        os.fchmod(fd, like.st_mode & 0o7777)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class EndedAttempt:
    """An attempt that ended, as the files it left in attempts/<n>/ tell it."""
    number: int
    started: float  # epoch seconds (0.0: not recorded)
    ended: float  # its teardown's end, else the next attempt's start (0.0: not known)
    why: str  # why it ended and the run went on, in words
    job_id: str = ""


def ended_attempts(paths: RunPaths) -> list[EndedAttempt]:
    """The attempts before the current one, oldest first (one read of attempts/, and a few
    small files per ended attempt: at most restarts + 1 of them)."""
    numbers = attempt_numbers(paths)
    ended = []
    for number, following in zip(numbers, numbers[1:]):
        kept = RunPaths(paths.attempt_dir(number))
        started, job_id = attempt_started(paths, number)
        try:
            timing = read_record(kept.timing, TimingRecord, paths.dir)
        except RecordError:
            timing = None
        end = (timing.t_teardown_done if timing else None) or attempt_started(paths,
                                                                              following)[0]
        said = paths.first_line(kept.restarting)
        why = said.split(": ", 1)[-1].split("; attempt ", 1)[0] if said else (
            "no word from its head: its nodes were lost (a node's failure, a preemption or "
            "the scheduler's kill)")
        ended.append(EndedAttempt(number, started, end or 0.0, why, job_id))
    return ended
