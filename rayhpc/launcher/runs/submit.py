"""`rayhpc submit`: a Ray job onto an interactive cluster, and following it to its end."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from pathlib import Path

from rayhpc.common.user_error import UserError
from rayhpc.launcher.contract import current_attempt
from rayhpc.launcher.resolve.driver import check_script
from rayhpc.launcher.runs.jobs import JobResult, follow_job
from rayhpc.launcher.runs.run import Run

Say = Callable[[str], None]


def working_dir_uri(run: Run, working_dir: str | None) -> str:
    """The runtime_env working_dir of a job: a directory in the shared dir is used in place on
    every node (local://, nothing sent); one elsewhere is sent along where the backend can
    (the local site), and refused on HPC sites, whose nodes see only the shared dir."""
    shared = run.spec.shared.resolve()
    path = Path(working_dir).expanduser().resolve() if working_dir else shared
    if not path.is_dir():
        raise UserError(f"--working-dir: {working_dir} is not a directory; give the directory "
                        "your job runs in (its files reach every node)")
    if path == shared or shared in path.parents:
        return f"local://{path}"
    if run.backend.working_dir_upload():
        return str(path)  # sent by `submit`
    raise UserError(f"--working-dir: {path} is outside the shared directory {shared}, which "
                    f"is all the nodes of site {run.spec.site} see; put it there (e.g. "
                    f"{shared}/{path.name}) and pass that")


def check_job_script(entrypoint: str, run: Run, uri: str, working_dir: str | None) -> None:
    """The script the job runs (`python SCRIPT ...`, `./SCRIPT`) is in its working directory
    (``uri``: in place, local://, or sent along), as `launch` checks its driver's: else the
    job would fail on the head with Python's "can't open file" and exit code 2."""
    in_place = uri.startswith("local://")
    check_script(entrypoint, Path(uri.removeprefix("local://")),
                 run.spec.shared.resolve() if in_place else None, "the job's command",
                 "the job", "fix --working-dir" if working_dir
                 else "give --working-dir DIR that holds it")


def entrypoint_of(command: str | list[str]) -> str:
    """The job's shell command line. A list is words (the program first): an empty or blank
    program (`-- ''`) is refused, not run as the command ''."""
    text = command if isinstance(command, str) else shlex.join(command)
    if not text.strip():
        raise UserError("missing command after --: `rayhpc submit --run ID -- python "
                        "my_job.py ...`")
    if not isinstance(command, str) and not command[0].strip():
        raise UserError(f"the command after -- starts with an empty word ({text}): give the "
                        "program to run, e.g. `rayhpc submit --run ID -- python my_job.py`")
    return text


RESTART_POLL_S = 2.0  # how often a submit waiting for a restarting run looks (one stat)


def wait_while_restarting(run: Run, say: Say) -> None:
    """A run between two attempts (`--restarts`), or whose next attempt is still coming up:
    wait for its new cluster (a line says so; Ctrl-C stops waiting) instead of failing."""
    said = False
    while run.spec.interactive and run.exit_code is None and (
            (between := run.paths.exists(run.paths.restarting))
            or (current_attempt(run.paths) > 1 and not run.up)):
        if not said:
            said = True
            coming = current_attempt(run.paths) + (1 if between else 0)
            say(f"run {run.run_id} is starting again (attempt {coming} of "
                f"{run.spec.restarts + 1}): waiting for its cluster to be up; Ctrl-C stops "
                "waiting")
        time.sleep(RESTART_POLL_S)


def submit(run: Run, command: str | list[str], working_dir: str | None, say: Say) -> str:
    """Submit a Ray job to the run's cluster; its submission id."""
    entrypoint = entrypoint_of(command)
    wait_while_restarting(run, say)
    run.require_up()
    uri = working_dir_uri(run, working_dir)
    check_job_script(entrypoint, run, uri, working_dir)
    client = run.client()
    if not uri.startswith("local://"):
        say(f"sending {uri} to the cluster")
        uri = client.upload_dir(Path(uri))
    job_id = client.submit(entrypoint, {"working_dir": uri}, {"rayhpc_run": run.run_id})
    say(f"job {job_id} submitted to run {run.run_id} (`rayhpc logs {run.flags} --job "
        f"{job_id}`)")
    return job_id


def wait_for_job(run: Run, job_id: str, write: Callable[[str], None],
                 signals: list[int] | None = None) -> JobResult:
    return follow_job(run.client(), job_id, write, signals)
