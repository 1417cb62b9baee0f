"""What every node's agent does, head or worker: read the run's token, set up Ray's
environment, run the Ray CLI, stop its node's Ray, keep its logs, handle signals."""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import resource
import signal
import socket
import time
from pathlib import Path
from typing import Any

from rayhpc.launcher.contract import (
    AF_UNIX_MAX,
    NODE_TEMP_DIR_ENV,
    RAY_NODE_LABEL,
    LaunchSpec,
    NodeGroup,
    NodeRecord,
    RunPaths,
    label_value,
    run_dir_problem,
    temp_dir_fits,
    write_record,
)
from rayhpc.launcher.node import harvest, preflight
from rayhpc.launcher.node.driver_output import to_stdout
from rayhpc.launcher.node.gpu_env import gpu_environment
from rayhpc.launcher.node.launch_failed import LaunchFailed
from rayhpc.launcher.node.processes import RayCli, raise_fd_limit, stop_session
from rayhpc.launcher.node.ray_start import (
    LABELS_SINCE,
    object_store_bytes,
    ray_start_args,
    supports_token_auth,
    usable_cpus,
    version_tuple,
)

# Seconds Ray's processes get to exit on SIGTERM before SIGKILL. A raylet whose head is gone
# waits for the GCS instead of exiting: no grace is of use there.
RAY_STOP_GRACE_S = 5
RAY_STOP_GRACE_HEADLESS_S = 1


class Agent:
    """What the head's and a worker's agents share."""
    # Whether this node's archive keeps every worker process log, also when it ends cleanly.
    keeps_worker_logs = False

    def __init__(self, paths: RunPaths, node: str, spec: LaunchSpec, group: str = ""):
        self.paths = paths
        self.node = node
        self.spec = spec
        # The node's group (a launch with groups; None otherwise): its resources, labels, GPUs.
        self.group: NodeGroup | None = spec.group(group) if group else None
        self.t0 = time.time()
        self.signalled: int | None = None
        # Several agents of one run on one host (the scale simulator) get one each.
        self.temp_dir = Path(os.environ.get(NODE_TEMP_DIR_ENV) or spec.temp_dir)
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        # In the run directory (one open; its lines are appended as they come, so that `rayhpc
        # logs --node` shows them while the run lives); the container's or job's output has
        # every line too.
        try:
            self._log = open(paths.node_log(node), "a", buffering=1)  # noqa: SIM115
        except OSError:
            self._log = None
        self.ip = ""
        self.ray_session: int | None = None  # the session of this node's Ray processes
        self.failed = False
        raise_fd_limit()
        self.token = self._read_token()
        self.env = self._ray_env()
        self.handle_signals()

    # -- plumbing

    def say(self, message: str) -> None:
        line = f"[rayhpc {self.node} +{time.time() - self.t0:5.1f}s] {message}"
        to_stdout((line + "\n").encode(errors="replace"))
        if self._log is not None:
            try:
                self._log.write(line + "\n")
            except OSError:
                self._log = None

    def handle_signals(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.signalled is None:
            self.signalled = signum
            self.say(f"got {signal.Signals(signum).name}: stopping")
        self.on_stop_request()

    def on_stop_request(self) -> None:
        """Hook for the head: pass the stop on to the driver."""

    def final_record(self, state: str, **extra: Any) -> NodeRecord:
        return NodeRecord(node=self.node, state=state, ip=self.ip,
                          hostname=socket.gethostname(), pid=os.getpid(), time=time.time(),
                          **extra)

    def write_record(self, record: NodeRecord) -> None:
        """A node's own record file: only where the head cannot collect it."""
        try:
            self.paths.nodes.mkdir(exist_ok=True)
            write_record(self.paths.node_record(self.node), record)
        except OSError as exc:
            self.say(f"state {record.state} not recorded: {run_dir_problem(exc)}")

    @functools.cached_property
    def ray_version(self) -> str:
        """From the package metadata, read once: Ray itself is not imported for it (Ray reads
        RAY_AUTH_MODE when first imported)."""
        return importlib.metadata.version("ray")

    def _read_token(self) -> str:
        try:
            return self.paths.auth_token.read_text().strip()
        except OSError:
            return ""

    def _ray_env(self) -> dict:
        env = dict(os.environ)
        home = env.get("HOME", "")
        if not home or not os.access(home, os.W_OK):
            # A read-only image home (apptainer --no-home): Ray and drivers write ~/.ray.
            home = str(self.temp_dir / "home")
            os.makedirs(home, exist_ok=True)
            env["HOME"] = os.environ["HOME"] = home
        # The GPU variables Ray needs from those the scheduler set (AMD: HIP from ROCR), in
        # this process too (it connects to Ray) and so in the driver's.
        gpus = gpu_environment(env)
        if gpus:
            env.update(gpus)
            os.environ.update(gpus)
            self.say("GPUs: " + ", ".join(f"{name}={value}" for name, value in gpus.items())
                     + " (the scheduler set ROCR_VISIBLE_DEVICES; Ray's AMD path takes HIP's)")
        env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        if self.spec.auth == "token" and self.token:
            version = self.ray_version
            if supports_token_auth(version):
                # A node-local copy: every Ray process of the node reads it, and the shared
                # file system should see one read per node, not one per process.
                local = self.temp_dir / "auth_token"
                fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(self.token)
                env["RAY_AUTH_MODE"] = "token"
                env["RAY_AUTH_TOKEN_PATH"] = str(local)
            else:
                self.say(f"Ray {version} has no token authentication (2.52+): "
                         "cluster runs without it")
        # The agent itself connects to Ray too (before importing it): same settings.
        os.environ.update({k: v for k, v in env.items() if k.startswith("RAY_")})
        return env

    def ray(self, *args: str, cli: RayCli | None = None, interruptible: bool = False) -> str:
        """Run the Ray CLI (in ``cli`` when one was started ahead); its output goes to
        agent.log. ``interruptible``: give up when a stop is requested meanwhile (LaunchFailed
        is not raised then: the caller sees stop_requested())."""
        cli = cli or RayCli(self.env)
        if args[0] == "start":
            self.ray_session = cli.session
        code, output = cli.run(args, self.stop_requested if interruptible else None)
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.write(output)
        if code is not None and code != 0:
            tail = " | ".join(output.strip().splitlines()[-2:])
            raise LaunchFailed(f"`ray {args[0]}` failed on {self.node} (exit {code}): {tail}")
        return output

    def stop_requested(self) -> bool:
        raise NotImplementedError

    def object_store(self) -> int | None:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return object_store_bytes(shm_size(), mem, self.spec.object_store_memory)

    def preflight(self, head_versions: dict[str, str] | None) -> dict[str, str]:
        """The node's checks before `ray start` (launcher.node.preflight), one line each in
        the log; LaunchFailed naming this node and the fix on the first failure. Returns this
        node's versions (the head sends its own to the workers)."""
        gpu_kind = self.group.gpu if self.group else ""
        wanted = self.group.num_gpus if self.group and self.group.num_gpus is not None \
            else self.spec.num_gpus
        gpus_found, gpus_counted = preflight.visible_gpus(gpu_kind)
        facts = preflight.NodeFacts(
            open_files=resource.getrlimit(resource.RLIMIT_NOFILE), shm_bytes=shm_size(),
            object_store=self.object_store(), temp_dir=str(self.temp_dir),
            temp_dir_fits=temp_dir_fits(str(self.temp_dir)), socket_limit=AF_UNIX_MAX,
            disk=preflight.disk(str(self.temp_dir)), gpu_kind=gpu_kind,
            gpus_found=gpus_found, gpus_counted=gpus_counted,
            versions=preflight.node_versions(self.ray_version))
        checks = preflight.run_checks(facts, self.spec.object_store_memory, wanted,
                                      head_versions)
        for check in checks:
            self.say(check.log_line())
        failed = preflight.first_failure(checks)
        if failed is not None:
            raise LaunchFailed(failed.error(self.node))
        return facts.versions

    def start_args(self, head_address: str | None) -> list[str]:
        labels = None
        if self.group:
            labels = {**self.group.labels, RAY_NODE_LABEL: label_value(self.node)}
            if version_tuple(self.ray_version) < LABELS_SINCE:
                self.say(f"Ray {self.ray_version} takes no node labels (2.49+): the group's "
                         "labels are not set; target the group by its resources")
                labels = None
        return ray_start_args(self.spec, self.ip, head_address, self.object_store(),
                              str(self.temp_dir), usable_cpus(), self.group, labels)

    def stop_ray(self, grace_s: float = RAY_STOP_GRACE_S) -> None:
        """Stop this node's Ray: the processes of `ray start`'s session, nothing else."""
        if self.ray_session is not None:
            stop_session(self.ray_session, grace_s)
            self.ray_session = None

    def harvest_logs(self) -> dict:
        """This node's log archive in the run directory (its agent log is closed first: the
        archive is its last write there). Returns its summary."""
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None
        return harvest.harvest_logs(self.paths, self.node, self.temp_dir, self.spec.log_cap,
                                    full=self.failed or self.keeps_worker_logs)


def shm_size() -> int:
    """/dev/shm's size in bytes (0: none)."""
    try:
        shm = os.statvfs("/dev/shm")
    except OSError:
        return 0
    return shm.f_blocks * shm.f_frsize
