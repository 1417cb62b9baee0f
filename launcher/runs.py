"""Runs already launched, found by id in <shared>/runs/: what `invoke status`, `down`, `submit`
and `logs` (and the Python `Cluster`) do with them. Everything here reads the run directory
(`RunPaths`); what only a backend knows (containers, the scheduler's queue, how to stop a run)
it asks the run's backend."""

from __future__ import annotations

import os
import re
import shlex
import tarfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError
from launcher.agent import FINAL_STATES, RunPaths, dashboard_url, read_json
from launcher.backends import Backend, backend_for
from launcher.config import load_site, resolve_settings
from launcher.jobs import ClusterError, JobResult, JobsClient, follow_job, iter_jobs
from launcher.spec import LaunchSpec
from launcher.watch import summary

Say = Callable[[str], None]
STATE_CHECK_S = 2.0  # how often `down` asks the backend whether the nodes still run
JOB_QUEUE_WAIT_S = 60  # after the exit code: until the batch job has left the queue


def shared_dir(site: str = "local", shared: str | None = None,
               environ: Mapping[str, str] = os.environ) -> Path:
    """The shared dir whose runs/ holds the run: --shared, else $RAYHPC_SHARED, else the
    site's, else the default (./shared), as `invoke launch` resolves it."""
    settings = resolve_settings(load_site(site), {"shared": shared}, environ)
    return Path(settings["shared"]).expanduser().absolute()


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@dataclass
class Run:
    paths: RunPaths
    spec: LaunchSpec

    @classmethod
    def load(cls, run_dir: Path) -> Run | None:
        paths = RunPaths(run_dir)
        data = read_json(paths.spec)
        if not data:
            return None
        try:
            return cls(paths, LaunchSpec.from_json(data))
        except (TypeError, KeyError):
            return None  # not a spec this version can read

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    @property
    def backend(self) -> Backend:
        return backend_for(self.spec.scheduler, self.spec.runtime, f"{self.paths.spec}: ")

    @property
    def job_id(self) -> str:
        try:
            return self.paths.job_id.read_text().strip()
        except OSError:
            return ""

    @property
    def exit_code(self) -> int | None:
        return self.paths.read_exit_code()

    @property
    def head(self) -> dict:
        return read_json(self.paths.head) or {}

    @property
    def status(self) -> dict:
        return read_json(self.paths.status) or {}

    @property
    def up(self) -> bool:
        """An interactive cluster with every node joined, not stopped yet."""
        return self.paths.connect.exists() and self.exit_code is None

    @property
    def head_node(self) -> str:
        return self.head.get("node") or (self.spec.node_names or ["head"])[0]

    def phase(self) -> str:
        if self.exit_code is not None:
            return f"finished (exit code {self.exit_code})"
        if self.up:
            return "up (interactive)"
        if self.paths.driver_log.exists():
            return "running its driver"
        if self.head:
            return "joining"
        return "starting"

    def nodes(self) -> dict[str, dict]:
        """Each node's record by name: the final ones (nodes.json, and nodes/<node>.json of a
        node that could not tell the head) once the run ended, else the head's status."""
        final = read_json(self.paths.nodes_file) or {}
        final.update({p.stem: read_json(p) or {} for p in self.paths.nodes.glob("*.json")})
        return final or dict(self.status.get("nodes") or {})

    def archived(self, node: str) -> dict[str, bytes]:
        """The Ray log files kept in a node's archive (logs/<node>.tar.gz), by name."""
        try:
            with tarfile.open(self.paths.node_archive(node)) as tar:
                return {m.name: tar.extractfile(m).read() for m in tar.getmembers()
                        if m.isfile() and m.name != "MANIFEST.json"}
        except (OSError, tarfile.TarError):
            return {}

    def dashboard(self) -> str:
        return dashboard_url(self.spec.to_json(), self.head.get("ip", ""))

    def client(self) -> JobsClient:
        try:
            token = self.paths.auth_token.read_text().strip()
        except OSError as exc:
            raise UserError(f"--run: cannot read the run's token {self.paths.auth_token} "
                            f"({exc.strerror}); run this as the user who launched it") from None
        return JobsClient(self.dashboard(), token)

    def require_up(self, flag: str = "--run") -> None:
        """UserError unless this is an interactive cluster that is up now."""
        if self.exit_code is not None:
            raise UserError(f"{flag}: run {self.run_id} has finished (exit code "
                            f"{self.exit_code}); launch a new cluster with `invoke launch "
                            "--interactive`")
        if not self.spec.interactive:
            raise UserError(f"{flag}: run {self.run_id} runs its own driver, not Ray jobs; "
                            "launch an interactive cluster (no --driver) to submit to")
        if not self.up:
            status = self.status
            joined = f"{status.get('joined', 0)}/{status.get('expected', self.spec.nodes)}"
            raise UserError(f"{flag}: the cluster of run {self.run_id} is not up yet ({joined} "
                            f"nodes joined); wait for {self.paths.connect} (`invoke status "
                            f"--run {self.run_id}`)")
        if self.backend.running(self) is False:
            raise UserError(f"{flag}: run {self.run_id} is not running any more (its nodes are "
                            f"gone without an exit code); see {self.paths.dir}")

    def require_unfinished(self, flag: str = "--run") -> None:
        if self.exit_code is not None:
            raise UserError(f"{flag}: run {self.run_id} has finished: "
                            f"{summary(self.paths.dir, self.exit_code).split(': ', 2)[-1]}; "
                            f"`invoke logs --run {self.run_id}` shows its output")


def find_run(run_id: str, shared: Path, flag: str = "--run") -> Run:
    """The run with this id in <shared>/runs/; UserError naming what is there otherwise."""
    runs = shared / "runs"
    if not run_id or not re.fullmatch(r"[\w.-]+", run_id) or run_id.startswith("."):
        raise UserError(f"{flag}: {run_id!r} is not a run id (like 20261124-050102-ab12)")
    run = Run.load(runs / run_id)
    if run is None:
        present = [r.name for r in sorted(runs.glob("*/"))][-3:] if runs.is_dir() else []
        raise UserError(f"{flag}: no run {run_id!r} in {runs} (latest there: "
                        f"{', '.join(present) or 'none'}); give --shared DIR where it was "
                        "launched")
    return run


def all_runs(shared: Path) -> list[Run]:
    runs = shared / "runs"
    found = [Run.load(path) for path in sorted(runs.glob("*/"))] if runs.is_dir() else []
    return [run for run in found if run is not None]


def load_run(run_id: str, shared: Path) -> Run | None:
    """The run with this id in <shared>/runs/, if there is one (no error)."""
    if not run_id.strip(".") or "/" in run_id:
        return None
    return Run.load(shared / "runs" / run_id)


# -- invoke status

def status_line(run: Run, now: float | None = None) -> str:
    """One line: id, site, phase, nodes joined and lost, uptime, and what the backend knows
    (the job's state and time left, the containers)."""
    now = now or time.time()
    status = run.status
    parts = [run.run_id, run.spec.site, run.phase()]
    if run.spec.interactive is False and run.exit_code is None:
        parts[-1] += f": {run.spec.driver}"
    parts.append(f"{status.get('joined', 0)}/{status.get('expected', run.spec.nodes)} nodes "
                 "joined" + (f" (lost: {', '.join(status['lost'])})" if status.get("lost")
                             else ""))
    if run.head.get("time") and run.exit_code is None:
        parts.append(f"up {duration(now - run.head['time'])}")
    if run.exit_code is None:
        parts += run.backend.describe(run)
    return "  ".join(parts)


def status_lines(shared: Path, run_id: str | None = None) -> list[str]:
    """`invoke status`: the runs in the shared dir that have not finished (or the one asked
    for), and runs known only by what they left on this machine's engine."""
    from launcher.manage import engine_runs

    leftovers = engine_runs()
    if run_id:
        found = load_run(run_id, shared)
        if found is not None:
            found.require_unfinished()
            return [status_line(found)]
        if run_id in leftovers:
            return [leftovers[run_id].line()]
        find_run(run_id, shared)  # says what is there
    lines = [status_line(run) for run in all_runs(shared) if run.exit_code is None]
    listed = {line.split()[0] for line in lines}
    return lines + [state.line() for rid, state in leftovers.items() if rid not in listed]


# -- invoke down

def remove_leftovers(say: Say) -> None:
    """`invoke down` without a run: remove what every local run left on this engine
    (forcibly, running ones too)."""
    from containers.engine import connect
    from launcher.manage import engine_runs, remove_run

    api = connect()
    targets = list(engine_runs(api))
    for run_id in targets:
        containers, networks = remove_run(api, run_id)
        say(f"removed run {run_id}: {containers} container(s), {networks} network(s)")
    if not targets:
        say("nothing to remove")


def down_by_id(run_id: str, shared: Path, say: Say) -> int:
    """`invoke down --run ID`: stop the run if it has not finished; else remove what it left on
    this machine's engine (a run whose launcher died); else say why there is nothing to do."""
    from launcher.manage import engine_runs, remove_run

    found = load_run(run_id, shared)
    if found is not None and found.exit_code is None:
        return down(found, say)
    leftovers = engine_runs()
    if run_id in leftovers:
        if found is not None:
            found.backend.cleanup(found, say)
            say(f"removed what run {run_id} left")
        else:
            containers, networks = remove_run(None, run_id)
            say(f"removed run {run_id}: {containers} container(s), {networks} network(s)")
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
    run.require_unfinished()
    backend = run.backend
    backend.stop(run, say)
    timeout = timeout or run.spec.stop_timeout + run.spec.stop_grace + 60
    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + STATE_CHECK_S
    while run.exit_code is None:
        if time.monotonic() > deadline:
            raise ClusterError(f"run {run.run_id} did not stop within {timeout:.0f} s; see "
                               f"{run.paths.dir} (`invoke status --run {run.run_id}`)")
        if time.monotonic() > next_check:
            next_check = time.monotonic() + STATE_CHECK_S
            if backend.running(run) is False and run.exit_code is None:
                if not run.head:  # removed from the queue before its nodes started
                    say(f"run {run.run_id} stopped before its cluster started")
                    backend.cleanup(run, say)
                    return 0
                say(f"run {run.run_id} ended without an exit code; see {run.paths.dir}")
                backend.cleanup(run, say)
                return 1
        time.sleep(0.2)
    _wait_for_nodes_stopped(run, deadline)
    queue_deadline = time.monotonic() + JOB_QUEUE_WAIT_S
    while backend.running(run) and time.monotonic() < queue_deadline:
        time.sleep(0.5)  # the job script (or the head's container) is exiting
    backend.cleanup(run, say)
    code = run.exit_code
    say(summary(run.paths.dir, code).removeprefix("rayhpc: ") + f"; logs in {run.paths.logs}")
    return code


def _wait_for_nodes_stopped(run: Run, deadline: float) -> None:
    while time.monotonic() < deadline:
        if run.paths.nodes_file.exists():  # the head wrote every node's final record
            return
        lost = set(run.status.get("lost") or [])
        if all(rec.get("state") in FINAL_STATES for name, rec in run.nodes().items()
               if name not in lost):
            return
        time.sleep(0.2)


# -- invoke submit

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


def entrypoint_of(command: str | list[str]) -> str:
    text = command if isinstance(command, str) else shlex.join(command)
    if not text.strip():
        raise UserError("missing command after --: `invoke submit --run ID -- python "
                        "my_job.py ...`")
    return text


def submit(run: Run, command: str | list[str], working_dir: str | None, say: Say) -> str:
    """Submit a Ray job to the run's cluster; its submission id."""
    entrypoint = entrypoint_of(command)
    run.require_up()
    uri = working_dir_uri(run, working_dir)
    client = run.client()
    if not uri.startswith("local://"):
        say(f"sending {uri} to the cluster")
        uri = client.upload_dir(Path(uri))
    job_id = client.submit(entrypoint, {"working_dir": uri}, {"rayhpc_run": run.run_id})
    say(f"job {job_id} submitted to run {run.run_id} (`invoke logs --run {run.run_id} --job "
        f"{job_id}`)")
    return job_id


def wait_for_job(run: Run, job_id: str, write: Callable[[str], None],
                 signals: list[int] | None = None) -> JobResult:
    return follow_job(run.client(), job_id, write, signals)


# -- invoke logs

def logs(run: Run, write: Callable[[str], None], node: str | None = None,
         file: str | None = None, job: str | None = None, follow: bool = False,
         signals: list[int] | None = None) -> int:
    """The driver's output (or the Ray jobs' on an interactive cluster), a node's agent log,
    or one of a node's Ray log files; while the run lives, ``follow`` keeps printing."""
    if job:
        return _job_logs(run, job, write, follow, signals)
    if node is None:
        if file:
            raise UserError("--file: give the node too (--node NAME)")
        if run.spec.interactive:
            if follow:
                raise UserError("--follow: an interactive cluster runs many jobs; give one "
                                "with --job ID (`invoke logs --run ID` lists them)")
            return _all_job_logs(run, write)
        return _file(run, run.paths.driver_log, write, follow, signals)
    nodes = run.nodes()
    if node not in nodes:
        raise UserError(f"--node: run {run.run_id} has no node {node!r}; its nodes: "
                        f"{', '.join(nodes) or 'none has started yet'}")
    if not file:
        return _file(run, run.paths.node_log(node), write, follow, signals)
    return _ray_log(run, node, nodes[node], file, write, follow, signals)


def _file(run: Run, path: Path, write, follow: bool, signals) -> int:
    """A file of the run directory; with ``follow``, what is added until the run ends."""
    offset = 0
    signals = signals if signals is not None else []
    while True:
        ended = run.exit_code is not None  # before the last read: nothing is missed
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
        except FileNotFoundError:
            if not follow:
                raise UserError(f"--run: {path} does not exist (yet); the run is "
                                f"{run.phase()}") from None
            chunk = b""
        if chunk:
            write(chunk.decode(errors="replace"))
            offset += len(chunk)
        if not follow or ended or signals:
            return 0
        time.sleep(0.3)


def _harvested_job_logs(run: Run) -> dict[str, str]:
    """Job id -> the job's output kept with the head's Ray logs (once the run ended)."""
    return {name[len("job-driver-"):-len(".log")]: data.decode(errors="replace")
            for name, data in run.archived(run.head_node).items()
            if name.startswith("job-driver-") and name.endswith(".log")}


def _job_logs(run: Run, job: str, write, follow: bool, signals) -> int:
    if run.up:
        client = run.client()
        if follow:
            result = follow_job(client, job, write, signals)
            return result.exit_code
        status, _ = client.request("GET", f"/api/jobs/{job}", ok=(200, 404))
        if status == 404:
            raise UserError(f"--job: run {run.run_id} has no job {job!r}; `invoke logs --run "
                            f"{run.run_id}` lists them")
        write(client.logs(job))
        return 0
    kept = _harvested_job_logs(run)
    if job not in kept:
        raise UserError(f"--job: no output of job {job!r} in run {run.run_id} (kept: "
                        f"{', '.join(kept) or 'none'})")
    write(kept[job])
    return 0


def _all_job_logs(run: Run, write) -> int:
    if run.up:
        client = run.client()
        jobs = list(iter_jobs(client))
        for info in jobs:
            write(f"== job {info['submission_id']} ({info.get('status')}): "
                  f"{info.get('entrypoint')}\n")
            write(client.logs(info["submission_id"]))
        if not jobs:
            write(f"rayhpc: no jobs submitted to run {run.run_id} yet\n")
        return 0
    kept = _harvested_job_logs(run)
    for job, text in kept.items():
        write(f"== job {job}\n")
        write(text)
    if not kept:
        write(f"rayhpc: no job output kept in {run.paths.node_archive(run.head_node)} ("
              f"{run.phase()})\n")
    return 0


def _ray_log(run: Run, node: str, record: dict, file: str, write, follow: bool,
             signals) -> int:
    kept = run.archived(node)
    if kept or not run.up:
        if file not in kept:
            raise UserError(f"--file: no {file!r} among the logs kept of {node} (there: "
                            f"{', '.join(sorted(kept)[:12]) or 'none'})")
        write(kept[file].decode(errors="replace"))
        return 0
    client = run.client()
    files = client.node_log_files(record.get("ip", ""))
    if file not in files:
        raise UserError(f"--file: {node} has no Ray log {file!r} (there: "
                        f"{', '.join(files[:12])}{' ...' if len(files) > 12 else ''})")
    printed = 0
    signals = signals if signals is not None else []
    while True:
        text = client.node_log(record["ip"], file)
        if len(text) > printed:
            write(text[printed:])
            printed = len(text)
        if not follow or signals or not run.up:
            if text and not text.endswith("\n"):
                write("\n")
            return 0
        time.sleep(1.0)
