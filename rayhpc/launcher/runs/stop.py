"""`rayhpc down`: stop a run the clean way, or remove what a run left on this machine."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from rayhpc.common.user_error import UserError
from rayhpc.launcher.backends import BACKENDS
from rayhpc.launcher.backends.watch import summary
from rayhpc.launcher.contract import FINAL_STATES, record_end_for_the_head, remove
from rayhpc.launcher.runs.grow_shrink import release_all, remove_blocks
from rayhpc.launcher.runs.jobs import ClusterError
from rayhpc.launcher.runs.run import Run, leftover_runs, load_run
from rayhpc.launcher.runs.run_lock import changing

Say = Callable[[str], None]
STATE_CHECK_S = 2.0  # how often `down` asks the backend whether the nodes still run
JOB_QUEUE_WAIT_S = 60  # after the exit code: until the batch job has left the queue
LOST_EXIT_CODE = 1  # a run whose nodes were gone without an exit code: the launch failed
STOPPED_EXIT_CODE = 143  # a run stopped before it started: as a SIGTERM'd one


def remove_leftovers(say: Say) -> None:
    """`rayhpc down` without a run: remove what runs left on this machine that are provably
    dead (a launcher killed, a run that ended); a run that may be alive is kept, and named
    with the command that stops it the clean way (its logs kept)."""
    removed = kept = False
    for backend in BACKENDS:
        for run_id in backend.leftovers():
            why = backend.why_alive(run_id)
            if why:
                run_dir = backend.run_dir_of(run_id)
                where = f" --shared {Path(run_dir).parent.parent}" if run_dir else ""
                say(f"kept run {run_id}: it may be alive ({why}); `rayhpc down --run "
                    f"{run_id}{where}` stops it the clean way")
                kept = True
                continue
            say(f"removed run {run_id}: {backend.remove_leftovers(run_id)}")
            removed = True
    if not removed and not kept:
        say("nothing to remove")


def down_by_id(run_id: str, shared: Path, say: Say) -> int:
    """`rayhpc down --run ID`: stop the run if it has not finished; else remove what it left on
    this machine's engine (a run whose launcher died); else say why there is nothing to do.

    A run found on the engine whose run directory is in another shared dir than the one asked
    for is refused (UserError naming --shared): removing it by force would lose its logs and
    leave its run directory saying "up" forever."""
    found = load_run(run_id, shared)
    if found is not None and found.exit_code is None:
        return down(found, say)
    leftovers = leftover_runs()
    if run_id in leftovers:
        backend = next(b for b in BACKENDS if run_id in b.leftovers())
        if found is not None:
            found.backend.cleanup(found, say)
            say(f"removed what run {run_id} left")
            return 0
        elsewhere = Path(backend.run_dir_of(run_id) or shared / "runs" / run_id)
        if elsewhere.parent.parent != shared and Run.load(elsewhere) is not None:
            raise UserError(f"--shared: run {run_id} was launched with --shared "
                            f"{elsewhere.parent.parent}, not {shared}; `rayhpc down --run "
                            f"{run_id} --shared {elsewhere.parent.parent}` stops it the clean "
                            "way (its logs kept)")
        say(f"removed run {run_id}: {backend.remove_leftovers(run_id)}")
        return 0
    if found is not None:
        found.require_unfinished()
    raise UserError(f"--run: no containers or networks of run {run_id!r} here, and no run "
                    f"{run_id!r} in {shared / 'runs'}; give --shared DIR where it was launched "
                    f"(runs with containers here: {', '.join(leftovers) or 'none'})")


def down(run: Run, say: Say, timeout: float | None = None) -> int:
    """Stop a run that has not finished, the clean way (the agents stop Ray and keep the
    logs), wait until the run directory says every node stopped, remove what it left here.
    The run's exit code."""
    backend = run.backend
    # Under the run's change lock: a grow either came first (its block is listed here) or
    # finds the stop file and is refused. Every block is recorded as released (the head's
    # teardown stops their nodes with the rest); their jobs (containers) are removed once
    # the run has ended.
    with changing(run.paths.change_lock, "rayhpc down", say):
        run.require_unfinished()
        blocks = release_all(run)
        backend.stop(run, say)
        run.paths.request_stop("rayhpc down")
        if run.paths.exists(run.paths.restarting):  # between two attempts: none follows
            remove(run.paths.restarting, run.paths.dir)
            say(f"run {run.run_id} was between two attempts: no attempt follows")
    timeout = timeout or run.spec.stop_timeout + run.spec.stop_grace + 60
    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + STATE_CHECK_S
    while run.exit_code is None:
        if time.monotonic() > deadline:
            raise ClusterError(f"run {run.run_id} did not stop within {timeout:.0f} s; see "
                               f"{run.paths.dir} (`rayhpc status {run.flags}`)")
        if time.monotonic() > next_check:
            next_check = time.monotonic() + STATE_CHECK_S
            if backend.running(run) is False and run.exit_code is None:
                if not run.head:  # removed from the queue before its nodes started
                    say(f"run {run.run_id} stopped before its cluster started")
                    backend.cleanup(run, say)
                    remove_blocks(run, blocks, say)
                    # Recorded, so that the run no longer shows as starting.
                    record_end_for_the_head(run.paths, run.spec, "stopped by `rayhpc down` "
                                            "before its cluster started", STOPPED_EXIT_CODE)
                    return 0
                # Its nodes are gone without a word (a killed head): what they left is
                # kept, and the run's end recorded, so that it is no longer "up".
                backend.cleanup(run, say)
                remove_blocks(run, blocks, say)
                error = ("the cluster's nodes were gone without an exit code when `rayhpc "
                         "down` came (the head's container was killed or removed)")
                record_lost_end(run, error)
                say(f"error: run {run.run_id}: {error}; logs in {run.paths.logs}")
                say(summary(run.paths.dir, LOST_EXIT_CODE).removeprefix("rayhpc: "))
                return LOST_EXIT_CODE
        time.sleep(0.2)
    _wait_for_nodes_stopped(run, deadline)
    queue_deadline = time.monotonic() + JOB_QUEUE_WAIT_S
    while backend.running(run) and time.monotonic() < queue_deadline:
        time.sleep(0.5)  # the job script (or the head's container) is exiting
    backend.cleanup(run, say)
    remove_blocks(run, blocks, say)
    code = run.exit_code
    say(summary(run.paths.dir, code).removeprefix("rayhpc: ") + f"; logs in {run.paths.logs}")
    return code


def record_lost_end(run: Run, error: str) -> None:
    """Write a run's end in its head's stead, where no agent could (see `RunPaths`): error,
    timing and exit code (last), each only where the head did not write it."""
    record_end_for_the_head(run.paths, run.spec, error, LOST_EXIT_CODE)


def _wait_for_nodes_stopped(run: Run, deadline: float) -> None:
    while time.monotonic() < deadline:
        if run.paths.exists(run.paths.nodes_file):  # the head wrote every node's final record
            return
        lost = set(run.status.lost)
        if all(rec.state in FINAL_STATES for name, rec in run.nodes().items()
               if name not in lost):
            return
        time.sleep(0.2)
