"""The Python API for notebooks and scripts: the same code as `rayhpc launch --interactive`,
`submit`, `logs`, `status` and `down`.

    from rayhpc import Cluster

    with Cluster.launch(site="local", nodes=3) as cluster:
        os.environ.update(cluster.env)          # RAY_ADDRESS and the token, before `import ray`
        ray.init(cluster.client_address)        # a driver here (Ray Client: ray://...)
        code = cluster.submit("python my_job.py")   # or a Ray job on the head
    # the cluster is gone here, also when the body raised

`Cluster.attach(run_id)` takes a cluster that is already up (launched from the command line).
"""

from __future__ import annotations

import contextlib
import difflib
import io
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rayhpc.launcher.backends.watch import noting_signals
from rayhpc.launcher.contract import TEXT_MAX_BYTES, HeadRecord, read_bounded
from rayhpc.launcher.orchestration import start
from rayhpc.launcher.resolve.config import SETTINGS
from rayhpc.launcher.runs.endpoint_status import reachable_url
from rayhpc.launcher.runs.jobs import ClusterError
from rayhpc.launcher.runs.logs import logs as run_logs
from rayhpc.launcher.runs.run import Run, find_run, shared_dir, status_line
from rayhpc.launcher.runs.stop import down as stop_run
from rayhpc.launcher.runs.submit import submit as submit_job
from rayhpc.launcher.runs.submit import wait_for_job


class Cluster:
    """An interactive Ray cluster (a run without a driver) that is up."""

    def __init__(self, run: Run, verbose: bool = True):
        self.run = run
        self.verbose = verbose
        # The process whose `with` block owns the cluster: a child forked inside the block
        # (multiprocessing, os.fork) leaves the block too when it exits, and must not stop it.
        self._owner_pid = os.getpid()

    # -- getting one

    @classmethod
    def launch(cls, site: str = "local", verbose: bool = True, **settings: Any) -> Cluster:
        """Bring a cluster up and return once every node joined (local: it stays up after this
        returns; HPC sites: the job is submitted and waited for). ``settings`` are the flags of
        `rayhpc launch`: nodes, shared, image, walltime, account, queue, join_timeout, ...;
        ``group``: node groups as a list in --group's form (["head:1", "gpu:4:IMAGE,gpu=nvidia"]).
        """
        check_launch_keywords(settings)
        if settings.get("driver") is not None:
            raise ValueError("Cluster.launch runs no driver: submit jobs with cluster.submit()")
        cli = {key: (value if value is None or isinstance(value, (list, tuple)) else str(value))
               for key, value in settings.items()}
        with signals_raised_after() as noted:
            code, spec = start(site, cli, interactive=True, up=True,
                               out=None if verbose else io.StringIO(), stopped_by=STOPPED_BY)
            run = Run.load(spec.run_dir) if spec is not None else None
            if noted and run is not None and code == 0:  # came once it was up: it goes too
                cls(run, verbose).down()
        if run is None or code != 0 or not run.up:
            where = f"; see {spec.run_dir}" if spec is not None else ""
            raise ClusterError(f"the cluster did not come up (exit code {code}){where}")
        return cls(run, verbose)

    @classmethod
    def attach(cls, run_id: str, shared: str | None = None, site: str = "local",
               verbose: bool = True) -> Cluster:
        """A cluster that is up already (`rayhpc launch --interactive` printed its run id)."""
        run = find_run(run_id, shared_dir(site, shared))
        run.require_up()
        run.token()  # what `env` hands to Ray: missing, unreadable or open to others is said now
        return cls(run, verbose)

    # -- what to connect with

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def run_dir(self) -> Path:
        return self.run.paths.dir

    @property
    def address(self) -> str:
        """The head's GCS address (ip:port), for `ray.init(address)` on a node of the cluster."""
        return self.head.address

    @property
    def client_address(self) -> str:
        """`ray://...` for `ray.init()` from here (Ray Client; same Ray and Python as the
        image)."""
        return self.run.spec.client_address(self.head.ip)

    @property
    def head(self) -> HeadRecord:
        """The head's record (head.json): the cluster is up, so it is there."""
        head = self.run.head
        if head is None:
            raise ClusterError(f"{self.run.paths.head}: missing: the cluster is not up")
        return head

    @property
    def dashboard_url(self) -> str:
        return self.run.dashboard()

    @property
    def endpoint(self) -> str | None:
        """The HTTP endpoint's URL from here (`serve=`, `serve_port=`; docs/serving.md): its
        published port on the local site, the head's address where it listens on the cluster
        network; None without one, or where it listens on the head's loopback."""
        return reachable_url(self.run) if self.run.spec.has_endpoint else None

    @property
    def token_path(self) -> Path:
        return self.run.paths.auth_token

    @property
    def env(self) -> dict[str, str]:
        """What `ray job submit` and `ray.init` need in the environment (connect.txt's
        exports): RAY_ADDRESS (the dashboard), RAY_AUTH_MODE and RAY_AUTH_TOKEN_PATH."""
        return {"RAY_ADDRESS": self.dashboard_url, "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN_PATH": str(self.token_path)}

    @property
    def connect_text(self) -> str:
        """connect.txt as the head wrote it (no link followed, bounded: RecordError else)."""
        paths = self.run.paths
        return (read_bounded(paths.connect, TEXT_MAX_BYTES, paths.dir) or b"").decode(
            errors="replace")

    # -- using it

    def submit(self, command: str | list[str], working_dir: str | None = None,
               wait: bool = True) -> int | str:
        """Run ``command`` as a Ray job on the head. ``wait``: print its output as it comes
        and return its exit code; else return its submission id at once (see `wait`)."""
        job_id = submit_job(self.run, command, working_dir, self._say)
        return self.wait(job_id) if wait else job_id

    def wait(self, job_id: str) -> int:
        """Follow a submitted job to its end; its exit code."""
        return wait_for_job(self.run, job_id, self._write).exit_code

    def logs(self, node: str | None = None, file: str | None = None,
             job: str | None = None) -> str:
        """As `rayhpc logs`: every job's output, one job's (``job``), a node's agent log
        (``node``) or one of its Ray logs (``node`` and ``file``)."""
        parts: list[str] = []
        run_logs(self.run, parts.append, node=node, file=file, job=job)
        return "".join(parts)

    def status(self) -> str:
        return status_line(self.run)

    def down(self) -> int:
        """Stop the cluster cleanly (logs kept) and remove it; the run's exit code (143: it
        was stopped). Nothing to do once it has finished."""
        if self.run.exit_code is not None:
            return self.run.exit_code
        return stop_run(self.run, self._say)

    def __enter__(self) -> Cluster:
        """Inside the block, SIGTERM and SIGHUP (where nothing else handles them) raise
        SystemExit(128 + N), as Ctrl-C raises KeyboardInterrupt: the block's end stops the
        cluster cleanly, as the CLI does, instead of the process dying with it up."""
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP):
                if signal.getsignal(sig) is signal.SIG_DFL:
                    self._previous[sig] = signal.signal(sig, _exit_on_signal)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if os.getpid() != self._owner_pid:
            return
        try:
            with signals_raised_after():  # the stop runs to its end
                self.down()
        finally:
            for sig, handler in getattr(self, "_previous", {}).items():
                signal.signal(sig, handler)

    def __repr__(self) -> str:
        return f"Cluster({self.run_id!r}, {self.run.phase()})"

    # -- output

    def _say(self, text: str) -> None:
        if self.verbose:
            print(f"rayhpc: {text}", flush=True)

    def _write(self, text: str) -> None:
        if self.verbose:
            print(text, end="", flush=True)


# What stops a cluster that Cluster.launch leaves up (said once it is up).
STOPPED_BY = "`cluster.down()` or the end of its `with` block"

# What Cluster.launch takes besides site and verbose: the settings of `rayhpc launch`.
LAUNCH_KEYWORDS = (*SETTINGS, "group")


def check_launch_keywords(settings: dict[str, Any]) -> None:
    """TypeError naming each keyword Cluster.launch does not know (and the close one it
    does): a typo would otherwise be ignored and the cluster start with the default."""
    unknown = [key for key in settings if key not in LAUNCH_KEYWORDS]
    if not unknown:
        return
    known = [*LAUNCH_KEYWORDS, "site", "verbose"]
    named = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=1)
        named.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    what = ("unknown keyword arguments" if len(unknown) > 1
            else "an unknown keyword argument")
    raise TypeError(f"Cluster.launch() got {what}: {', '.join(named)}; it takes site, verbose "
                    f"and the flags of `rayhpc launch`: {', '.join(LAUNCH_KEYWORDS)}")


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def signals_raised_after() -> Iterator[list[int]]:
    """Ctrl-C, SIGTERM and SIGHUP are held while the block runs (a launch's watcher stops
    the cluster on them), then raised as the process would have had them: KeyboardInterrupt
    for Ctrl-C, SystemExit(128 + N) for the others. In the main thread only (elsewhere
    signals cannot be handled)."""
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    with noting_signals() as noted:
        yield noted
    if noted:
        if noted[0] == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + noted[0])
