"""Run a launch on this machine with docker compose: up, follow, tear down, return the exit code."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import docker
import docker.errors

from containers.errors import UserError
from launcher.agent import atomic_write, read_json, write_json
from launcher.compose import IMAGE_USER_UID, render_compose
from launcher.rundir import prepare_run_dir, remove_run_dir
from launcher.spec import LaunchSpec
from launcher.watch import RunWatcher, summary

POLL_S = 0.2


class Interrupted(Exception):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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


def container_user() -> tuple[str, tuple[int, int] | None]:
    """Who the containers run as, and who must own the run directory.

    Never root: as root we use the image's user (uid 1000) and hand it the run directory;
    otherwise the containers run as you, so files in the shared dir stay yours.
    """
    if os.geteuid() == 0:
        return IMAGE_USER_UID, (int(IMAGE_USER_UID), 100)
    return f"{os.geteuid()}:{os.getegid()}", None


class LocalLaunch:
    def __init__(self, spec: LaunchSpec, api: docker.APIClient, out=None):
        self.spec = spec
        self.api = api
        self.out = out or sys.stdout
        self.compose = compose_command()
        self.compose_file = spec.run_dir / "compose.yaml"
        self.head = spec.container(spec.node_names[0])

    def _compose(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [*self.compose, "-p", self.spec.project, "-f", str(self.compose_file), *args]
        return subprocess.run(cmd, capture_output=True, text=True)

    def say(self, text: str) -> None:
        self.out.write(f"rayhpc: {text}\n")
        self.out.flush()

    def run(self) -> int:
        """Bring the cluster up, follow it, always tear it down; the driver's exit code."""
        user, owner = container_user()
        self.spec.t_submit = time.time()
        run_dir = prepare_run_dir(self.spec, owner)
        self.compose_file.write_text(render_compose(self.spec, user))
        self.say(f"run {self.spec.run_id}: {self.spec.nodes} nodes of {self.spec.image}; "
                 f"run dir {run_dir}")
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            up = self._compose("up", "-d", "--no-build")
            if up.returncode != 0:
                self._down()
                remove_run_dir(run_dir)
                raise UserError(f"docker compose up failed: {up.stderr.strip()[-800:]}")
            code = self._follow()
        except Interrupted as exc:
            self.say(f"{exc}: stopping the cluster (logs are kept)")
            code = self._stop_gracefully(exc.signum)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self._down()
        self._record_teardown()
        self.out.write(summary(run_dir, code) + "\n")
        return code

    def _on_signal(self, signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    def _follow(self) -> int:
        watcher = RunWatcher(self.spec.run_dir, self.out)
        announced, next_check = False, 0.0
        while True:
            watcher.poll()
            code = watcher.exit_code()
            if code is not None:
                watcher.flush()
                error = watcher.error()
                if error:
                    self.say(f"error: {error}")
                return code
            if watcher.head and not announced:
                announced = True
                self._announce_dashboard()
            if time.monotonic() > next_check:
                next_check = time.monotonic() + 1.0
                state = self._state(self.head)
                if state is not None and not state.get("Running"):
                    watcher.flush()
                    return self._head_died(state)
            time.sleep(POLL_S)

    def _head_died(self, state: dict) -> int:
        """The head's agent cannot report any more: say so, keep what it left, exit 1."""
        error = (f"the head died: its container exited (status {state.get('ExitCode')}) "
                 "before the run finished; the other nodes are being stopped")
        self.say(f"error: {error}; logs in {self.spec.run_dir}/logs/")
        for name, text in (("error", error), ("exit_code", "1")):
            if not (self.spec.run_dir / name).exists():
                atomic_write(self.spec.run_dir / name, text + "\n")
        return 1

    def _rescue_logs(self, node: str) -> None:
        """Copy Ray's logs out of a node's stopped container: a killed agent harvests nothing."""
        source = f"{self.spec.temp_dir}/session_latest/logs"
        try:
            stream, _ = self.api.get_archive(self.spec.container(node), source)
            archive = io.BytesIO(b"".join(stream))
        except docker.errors.APIError:
            return  # the container is gone or Ray never wrote logs
        with tarfile.open(fileobj=archive) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and "/" in m.name]
            for member in members:
                member.name = member.name.split("/", 1)[1]  # drop the leading "logs/"
            # The "data" filter (Python 3.12, and security releases before) refuses odd paths.
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(self.spec.run_dir / "logs" / node, members=members, **safe)

    def _stop_gracefully(self, signum: int) -> int:
        """The same signal to the head's agent: it stops the driver and every node and harvests
        the logs. Returns 128 + the signal, as a shell would."""
        code = 128 + signum
        try:
            self.api.kill(self.head, signal=signum)
        except docker.errors.APIError:
            return code
        watcher = RunWatcher(self.spec.run_dir, self.out)
        deadline = time.monotonic() + self.spec.stop_timeout + 10
        while time.monotonic() < deadline and watcher.exit_code() is None:
            state = self._state(self.head)
            if state is not None and not state.get("Running"):
                break
            time.sleep(POLL_S)
        return code

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
            self.say(f"dashboard: http://{bound[0]['HostIp']}:{bound[0]['HostPort']} "
                     f"(token: {self.spec.run_dir}/auth_token)")

    def _down(self) -> None:
        for node in self.spec.node_names:
            if (self.spec.run_dir / "logs" / node / "raylet.out").exists():
                continue  # harvested by its agent
            state = self._state(self.spec.container(node))
            if state is not None and not state.get("Running"):
                self._rescue_logs(node)
        # The containers' own output goes with them: keep it with the run.
        logs = self._compose("logs", "--no-color", "--timestamps")
        if logs.returncode == 0 and logs.stdout:
            (self.spec.run_dir / "logs" / "containers.log").write_text(logs.stdout)
        down = self._compose("down", "--volumes", "--remove-orphans", "--timeout",
                             str(self.spec.stop_timeout))
        if down.returncode != 0:
            print(f"rayhpc: warning: docker compose down: {down.stderr.strip()[-400:]}; "
                  f"run `invoke down --run {self.spec.run_id}`", file=sys.stderr)

    def _record_teardown(self) -> None:
        """The local launcher knows when the last container is gone: that ends the teardown."""
        path = self.spec.run_dir / "timing.json"
        # No timing.json: the head died before it could write one; its status says how far it got.
        status = read_json(self.spec.run_dir / "status.json") or {}
        timing = read_json(path) or {"t_submit": self.spec.t_submit,
                                     "nodes_expected": self.spec.nodes,
                                     "nodes_joined": status.get("joined", 0)}
        timing["t_teardown_done"] = time.time()
        write_json(path, timing)
