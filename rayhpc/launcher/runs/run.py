"""Runs already launched, found by id in <shared>/runs/, and `rayhpc status`. Everything here
reads the run directory (`RunPaths`); what only a backend knows (containers, the scheduler's
queue, how to stop a run) it asks the run's backend. `stop`, `submit` and `logs` do the other
commands on a run; the Python `Cluster` uses them all."""

from __future__ import annotations

import dataclasses
import errno
import grp
import os
import re
import stat
import sys
import tarfile
import time
from collections.abc import Mapping
from pathlib import Path

from rayhpc.common.user_error import UserError
from rayhpc.launcher.backends import BACKENDS, Backend, backend_of
from rayhpc.launcher.backends.watch import summary
from rayhpc.launcher.contract import (
    TEXT_MAX_BYTES,
    Block,
    HeadRecord,
    LaunchedRun,
    NodeRecord,
    RecordError,
    RunPaths,
    StatusRecord,
    UnsafeFile,
    allocation_ended,
    attempt_started,
    current_attempt,
    ended_attempts,
    list_names,
    open_for_reading,
    parse_json,
    read_blocks,
    read_node_records,
    read_record,
    read_spec,
)
from rayhpc.launcher.resolve.config import load_site, resolve_settings, run_flags
from rayhpc.launcher.runs.endpoint_status import endpoint_line
from rayhpc.launcher.runs.jobs import JobsClient
from rayhpc.launcher.timeline import attempt_notes
from rayhpc.launcher.times import duration, format_walltime


def shared_dir(site: str = "local", shared: str | None = None,
               environ: Mapping[str, str] = os.environ) -> Path:
    """The shared dir whose runs/ holds the run: --shared, else $RAYHPC_SHARED, else the
    site's, else the default (./shared), as `rayhpc launch` resolves it."""
    settings = resolve_settings(load_site(site), {"shared": shared}, environ)
    return Path(settings["shared"]).expanduser().absolute()


ARCHIVE_SLACK = 16 << 20  # what a node's archive holds beyond log_cap: headers, the manifest
ARCHIVE_MAX_MEMBERS = 50_000  # files in a node's archive read at most (each a tar header)
_warned: set[str] = set()


def warn_once(text: str) -> None:
    """A problem with a file of a run directory (a record that is not one: the containers
    write them), said once (per process: a command) on stderr; the command goes on without
    it."""
    if text not in _warned:
        _warned.add(text)
        print(f"rayhpc: warning: {text}", file=sys.stderr, flush=True)


class Run(LaunchedRun):
    """A launched run (its directory's records, `LaunchedRun`) and what this layer asks of
    it: its backend, its phase, its nodes, its Ray jobs. A record that is not one is said
    once (`warn_once`) and read as not written."""

    @classmethod
    def load(cls, run_dir: Path) -> Run | None:
        """The run of a run directory; None when its spec.json is missing, is not one this
        version can read, or names another run. Its run directory is the one it was found in
        (spec.json's shared dir is not followed: the containers can write spec.json)."""
        paths = RunPaths(run_dir)
        spec = read_spec(paths, strict=False)
        if spec is None or spec.run_id != paths.dir.name:
            return None
        return cls(paths, dataclasses.replace(spec, shared=paths.dir.parent.parent))

    @property
    def head(self) -> HeadRecord | None:
        try:
            return super().head
        except RecordError as exc:
            warn_once(f"{exc}: ignored")
            return None

    @property
    def status(self) -> StatusRecord:
        try:
            return super().status
        except RecordError as exc:
            warn_once(f"{exc}: ignored")
            return StatusRecord()

    def blocks(self) -> list[Block]:
        """The run's grown blocks; a block record that is not one is said and left out. A
        block grown before the current attempt started (`--restarts`) lost its head with the
        attempt before: it counts as released."""
        problems: list[str] = []
        blocks = read_blocks(self.paths, problems)
        for problem in problems:
            warn_once(problem)
        attempt = current_attempt(self.paths) if self.spec.restarts else 1
        started = attempt_started(self.paths, attempt)[0] if attempt > 1 else 0.0
        return [dataclasses.replace(block, released=f"its head ended with attempt {attempt - 1}")
                if started and block.t_submit < started and not block.released else block
                for block in blocks]

    @property
    def backend(self) -> Backend:
        return backend_of(self.spec.scheduler, self.spec.runtime, f"{self.paths.spec}: ")

    @property
    def flags(self) -> str:
        """`--run ID`, and `--shared DIR` where needed, for the commands rayhpc suggests."""
        return run_flags(self.run_id, self.spec.shared)

    @property
    def up(self) -> bool:
        """An interactive cluster with every node joined, not stopped yet."""
        return self.paths.exists(self.paths.connect) and self.exit_code is None

    def restarting(self) -> bool:
        """Between two attempts (`--restarts`): the current one ended, or is ending at its
        allocation's end, and another follows."""
        if self.paths.exists(self.paths.restarting):
            return True
        return (bool(self.spec.restarts) and current_attempt(self.paths) <= self.spec.restarts
                and allocation_ended(self.paths.read_stop_request()))

    @property
    def head_node(self) -> str:
        head = self.head
        return head.node if head else (self.spec.node_names or ["head"])[0]

    def phase(self) -> str:
        if self.paths.exists(self.paths.restarting):
            return "restarting (its attempt ended; the next one starts once the job runs again)"
        if self.exit_code is not None:
            return f"finished (exit code {self.exit_code})"
        if self.up:
            return "up (interactive)"
        if self.paths.exists(self.paths.driver_log):
            return "running its driver"
        if self.head:
            return "joining"
        return "starting"

    def nodes(self) -> dict[str, NodeRecord]:
        """Each node's record by name: the final ones (nodes.json, and nodes/<node>.json of a
        node that could not tell the head) once the run ended, else the head's status."""
        try:
            final = read_node_records(self.paths.nodes_file)
        except RecordError as exc:
            warn_once(f"{exc}: ignored")
            final = {}
        for name in list_names(self.paths.nodes, self.paths.dir):
            if not name.endswith(".json"):
                continue
            try:
                record = read_record(self.paths.nodes / name, NodeRecord, self.paths.dir)
            except RecordError as exc:
                warn_once(f"{exc}: left out")
                continue
            final[name[:-len(".json")]] = record or NodeRecord()
        return final or dict(self.status.nodes)

    def _archive(self, node: str) -> dict[str, bytes]:
        """The files of a node's archive (logs/<node>.tar.gz) by name, MANIFEST.json
        included, read in one pass with no link followed and no more than the archive can
        hold (log_cap and ARCHIVE_SLACK; ARCHIVE_MAX_MEMBERS files): the head's container
        wrote it. {} when there is none or it is not an archive."""
        room = min(self.spec.log_cap, 1 << 40) + ARCHIVE_SLACK
        found: dict[str, bytes] = {}
        try:
            with open_for_reading(self.paths.node_archive(node), self.paths.dir) as raw, \
                    tarfile.open(fileobj=raw, mode="r|*") as tar:
                for count, member in enumerate(tar):
                    if count >= ARCHIVE_MAX_MEMBERS or member.size > room:
                        break
                    content = tar.extractfile(member) if member.isfile() else None
                    if content is not None:
                        found[member.name] = content.read(room)
                        room -= len(found[member.name])
        except (OSError, EOFError, tarfile.TarError):
            return {}
        return found

    def archived(self, node: str) -> dict[str, bytes]:
        """The Ray log files kept in a node's archive (logs/<node>.tar.gz), by name."""
        return {name: data for name, data in self._archive(node).items()
                if name != "MANIFEST.json"}

    def archive_manifest(self, node: str) -> dict:
        """What a node's archive says it kept and dropped (MANIFEST.json: "kept": file, bytes,
        kept_bytes (its tail); "dropped": file, bytes, why); {} when there is none."""
        try:
            data = parse_json(self._archive(node).get("MANIFEST.json", b"{}"))
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    @property
    def head_ip(self) -> str:
        """The head's address ("" : not up yet)."""
        head = self.head
        return head.ip if head else ""

    def dashboard(self) -> str:
        return self.spec.dashboard_url(self.head_ip)

    def client(self) -> JobsClient:
        return JobsClient(self.dashboard(), self.token(), head_ip=self.head_ip)

    def token(self) -> str:
        """The run's token (what the dashboard asks of every request); a warning, once, when
        others may read its file. UserError when it cannot be read, saying why."""
        path = self.paths.auth_token
        try:
            token, status = read_token_file(path, self.paths.dir)
        except UnsafeFile as exc:  # a link: never read (the token goes to the dashboard)
            raise UserError(f"--run: the run's token {exc}") from None
        except FileNotFoundError:
            raise UserError(f"--run: the run's token {path} is missing: its launch writes it "
                            "before any node starts, so it was removed since, and the "
                            "cluster's dashboard takes no request without it; `rayhpc down "
                            f"{self.flags}` stops the run, then launch a new one") from None
        except OSError as exc:
            whose = "; run this as the user who launched it" if exc.errno == errno.EACCES else ""
            raise UserError(f"--run: cannot read the run's token {path} ({exc.strerror})"
                            f"{whose}") from None
        warning = open_token_warning(path, status)
        if warning and path not in _warned_tokens:
            _warned_tokens.add(path)
            print(warning, file=sys.stderr, flush=True)
        return token

    def require_up(self, flag: str = "--run") -> None:
        """UserError unless this is an interactive cluster that is up now."""
        if self.exit_code is not None:
            raise UserError(f"{flag}: run {self.run_id} has finished (exit code "
                            f"{self.exit_code}); launch a new cluster with `rayhpc launch "
                            "--interactive`")
        if not self.spec.interactive:
            raise UserError(f"{flag}: run {self.run_id} runs its own driver, not Ray jobs; "
                            "launch an interactive cluster (no --driver) to submit to")
        if not self.up:
            status = self.status
            joined = f"{status.joined}/{status.expected or self.spec.nodes}"
            raise UserError(f"{flag}: the cluster of run {self.run_id} is not up yet ({joined} "
                            f"nodes joined); wait for {self.paths.connect} (`rayhpc status "
                            f"{self.flags}`)")
        if self.backend.running(self) is False:
            raise UserError(f"{flag}: run {self.run_id} is not running any more (its nodes are "
                            f"gone without an exit code); see {self.paths.dir}")

    def require_unfinished(self, flag: str = "--run") -> None:
        if self.exit_code is not None:
            raise UserError(f"{flag}: run {self.run_id} has finished: "
                            f"{summary(self.paths.dir, self.exit_code).split(': ', 2)[-1]}; "
                            f"`rayhpc logs {self.flags}` shows its output")


_warned_tokens: set[Path] = set()  # each open token file is warned about once per process


def read_token_file(path: Path, root: Path | None = None) -> tuple[str, os.stat_result]:
    """A token file's text and status, both of the one file opened, no link followed."""
    with open_for_reading(path, root) as handle:
        text = handle.read(TEXT_MAX_BYTES).decode(errors="replace").strip()
        return text, os.fstat(handle.fileno())


def open_token_warning(path: Path, status: os.stat_result) -> str:
    """A warning when a token file's group or others may read it ("" : they may not): whoever
    holds the token can submit jobs, i.e. run code, on the cluster. A group that no group of
    this machine is (the containers' private group, where root launched) has no one in it."""
    mode = status.st_mode
    readers = [who for who, bit in (("its group", stat.S_IRGRP), ("others", stat.S_IROTH))
               if mode & bit and (bit != stat.S_IRGRP or group_exists(status.st_gid))]
    if not readers:
        return ""
    return (f"rayhpc: warning: the run's token {path} can be read by {' and '.join(readers)} "
            f"(mode {stat.S_IMODE(mode):o}): whoever reads it can run code on the cluster; "
            f"`chmod 600 {path}`")


def group_exists(gid: int) -> bool:
    try:
        grp.getgrgid(gid)
    except KeyError:
        return False
    return True


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


# -- rayhpc status

def status_line(run: Run, now: float | None = None) -> str:
    """One line: id, site, phase, nodes joined and lost, uptime, and what the backend knows
    (the job's state and time left, the containers)."""
    now = now or time.time()
    status = run.status
    parts = [run.run_id, run.spec.site, run.phase()]
    if run.spec.interactive is False and run.exit_code is None:
        parts[-1] += f": {run.spec.driver}"
    if run.spec.restarts:
        parts.append(f"attempt {current_attempt(run.paths)} of {run.spec.restarts + 1}")
    # Grown blocks count too, while they are not released.
    expected = (status.expected or run.spec.nodes) + sum(
        block.nodes for block in run.blocks() if not block.released)
    parts.append(f"{status.joined}/{expected} nodes "
                 "joined" + (f" (lost: {', '.join(status.lost)})" if status.lost else ""))
    head = run.head
    if head and run.exit_code is None:
        parts.append(f"up {duration(now - head.time)}")
    if run.exit_code is None:
        parts += run.backend.describe(run)
        if head and run.backend.running(run) is False:
            parts[2] = (f"lost (its nodes are gone without an exit code; `rayhpc down "
                        f"{run.flags}` records its end)")
    endpoint = endpoint_line(run) if run.exit_code is None else ""
    return "\n".join(["  ".join(parts), *([endpoint] if endpoint else []), *attempt_lines(run),
                      *block_lines(run, now)])


def attempt_lines(run: Run) -> list[str]:
    """One line per attempt before the current one (`--restarts`): when, how long, why it
    ended."""
    attempts = ended_attempts(run.paths)
    return [f"  {note}" + (f" (started {time.strftime('%H:%M:%S', time.localtime(a.started))}"
                          f"{', job ' + a.job_id if a.job_id else ''})" if a.started else "")
            for a, note in zip(attempts, attempt_notes(attempts, run.spec.restarts))]


def block_lines(run: Run, now: float | None = None) -> list[str]:
    """One line per grown block: its job id, nodes (joined/left/lost of asked), state and
    time left."""
    now = now or time.time()
    counts = run.status.blocks or {}
    lines = []
    for block in run.blocks():
        count = counts.get(block.name) or {}
        state = run.backend.block_state(run, block) if run.exit_code is None else ""
        parts = [f"  block {block.name}", f"job {block.job_id}" if block.job_id else "local",
                 f"{count.get('joined', 0)}/{block.nodes} nodes joined"]
        if count.get("left"):
            parts.append(f"{count['left']} left")
        if count.get("lost"):
            parts.append(f"{count['lost']} lost")
        parts.append(state or "ended")
        if state and block.group:
            parts.append(f"group {block.group}")
        started = block.t_submit
        if state and not run.backend.block_pending(run, block):
            parts.append(f"~{duration(block.walltime_s - (now - started))} left of "
                         f"{format_walltime(block.walltime_s)}")
        if block.released:
            parts.append(f"released ({block.released})")
        lines.append("  ".join(parts))
    return lines


def status_lines(shared: Path, run_id: str | None = None) -> list[str]:
    """`rayhpc status`: the runs in the shared dir that have not finished (or the one asked
    for), and runs known only by what they left on this machine's engine."""
    leftovers = leftover_runs()
    if run_id:
        found = load_run(run_id, shared)
        if found is not None:
            found.require_unfinished()
            return [status_line(found)]
        if run_id in leftovers:
            return [leftovers[run_id]]
        find_run(run_id, shared)  # says what is there
    lines = [status_line(run) for run in all_runs(shared) if run.exit_code is None]
    listed = {line.split()[0] for line in lines}
    return lines + [line for rid, line in leftovers.items() if rid not in listed]


def leftover_runs() -> dict[str, str]:
    """Runs known only by what they left on this machine (run id -> a line): every backend's."""
    return {run_id: line for backend in BACKENDS for run_id, line in backend.leftovers().items()}
