"""Run a launch on this machine with docker compose: up, follow, tear down, return the exit code."""

from __future__ import annotations

import collections
import contextlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterable
from pathlib import Path

import docker
import docker.errors

from rayhpc.common.user_error import UserError
from rayhpc.containers.engine import connect
from rayhpc.launcher.backends.local import container_user
from rayhpc.launcher.backends.local.compose import render_compose
from rayhpc.launcher.backends.local.manage import remove_run, stop_containers
from rayhpc.launcher.backends.overflow import FollowedOutput
from rayhpc.launcher.backends.rundir import prepare_run_dir, remove_run_dir
from rayhpc.launcher.backends.watch import RunWatcher
from rayhpc.launcher.contract import (
    OVERFLOW_PREFIX,
    LaunchSpec,
    RunPaths,
    atomic_file,
    atomic_write,
    begin_attempt,
    current_attempt,
    record_end_for_the_head,
    remove,
    run_dir_problem,
)
from rayhpc.launcher.resolve.config import run_flags

# More local nodes than this per core start too slowly to be of use (a warning says so).
OVERLOAD_NODES_PER_CORE = 2
POLL_S = 0.2
COMPOSE_CANCEL_S = 10  # how long a cancelled `compose up` may take to stop before SIGKILL
CONTAINER_OUTPUT_CAP = 4 << 20  # bytes of each container's own output kept in containers.log
FORCED_STOP_S = 2  # compose down's grace once the user asked twice
AGENT_PREFIX = re.compile(r"^\[rayhpc [^]]*\] ")  # "[rayhpc head +  5.1s] " (Agent.say)


def recorded_exit_code(said: list[str]) -> int | None:
    """The exit code a head agent said last ("done: exit code N"), if it got that far."""
    for line in reversed(said):
        if match := re.fullmatch(r"done: exit code (\d+)", line):
            return int(match.group(1))
    return None


def compose_command() -> list[str]:
    """Compose v2 (`docker compose`), else v1 (`docker-compose`)."""
    try:
        v2 = subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    except OSError:
        v2 = False
    if v2:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise UserError("docker compose not found: install the compose plugin (v2, `docker "
                    "compose`) or docker-compose (v1)")


class LocalLaunch:
    """One run on this machine; follows the `FollowedRun` protocol of `launcher.watch`."""

    def __init__(self, spec: LaunchSpec, environment: dict | None = None, out=None):
        self.spec = spec
        self.api = connect()
        self.environment = {str(k): str(v) for k, v in (environment or {}).items()}
        self.paths = RunPaths(spec.run_dir)
        self.watcher = RunWatcher(spec.run_dir, out)
        self.compose = compose_command()
        self.head = spec.container(spec.node_names[0])
        self.stop_grace = spec.stop_timeout

    def _compose_up(self) -> tuple[int | None, str]:
        """`docker compose up -d`: its exit code and error output, or (None, "") when a signal
        came first (the creation is stopped: compose is told to stop and waited for, so that
        the teardown finds every container it made).

        Compose runs in a session of its own: a signal to the launcher's process group (a
        closed terminal, Ctrl-C) reaches the launcher alone, which stops it."""
        if self.watcher.signals:
            return None, ""  # before anything was created
        cmd = [*self.compose, "-p", self.spec.project, "-f", str(self.paths.compose_file),
               "up", "-d", "--no-build"]
        up = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, errors="replace", start_new_session=True)
        stopping = 0.0
        while True:
            try:
                _, err = up.communicate(timeout=POLL_S)
                break
            except subprocess.TimeoutExpired:
                pass
            if self.watcher.signals and not stopping:
                stopping = time.monotonic()
                # A head that compose already started must not run the driver while its
                # container waits for the teardown (a quick driver ran to its end and
                # recorded 0 for a run stopped during the start): the stop file says so.
                with contextlib.suppress(OSError):
                    self.paths.request_stop(f"{signal.Signals(self.watcher.signals[0]).name} "
                                            "during the start")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(up.pid, signal.SIGINT)  # compose's own way to cancel
            elif stopping and time.monotonic() - stopping > COMPOSE_CANCEL_S:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(up.pid, signal.SIGKILL)
        if self.watcher.signals:
            return None, ""
        return up.returncode, err or ""

    def run(self, detach: bool = False, stopped_by: str = "") -> int:
        """Bring the cluster up, follow it, always tear it down; the driver's exit code.

        ``detach`` (an interactive cluster): return 0 once every node joined and leave the
        cluster up (``stopped_by`` stops it: "" for `rayhpc down --run ID`); it is torn down
        only if it fails or a signal comes before that."""
        # Signals are noted by the watcher, not raised, from before the run is announced to
        # the end of the teardown; every way out (a signal, a full disk, a bug) ends with the
        # cluster gone.
        with self.watcher.holding_signals():
            user, owner = container_user()
            prepare_run_dir(self.spec, owner)
            if self.spec.restarts:
                begin_attempt(self.paths)
            # The run directory is the containers' user's from here (as root): no link followed.
            atomic_write(self.paths.compose_file, render_compose(self.spec, user,
                                                                 self.environment),
                         root=self.paths.dir)
            nodes = self.spec.nodes
            self.watcher.say(f"run {self.spec.run_id}: {nodes} node{'s' if nodes != 1 else ''} "
                             f"of {self.spec.image}; run dir {self.paths.dir}")
            cores = os.cpu_count() or 1
            if self.spec.nodes > OVERLOAD_NODES_PER_CORE * cores:
                self.watcher.say(f"warning: {self.spec.nodes} nodes on {cores} cores: each Ray "
                                 "node takes about a core to start, so bring-up will be slow "
                                 "and may reach the join timeout (--join-timeout); use fewer "
                                 "nodes here")
            left_up, result = False, None
            try:
                code, err = self._compose_up()
                if code is None:  # a signal during the start: what was made goes
                    signum = self.watcher.signals[0]
                    name = signal.Signals(signum).name
                    self.watcher.say(f"{name}: stopping the start; removing what was created")
                    # No agent ran to record the end: the launcher does, in the head's stead.
                    with contextlib.suppress(OSError):
                        atomic_write(self.paths.error, f"stopped by {name} during the start\n",
                                     root=self.paths.dir)
                        atomic_write(self.paths.exit_code, f"{128 + signum}\n",
                                     root=self.paths.dir)
                    return 128 + signum
                while code == 0:
                    self._announce_dashboard()
                    self.watcher.overflow = FollowedOutput(self._head_output).start()
                    code = self.watcher.follow(self, self.spec.stop_timeout, until_up=detach)
                    if code is None:
                        left_up = True
                        stopped_by = stopped_by or \
                            f"`rayhpc down {run_flags(self.spec.run_id, self.spec.shared)}`"
                        self.watcher.say(f"run {self.spec.run_id} stays up: {stopped_by} "
                                         "stops it")
                        return 0
                    if not self.watcher.restarting() or self.watcher.signals:
                        if self.watcher.restarting():  # a signal: no next attempt
                            with contextlib.suppress(OSError):
                                remove(self.paths.restarting, self.paths.dir)
                        result = code
                        return code
                    code, err = self._next_attempt()
                    if code is None:  # a signal while it started again
                        result = 128 + self.watcher.signals[0]
                        return result
                if current_attempt(self.paths) > 1 or self.watcher.restarting():
                    # A later attempt could not start: the run ends, said and recorded.
                    self.watcher.say(f"error: {err}")
                    result = 1
                    with contextlib.suppress(OSError):
                        remove(self.paths.restarting, self.paths.dir)
                        record_end_for_the_head(self.paths, self.spec, err, result)
                    return result
            finally:
                if not left_up:
                    self.teardown()
                    if result is not None:
                        self._record_unrecorded_end(result)
        remove_run_dir(self.paths.dir)  # nothing ran
        raise UserError(f"docker compose up failed: {err.strip()[-800:]}")

    def _next_attempt(self) -> tuple[int | None, str]:
        """The run starts again (`--restarts`): its containers go (their logs kept with this
        attempt's files), the next attempt is claimed (the files move to attempts/<n>/) and
        compose brings every node up anew: `_compose_up`'s code (None: a signal came), and
        the error that ends the run when it is not 0."""
        self.watcher.say_restart()
        self.teardown()
        try:
            attempt = begin_attempt(self.paths)
        except OSError as exc:  # a run directory changed under us (a link planted, full)
            return 1, f"the run cannot start again: {run_dir_problem(exc)}"
        self.watcher.say(f"attempt {attempt} of {self.spec.restarts + 1}: starting the "
                         "cluster again")
        code, err = self._compose_up()
        return code, (f"docker compose up failed: {err.strip()[-800:]}" if code else "")

    def _record_unrecorded_end(self, code: int) -> None:
        """A run the launcher stopped before its head recorded the end (a second Ctrl-C, a
        head that did not stop in time): recorded here, in the head's stead, so that `rayhpc
        status` does not show it starting for ever."""
        if self.paths.exists(self.paths.exit_code) or not self.paths.dir.is_dir():
            return
        why = (f"stopped by {signal.Signals(self.watcher.signals[0]).name}"
               if self.watcher.signals else "the run did not stop in time")
        with contextlib.suppress(OSError):
            record_end_for_the_head(self.paths, self.spec, f"{why}; its containers were "
                                    "removed before the head recorded its end", code)

    # -- FollowedRun

    def ended(self) -> str:
        state = self._state(self.head)
        if state is None or state.get("Running"):
            return ""
        return f"its container exited (status {state.get('ExitCode')})"

    def gone(self, why: str) -> int:
        """The head's agent can report no more: say why, keep what it left, return its code.
        A run that goes on (`--restarts`): the head said so (`restarting`), or it died before
        its end and attempts are left: then the launcher says so, in its stead."""
        said = self._output_tail(self.head)
        code = recorded_exit_code(said)
        if self.watcher.restarting():
            return code if code is not None else 1
        attempt = current_attempt(self.paths)
        if code is None and attempt <= self.spec.restarts and not self.watcher.signals:
            with contextlib.suppress(OSError):
                atomic_write(self.paths.restarting,
                             f"attempt {attempt} ended: the head was lost ({why}); "
                             f"attempt {attempt + 1} of {self.spec.restarts + 1} follows\n",
                             root=self.paths.dir)
            if self.watcher.restarting():
                return 1
        if code is not None:  # it finished but could not write the run directory
            errors = [line.split("error: ", 1)[1] for line in said if "error: " in line]
            error = (errors or ["the head could not record its result"])[-1]
            error += f"; exit code {code} from the head's output"
        else:
            code = 1
            error = (f"the head died: {why} before the run finished; the other nodes are "
                     "being stopped")
            if said:
                error += f"; its last output: {' | '.join(said[-3:])}"
        self.watcher.say(f"error: {error}; logs in {self.paths.logs}/")
        try:  # in the head's stead (see RunPaths): it wrote none of these
            record_end_for_the_head(self.paths, self.spec, error, code)
        except OSError as exc:
            self.watcher.say(f"error: {run_dir_problem(exc)}: the result is not recorded")
        return code

    def _output_tail(self, container: str, lines: int = 20) -> list[str]:
        """The last lines a node's container printed (its agent's messages; not the driver's
        that went there after a full driver.log), without the agent's prefix."""
        try:
            raw = self.api.logs(container, tail=lines)
        except docker.errors.APIError:
            return []
        return [AGENT_PREFIX.sub("", line.decode(errors="replace")).strip()
                for line in raw.splitlines()
                if line.strip() and not line.startswith(OVERFLOW_PREFIX)]

    def _head_output(self) -> Iterable[bytes]:
        """The head's own output as it comes (its agent's lines; the driver's once driver.log
        takes no more), until its container ends: no timeout, it may be quiet for hours."""
        return connect(timeout=None).logs(self.head, stream=True, follow=True, stderr=False)

    def stop(self, signum: int, again: bool) -> bool:
        """The same signal to the head's agent: it stops the driver and every node and harvests
        the logs. A second signal: no more waiting, the containers go at once."""
        if again:
            self.stop_grace = FORCED_STOP_S
            return False
        try:
            self.api.kill(self.head, signal=signum)
        except docker.errors.APIError:
            return False
        return True

    # -- the engine

    def _state(self, container: str) -> dict | None:
        try:
            return self.api.inspect_container(container)["State"]
        except docker.errors.NotFound:
            return {"Running": False, "ExitCode": "gone"}
        except docker.errors.APIError:
            return None

    def _announce_dashboard(self) -> None:
        try:
            bound = self.api.port(self.head, self.spec.ports["dashboard"])
        except docker.errors.APIError:
            return
        if bound:
            self.watcher.say(f"dashboard: http://{bound[0]['HostIp']}:{bound[0]['HostPort']} "
                             f"(token: {self.paths.auth_token})")

    def _rescue_logs(self, node: str) -> None:
        """Ray's logs out of a node's stopped container, as the node's archive: a killed agent
        wrote none."""
        source = f"{self.spec.temp_dir}/session_latest/logs"
        try:
            stream, _ = self.api.get_archive(self.spec.container(node), source)
            archive = io.BytesIO(b"".join(stream))
        except docker.errors.APIError:
            return  # the container is gone or Ray never wrote logs
        with tarfile.open(fileobj=archive) as source_tar, \
                atomic_file(self.paths.node_archive(node), binary=True,
                            root=self.paths.dir) as handle, \
                tarfile.open(fileobj=handle, mode="w:gz", compresslevel=1) as tar:
            for member in source_tar.getmembers():
                if member.isfile() and "/" in member.name:
                    data = source_tar.extractfile(member)
                    member.name = member.name.split("/", 1)[1]  # drop the leading "logs/"
                    tar.addfile(member, data)

    def teardown(self) -> None:
        """Stop the run's containers, keep what they leave (logs) and remove them and the
        network. The engine alone says what to stop (the run's label): no file of the run
        directory is needed, so a deleted or full run directory still ends with nothing left.
        """
        # Where the stop fails, the removal below forces them, or says why it could not.
        with contextlib.suppress(docker.errors.DockerException):
            stop_containers(self.api, self.spec.run_id, self.stop_grace)
        try:
            self._keep_logs()
        except (OSError, docker.errors.DockerException) as exc:
            # a full, deleted or read-only run directory must not stop the teardown
            self.watcher.say(f"warning: logs not kept: {exc}")
        try:
            remove_run(self.spec.run_id, self.api)
        except docker.errors.DockerException as exc:
            with contextlib.suppress(OSError, ValueError):
                print(f"rayhpc: warning: removing the containers of run {self.spec.run_id}: "
                      f"{exc}; run `rayhpc down "
                      f"{run_flags(self.spec.run_id, self.spec.shared)}`", file=sys.stderr)

    def _keep_logs(self) -> None:
        if not self.paths.dir.is_dir():
            return  # the run directory was deleted: nowhere to keep them
        for node in self.spec.node_names:
            if self.paths.exists(self.paths.node_archive(node)):
                continue  # harvested by its agent
            state = self._state(self.spec.container(node))
            if state is not None and not state.get("Running"):
                self._rescue_logs(node)
        # The containers' own output goes with them: keep it with the run, bounded.
        keep_container_output(self.api, [(node, self.spec.container(node))
                                         for node in self.spec.node_names],
                              self.paths.containers_log, root=self.paths.dir)


def keep_container_output(api: docker.APIClient, containers: list[tuple[str, str]],
                          path: Path, cap: int = CONTAINER_OUTPUT_CAP,
                          root: Path | None = None) -> None:
    """The containers' output (node, container name), each node's lines prefixed with its
    name, into ``path``: streamed from the engine, at most ``cap`` bytes per container (its
    first and last halves; what was dropped between them is said there). Whole or not at
    all: a full run directory leaves no empty or partial file (OSError raised); no link on
    its way below ``root`` (the run directory) is followed (`UnsafeFile`, an OSError)."""
    with atomic_file(path, binary=True, root=root) as out:
        for node, name in containers:
            try:
                stream = api.logs(name, stream=True, timestamps=True)
                first, last, dropped = bounded_head_and_tail(stream, cap)
            except docker.errors.NotFound:
                continue
            prefix = f"{node} | ".encode()
            for part in (first, (f"[rayhpc: {dropped} bytes of {node}'s output dropped here "
                                 f"(at most {cap} bytes kept per container)]\n".encode()
                                 if dropped else b""), last):
                for line in part.splitlines(keepends=True):
                    out.write(prefix + line)


def bounded_head_and_tail(chunks: Iterable[bytes], cap: int) -> tuple[bytes, bytes, int]:
    """The first and last ``cap`` // 2 bytes of a stream (whole, when it fits in ``cap``),
    and how many bytes lay between them; memory bounded by ``cap``."""
    half = cap // 2
    first = bytearray()
    tail: collections.deque[bytes] = collections.deque()
    tail_size = total = 0
    for chunk in chunks:
        total += len(chunk)
        if len(first) < half:
            take = chunk[:half - len(first)]
            first += take
            chunk = chunk[len(take):]
        if chunk:
            tail.append(chunk)
            tail_size += len(chunk)
            while tail and tail_size - len(tail[0]) >= half:
                tail_size -= len(tail.popleft())
    last = b"".join(tail)
    if len(last) > half:
        last = last[len(last) - half:]
    return bytes(first), last, total - len(first) - len(last)
