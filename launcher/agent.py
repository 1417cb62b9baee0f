#!/usr/bin/env python3
"""rayhpc node agent: runs in every container of a launch and does the node's work.

Standard library and Ray only, so any stock rayproject/ray image runs it as delivered (the
launcher copies this file into the run directory). Rendezvous is through the run directory on the
shared file system; no MPI is needed.

  head (rank 0):   start Ray's head, publish head.json, wait for every node, run the driver
                   (or, with no driver, publish connect.txt and keep the cluster up until a
                   stop), write exit_code and timing.json, stop every node, harvest logs.
  worker (rank>0): wait for head.json, join, follow the head; stop on the stop file, on
                   SIGTERM/SIGINT, or when the head is gone.

`RunPaths` below is the run-directory protocol: every file, and who writes it.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

# Rank variables of the launchers, in the order they are trusted.
RANK_ENV_VARS = ("SLURM_PROCID", "ALPS_APP_PE", "PMI_RANK", "PALS_RANKID",
                 "OMPI_COMM_WORLD_RANK", "JSM_NAMESPACE_RANK")
TOKEN_AUTH_SINCE = (2, 52)
MIN_OBJECT_STORE = 80 * 1024 * 1024  # Ray refuses less than 75 MiB
AF_UNIX_MAX = 107
# The longest tail Ray appends to its temp dir for a socket path (session name, sockets/...).
RAY_SOCKET_SUFFIX = len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")
# Workers wait this long (on top of the join timeout) for the head to come up at all; the head
# tells them to stop sooner when it fails.
HEAD_START_ALLOWANCE_S = 600
FINAL_STATES = ("stopped", "lost-head", "failed")
HEAD_PROBE_FAILURES = 3  # consecutive failed probes of the head's GCS before it counts as gone
DRIVER_KILL_AFTER_S = 10  # SIGKILL a driver still there this long after SIGTERM
LEFTOVER_GRACE_S = 3  # what the driver left running gets this long after SIGTERM
# Seconds `ray stop` waits for Ray's processes to exit on SIGTERM before it SIGKILLs them. A
# raylet whose head is gone waits for the GCS instead of exiting: no grace is of use there.
RAY_STOP_GRACE_S = 5
RAY_STOP_GRACE_HEADLESS_S = 1
POLL_S = 0.2


class LaunchFailed(Exception):
    """A failure of the launch itself (not of the driver): reported in `error`, exit 1."""


# ---------------------------------------------------------------------------------------------
# The run-directory protocol: <shared>/runs/<run-id>/. One writer per file.

class RunPaths:
    """Every file of a run directory, and who writes it.

    launcher (`invoke launch`, before any node starts; never changed after):
      spec.json, node_agent.py, auth_token (0600), compose.yaml (local) or job.sh and
      job_id (batch; job.out is the scheduler's)
    head agent:
      head.json (address, once), status.json (join progress, lost nodes), driver.log,
      connect.txt (interactive clusters: how to connect, once every node joined),
      timing.json, error, exit_code (last: its presence means the run is over)
    each node's agent:
      nodes/<node>.json (its state), logs/<node>/ (agent.log, harvested Ray logs)
    stop (a request, written once with O_EXCL by whoever asks first; the text says who):
      the job script (walltime warning, scancel --batch), the launcher, or the head at teardown
    the local launcher, only where no agent can any more:
      logs/containers.log (the containers' own output); logs/<node>/ of a node whose agent
      harvested nothing (Ray's logs copied out of its stopped container); and error,
      exit_code and timing.json when the head's container exited before writing them.
    """

    def __init__(self, run_dir: Path | str):
        self.dir = Path(run_dir)
        self.spec = self.dir / "spec.json"
        self.agent = self.dir / "node_agent.py"
        self.auth_token = self.dir / "auth_token"
        self.compose_file = self.dir / "compose.yaml"
        self.job_script = self.dir / "job.sh"
        self.job_id = self.dir / "job_id"
        self.job_output = self.dir / "job.out"
        self.head = self.dir / "head.json"
        self.status = self.dir / "status.json"
        self.driver_log = self.dir / "driver.log"
        self.connect = self.dir / "connect.txt"
        self.timing = self.dir / "timing.json"
        self.error = self.dir / "error"
        self.exit_code = self.dir / "exit_code"
        self.stop = self.dir / "stop"
        self.nodes = self.dir / "nodes"
        self.logs = self.dir / "logs"
        self.containers_log = self.logs / "containers.log"

    def node_record(self, node: str) -> Path:
        return self.nodes / f"{node}.json"

    def node_logs(self, node: str) -> Path:
        return self.logs / node

    def agent_command(self, *args: str) -> list[str]:
        """How a container starts the agent: `python node_agent.py --run-dir DIR [ARGS]`."""
        return ["python", str(self.agent), "--run-dir", str(self.dir), *args]

    def request_stop(self, who: str) -> bool:
        """Create the stop file unless it exists; True if this call made it."""
        try:
            fd = os.open(self.stop, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            handle.write(who + "\n")
        return True

    def read_exit_code(self) -> int | None:
        try:
            text = self.exit_code.read_text().strip()
        except OSError:
            return None
        return int(text) if text.lstrip("-").isdigit() else None

    def read_error(self) -> str:
        try:
            return self.error.read_text().strip()
        except OSError:
            return ""


# ---------------------------------------------------------------------------------------------
# Small pure helpers (unit-tested on the host)

def detect_rank(environ: dict | os._Environ = os.environ) -> int | None:
    for var in RANK_ENV_VARS:
        value = environ.get(var, "")
        if value.strip().isdigit():
            return int(value)
    return None


def version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def supports_token_auth(ray_version: str) -> bool:
    return version_tuple(ray_version)[:2] >= TOKEN_AUTH_SINCE


def object_store_bytes(shm_bytes: int, mem_bytes: int, requested: int | None = None) -> int | None:
    """Object store size that fits /dev/shm (else Ray falls back to slow /tmp); None: Ray's default.

    Ray's own default is 30% of memory; keep that, capped at 80% of the shm size.
    """
    if requested:
        return int(requested)
    size = min(int(mem_bytes * 0.3), int(shm_bytes * 0.8))
    return size if size >= MIN_OBJECT_STORE else None


def temp_dir_fits(temp_dir: str) -> bool:
    """Ray's AF_UNIX socket paths under temp_dir must fit in 107 bytes."""
    return len(temp_dir) + RAY_SOCKET_SUFFIX <= AF_UNIX_MAX


def interface_ip(name: str) -> str:
    """IPv4 address of a network interface (SIOCGIFADDR), e.g. the high-speed network's."""
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        packed = struct.pack("256s", name[:15].encode())
        try:
            raw = fcntl.ioctl(sock.fileno(), 0x8915, packed)
        except OSError as exc:
            raise LaunchFailed(f"network interface {name!r} has no IPv4 address here "
                               f"({exc.strerror}); fix the site's 'interface'") from None
    return socket.inet_ntoa(raw[20:24])


def node_ip(interface: str | None, multi_node: bool) -> str:
    """This node's address for Ray: by interface when the site names one, else by hostname."""
    ip = interface_ip(interface) if interface else socket.gethostbyname(socket.gethostname())
    if ip.startswith("127.") and multi_node:
        raise LaunchFailed(f"hostname {socket.gethostname()} resolves to {ip}: other nodes "
                           "cannot reach it; set the site's 'interface' to the cluster network")
    return ip


def ray_start_args(spec: dict, ip: str, head_address: str | None,
                   object_store: int | None) -> list[str]:
    """Arguments of `ray start` for the head (head_address None) or a worker."""
    ports = spec["ports"]
    args = ["start", f"--node-ip-address={ip}", f"--temp-dir={spec['temp_dir']}",
            f"--node-manager-port={ports['node_manager']}",
            f"--object-manager-port={ports['object_manager']}",
            f"--metrics-export-port={ports['metrics_export']}",
            f"--dashboard-agent-grpc-port={ports['dashboard_agent_grpc']}",
            f"--dashboard-agent-listen-port={ports['dashboard_agent_listen']}",
            f"--runtime-env-agent-port={ports['runtime_env_agent']}",
            "--disable-usage-stats"]
    if head_address is None:
        args += ["--head", f"--port={ports['gcs']}",
                 f"--ray-client-server-port={ports['client']}",
                 f"--dashboard-host={spec['dashboard_host'] or ip}",
                 f"--dashboard-port={ports['dashboard']}"]
    else:
        args.append(f"--address={head_address}")
    if object_store:
        args.append(f"--object-store-memory={object_store}")
    if spec["num_cpus"] is not None:
        args.append(f"--num-cpus={spec['num_cpus']}")
    return args


def driver_command(template: str, address: str) -> str:
    return template.replace("{address}", address)


def atomic_write(path: Path, text: str) -> None:
    """Write whole or not at all: readers on other nodes never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()  # a full disk leaves no half-written temp file behind
        raise


def run_dir_problem(exc: OSError) -> str:
    """What a failed write to the shared run directory means, in words."""
    what = {errno.ENOSPC: "is full", errno.EDQUOT: "is over its quota",
            errno.EROFS: "became read-only"}.get(exc.errno or 0, "cannot be written")
    where = f": {exc.filename}" if exc.filename else ""
    return f"the run directory {what} ({exc.strerror}{where})"


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def probe(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def missing_nodes(expected: list[str], count: int, records: dict[str, dict]) -> list[str]:
    """Describe nodes that have not joined: named ones from spec, else by count of unknown."""
    joined = {name for name, rec in records.items() if rec.get("state") == "joined"}
    described = []
    names = expected or sorted(records)
    for name in names:
        if name in joined:
            continue
        rec = records.get(name)
        state = rec.get("state") if rec else None
        why = {None: "agent never started", "waiting": "agent waiting for the head",
               "starting": "ray start did not finish"}.get(state, f"state {state}")
        if rec and rec.get("reason"):
            why += f": {rec['reason']}"
        described.append(f"{name} ({why})")
    unnamed = count - len(joined) - len(described)
    if not expected and unnamed > 0:
        described.append(f"{unnamed} more node(s) whose agent never started")
    return described


def copy_lines(source, log) -> None:
    """The driver's output to driver.log (the launcher follows it) and to our own output (the
    job's output file on batch sites, the container's log on the local site)."""
    for line in source:
        if log is not None:
            try:
                log.write(line)
                log.flush()
            except (OSError, ValueError):  # a full run directory: keep draining the pipe
                log = None
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.buffer.write(line)
            sys.stdout.flush()


def session_processes(session: int) -> list[int]:
    """Processes of a session (from /proc), except its leader."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == session:
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid pgrp session ...: comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == session and fields[0] != "Z":
            found.append(int(entry))
    return found


def process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            words = handle.read().split(b"\0")
    except OSError:
        return str(pid)
    return " ".join(w.decode(errors="replace") for w in words if w)[:60] or str(pid)


def first_few(items: list[str], rest_hint: str, shown: int = 5) -> str:
    """A short list for a one-line message: the first few, then how many more and where."""
    text = ", ".join(items[:shown])
    if len(items) > shown:
        text += f" and {len(items) - shown} more ({rest_hint})"
    return text


def lost_nodes(joined_ips: dict[str, str], alive_ips: set[str]) -> list[str]:
    """Names of nodes that were in the cluster (ip -> name) and are no longer alive in it."""
    return sorted(name for ip, name in joined_ips.items() if ip not in alive_ips)


# ---------------------------------------------------------------------------------------------
# Interactive clusters (no driver): how to reach one, as connect.txt says it

DASHBOARD_LOCAL_PORT = 8265  # the laptop's end of the SSH tunnel (Ray's usual dashboard port)


def dashboard_url(spec: dict, head_ip: str) -> str:
    """Where the user reaches the dashboard: its published port on this host (local site), else
    the address it binds on the head (the cluster network)."""
    published = spec.get("published") or {}
    if published.get("dashboard"):
        return f"http://127.0.0.1:{published['dashboard']}"
    host = spec["dashboard_host"] or head_ip
    host = head_ip if host == "0.0.0.0" else host
    return f"http://{host}:{spec['ports']['dashboard']}"


def client_address(spec: dict, head_ip: str) -> str:
    """Ray Client's address (`ray.init("ray://...")` from outside the cluster)."""
    published = spec.get("published") or {}
    if published.get("client"):
        return f"ray://127.0.0.1:{published['client']}"
    return f"ray://{head_ip}:{spec['ports']['client']}"


def connect_text(spec: dict, head_ip: str, token_path: str) -> str:
    """connect.txt: comments and `export` lines, so that `. connect.txt` works in a shell."""
    url = dashboard_url(spec, head_ip)
    lines = [
        f"# rayhpc run {spec['run_id']}: {spec['nodes']} nodes up; stop it with "
        f"`invoke down --run {spec['run_id']}`",
        "# Python (Ray and Python as in the image), with the RAY_AUTH_* lines below exported:",
        f"#   ray.init(\"{client_address(spec, head_ip)}\")   (inside a Ray job: ray.init())",
        f"# Jobs: `invoke submit --run {spec['run_id']} -- CMD`, or `ray job submit -- CMD` "
        "with these lines:",
        f"export RAY_ADDRESS={url}",
        "export RAY_AUTH_MODE=token",
        f"export RAY_AUTH_TOKEN_PATH={token_path}",
        f"# dashboard: {url} (it asks for the token: the content of {token_path})",
    ]
    if not (spec.get("published") or {}).get("dashboard"):
        login = spec.get("login") or "<you>@<login node>"
        lines.append(f"# from your laptop: ssh -N -L {DASHBOARD_LOCAL_PORT}:{url.split('//')[1]} "
                     f"{login}   then open http://localhost:{DASHBOARD_LOCAL_PORT}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# The agent

# The Ray CLI in a process that imports Ray first and reads its arguments (a JSON list) from
# stdin after: a worker imports Ray (a second or more of CPU) while the head is still starting.
RAY_CLI_ARGS_FROM_STDIN = ("import json, sys; from ray.scripts.scripts import cli; "
                           "cli(args=json.loads(sys.stdin.readline()), prog_name='ray')")


class RayCli:
    """One `ray ...` command, started before its arguments are known."""

    def __init__(self, env: dict):
        # A file, not a pipe: nothing to drain while it runs. Closed by run() or cancel().
        self.output = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-c", RAY_CLI_ARGS_FROM_STDIN], env=env,
                                     stdin=subprocess.PIPE, stdout=self.output,
                                     stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)

    def run(self, args: tuple[str, ...], give_up=None) -> tuple[int | None, str]:
        """Exit code (None: ``give_up()`` became true first and it was killed) and output."""
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it died early: its output says why
            self.proc.stdin.write(json.dumps(list(args)) + "\n")
            self.proc.stdin.close()
        code = None
        while (code := self.proc.poll()) is None:
            if give_up and give_up():
                self.cancel()
                return None, ""
            time.sleep(POLL_S / 4)
        self.output.seek(0)
        text = self.output.read()
        self.output.close()
        return code, text

    def cancel(self) -> None:
        """Kill it unless it has finished (then its group may hold the raylet it started)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.output.close()


class Agent:
    def __init__(self, paths: RunPaths, node: str, spec: dict):
        self.paths = paths
        self.node = node
        self.spec = spec
        self.t0 = time.time()
        self.signalled: int | None = None
        self.node_file = paths.node_record(node)
        self.log_dir = paths.node_logs(node)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_dir / "agent.log", "a", buffering=1)  # noqa: SIM115 (agent-long)
        self.ip = ""
        self.env = self._ray_env()
        self.stop_cli: RayCli | None = None
        self.handle_signals()

    # -- plumbing

    def say(self, message: str) -> None:
        line = f"[rayhpc {self.node} +{time.time() - self.t0:5.1f}s] {message}"
        print(line, flush=True)
        if self._log is not None:
            try:
                self._log.write(line + "\n")
            except OSError:  # a full run directory: the container's output still has it
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

    def stop_requested(self) -> bool:
        return self.signalled is not None or self.paths.stop.exists()

    def record(self, state: str, **extra: object) -> None:
        write_json(self.node_file, {"node": self.node, "state": state, "ip": self.ip,
                                    "hostname": socket.gethostname(), "pid": os.getpid(),
                                    "time": time.time(), **extra})

    def record_last(self, state: str, **extra: object) -> None:
        """The node's last record: a run directory that fails now must not stop the ending."""
        try:
            self.record(state, **extra)
        except OSError as exc:
            self.say(f"state {state} not recorded: {run_dir_problem(exc)}")

    def _ray_env(self) -> dict:
        env = dict(os.environ)
        home = env.get("HOME", "")
        if not home or not os.access(home, os.W_OK):
            # A read-only image home (apptainer --no-home): Ray and drivers write ~/.ray.
            home = os.path.join(self.spec["temp_dir"], "home")
            os.makedirs(home, exist_ok=True)
            env["HOME"] = os.environ["HOME"] = home
        env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        token = self.paths.auth_token
        if self.spec["auth"] == "token" and token.exists():
            # From the package metadata: Ray reads RAY_AUTH_MODE once, when first imported.
            version = importlib.metadata.version("ray")
            if supports_token_auth(version):
                env["RAY_AUTH_MODE"] = "token"
                env["RAY_AUTH_TOKEN_PATH"] = str(token)
            else:
                self.say(f"Ray {version} has no token authentication (2.52+): "
                         "cluster runs without it")
        # The agent itself connects to Ray too (before importing it): same settings.
        os.environ.update({k: v for k, v in env.items() if k.startswith("RAY_")})
        return env

    def ray(self, *args: str, check: bool = True, interruptible: bool = False,
            cli: RayCli | None = None) -> int | None:
        """Run the Ray CLI (in ``cli`` when one was started ahead); its output goes to
        agent.log. ``interruptible``: give up (and return None) when a stop is requested
        meanwhile, e.g. a worker still joining a failed head."""
        cli = cli or RayCli(self.env)
        code, output = cli.run(args, self.stop_requested if interruptible else None)
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.write(output)
        if check and code is not None and code != 0:
            tail = " | ".join(output.strip().splitlines()[-2:])
            raise LaunchFailed(f"`ray {args[0]}` failed on {self.node} (exit {code}): {tail}")
        return code

    def object_store(self) -> int | None:
        try:
            shm = os.statvfs("/dev/shm")
            shm_bytes = shm.f_blocks * shm.f_frsize
        except OSError:
            shm_bytes = 0
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return object_store_bytes(shm_bytes, mem, self.spec["object_store_memory"])

    def check_temp_dir(self) -> None:
        if not temp_dir_fits(self.spec["temp_dir"]):
            raise LaunchFailed(f"Ray temp dir {self.spec['temp_dir']} is too long for Ray's "
                               f"AF_UNIX sockets ({AF_UNIX_MAX} bytes); use a shorter one")

    def prepare_stop(self) -> None:
        """Start `ray stop` ahead, idle until needed: at the end every node would otherwise
        import Ray at once, and the teardown waits for the slowest."""
        self.stop_cli = RayCli(self.env)

    def stop_ray(self, grace_s: int = RAY_STOP_GRACE_S) -> None:
        cli, self.stop_cli = self.stop_cli, None
        self.ray("stop", f"--grace-period={grace_s}", check=False, cli=cli)

    def harvest_logs(self) -> None:
        """Copy Ray's node-local logs into the run directory (they vanish with the node)."""
        session_logs = Path(self.spec["temp_dir"]) / "session_latest" / "logs"
        if not session_logs.is_dir():
            return
        try:
            shutil.copytree(session_logs.resolve(), self.log_dir, dirs_exist_ok=True,
                            ignore_dangling_symlinks=True)
        except shutil.Error as exc:  # files that vanished mid-copy, or a full disk
            self.say(f"some logs were not copied: {len(exc.args[0])} file(s), e.g. "
                     f"{exc.args[0][0][2]}")
        except OSError as exc:
            self.say(f"logs not copied: {run_dir_problem(exc)}")
        # The node's temp dir is the run's alone (HPC nodes keep /tmp between jobs).
        shutil.rmtree(self.spec["temp_dir"], ignore_errors=True)


class Head(Agent):
    def __init__(self, paths: RunPaths, node: str, spec: dict):
        super().__init__(paths, node, spec)
        self.driver: subprocess.Popen | None = None
        self.timing: dict = {"t_submit": spec["t_submit"], "nodes_expected": spec["nodes"],
                             "nodes_joined": 0, "nodes_lost": []}
        self.status: dict = {}

    def on_stop_request(self) -> None:
        """SIGTERM to the driver's process group; SIGKILL if it is still there 10 s later (a
        driver that ignores SIGTERM must not eat the walltime grace)."""
        driver = self.driver
        if driver is None or driver.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGTERM)

        def kill_group() -> None:
            # The whole group: the shell of `shell=True` may be gone while its child lives on.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(driver.pid, signal.SIGKILL)

        timer = threading.Timer(DRIVER_KILL_AFTER_S, kill_group)
        timer.daemon = True
        timer.start()

    def run(self) -> int:
        code, error = 1, ""
        try:
            self.check_temp_dir()
            address = self.start_head()
            if self.wait_for_nodes(address) and not self.stop_requested():
                # No driver: an interactive cluster, up until a stop (see serve).
                interactive = self.spec["driver"] is None
                code = self.serve() if interactive else self.run_driver(address)
            else:
                code = 128 + (self.signalled or signal.SIGTERM)
                error = "stopped before the driver ran (walltime warning, cancel or Ctrl-C)"
        except LaunchFailed as exc:
            error = str(exc)
            self.say(f"error: {error}")
        except OSError as exc:  # the shared run directory failing mid-run
            error = run_dir_problem(exc)
            self.say(f"error: {error}")
        self.teardown()
        if self.signalled:
            code = 128 + self.signalled
        try:
            if error:
                atomic_write(self.paths.error, error + "\n")
            write_json(self.paths.timing, self.timing)
            atomic_write(self.paths.exit_code, f"{code}\n")
        except OSError as exc:
            self.say(f"error: {run_dir_problem(exc)}: exit code not recorded")
        # The launcher reads this line from the head's output when exit_code cannot be written.
        self.say(f"done: exit code {code}")
        return code

    def start_head(self) -> str:
        self.ip = node_ip(self.spec["interface"], self.spec["nodes"] > 1)
        self.record("starting")
        self.say(f"starting Ray head on {self.ip}")
        self.ray(*ray_start_args(self.spec, self.ip, None, self.object_store()))
        address = f"{self.ip}:{self.spec['ports']['gcs']}"
        # The GCS is up once `ray start` returns: workers may join while we connect.
        self.timing["t_head_up"] = time.time()
        write_json(self.paths.head, {
            "address": address, "ip": self.ip, "node": self.node,
            "gcs_port": self.spec["ports"]["gcs"],
            "dashboard_port": self.spec["ports"]["dashboard"],
            "client_port": self.spec["ports"]["client"], "time": self.timing["t_head_up"]})
        self.connect(address)
        self.record("joined")
        self.say(f"head up at {address}")
        return address

    def connect(self, address: str) -> None:
        """Connect as a client: the head is up only when a driver can really connect."""
        import logging

        import ray

        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False,
                 namespace="rayhpc-agent")
        # Ray's core worker installs a crash handler that dies on SIGTERM: the agent's own
        # handlers must win, or a stop from outside would skip the teardown.
        self.handle_signals()

    def alive_nodes(self) -> list[dict]:
        import ray

        return [n for n in ray.nodes() if n.get("Alive")]

    def publish_status(self, **changes: object) -> None:
        self.status.update(changes)
        write_json(self.paths.status, self.status)

    def note(self, message: str) -> None:
        """Say something the user should see on the launcher's console too (status.json)."""
        self.say(message)
        with contextlib.suppress(OSError):
            self.publish_status(notes=[*self.status.get("notes", []), message])

    def node_records(self) -> dict[str, dict]:
        return {p.stem: read_json(p) or {} for p in self.paths.nodes.glob("*.json")}

    def watch_nodes(self, running=None) -> None:
        """While the driver runs (or ``running()`` is true): notice workers that leave the
        cluster (a killed container, a dead host) and say which, so that the summary can name
        them."""
        running = running or (lambda: self.driver is not None and self.driver.poll() is None)
        names = {rec.get("ip"): name for name, rec in self.node_records().items()
                 if rec.get("ip") and name != self.node}
        joined = {n["NodeManagerAddress"]: names.get(n["NodeManagerAddress"],
                                                     n["NodeManagerAddress"])
                  for n in self.alive_nodes() if n["NodeManagerAddress"] != self.ip}
        while running():
            try:
                alive = self.alive_nodes()
            except Exception as exc:  # noqa: BLE001 (the GCS is the head's own: keep watching)
                self.say(f"cannot list the nodes: {exc}")
                alive = None
            if alive is not None:
                lost = lost_nodes(joined, {n["NodeManagerAddress"] for n in alive})
                if lost != self.timing["nodes_lost"]:
                    for name in sorted(set(lost) - set(self.timing["nodes_lost"])):
                        self.say(f"node {name} left the cluster")
                    self.timing["nodes_lost"] = lost
                    self.publish_status(joined=len(alive), lost=lost)
            time.sleep(1.0)

    def wait_for_nodes(self, address: str) -> bool:
        expected = self.spec["nodes"]
        deadline = time.time() + self.spec["join_timeout"]
        joined = -1
        self.status = {"joined": 0, "expected": expected, "address": address, "lost": []}
        while not self.stop_requested():
            alive = len(self.alive_nodes())
            if alive != joined:
                joined = alive
                self.timing["nodes_joined"] = alive
                self.publish_status(joined=alive)
                self.say(f"{alive}/{expected} nodes joined")
            if alive >= expected:
                self.timing["t_all_joined"] = time.time()
                return True
            if time.time() > deadline:
                missing = missing_nodes(self.spec["node_names"], expected,
                                        self.node_records())
                raise LaunchFailed(
                    f"timed out after {self.spec['join_timeout']} s waiting for "
                    f"{expected} nodes ({alive} joined); never joined: "
                    f"{first_few(missing, f'see {self.paths.nodes}/') or 'unknown'}")
            time.sleep(POLL_S / 2)
        return False

    def run_driver(self, address: str) -> int:
        command = driver_command(self.spec["driver"], address)
        env = dict(self.env, RAY_ADDRESS=address, PYTHONUNBUFFERED="1",
                   RAYHPC_RUN_DIR=str(self.paths.dir), RAYHPC_NODES=str(self.spec["nodes"]))
        self.say(f"running driver: {command}")
        self.timing["t_driver_start"] = time.time()
        # Unbuffered: a full run directory fails a write (handled), never the close.
        with open(self.paths.driver_log, "wb", buffering=0) as log:
            self.driver = subprocess.Popen(command, shell=True, cwd=self.spec["shared"], env=env,
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                           start_new_session=True)
            copier = threading.Thread(target=copy_lines, args=(self.driver.stdout, log),
                                      daemon=True)
            copier.start()
            self.prepare_stop()
            threading.Thread(target=self._stop_driver_on_request, daemon=True).start()
            node_watch = threading.Thread(target=self.watch_nodes, daemon=True)
            node_watch.start()
            # The driver's end is its own exit, not the end of its output: a background
            # process it left behind may hold the pipe open for ever.
            code = self.driver.wait()
            self.timing["t_driver_end"] = time.time()
            self.stop_leftovers(self.driver.pid)
            copier.join(timeout=LEFTOVER_GRACE_S)
        node_watch.join(timeout=5)  # before teardown drops the connection it lists nodes with
        code = 128 - code if code < 0 else code  # killed by signal N -> 128+N, as shells do
        self.say(f"driver exited with {code}")
        return code

    def serve(self) -> int:
        """Interactive (no driver): say how to connect (connect.txt), then keep the cluster up
        until a stop comes (`invoke down`, the walltime warning, a cancel, Ctrl-C). Ray jobs
        come and go meanwhile; the exit code is that of the stop (143, or 128 + the signal)."""
        self.timing["t_driver_start"] = time.time()
        self.prepare_stop()
        atomic_write(self.paths.connect,
                     connect_text(self.spec, self.ip, str(self.paths.auth_token)))
        self.say(f"cluster up, interactive: {self.paths.connect}")
        self.watch_nodes(running=lambda: not self.stop_requested())
        self.timing["t_driver_end"] = time.time()
        who = signal.Signals(self.signalled).name if self.signalled else "the stop file"
        if not self.signalled:
            with contextlib.suppress(OSError):
                who = self.paths.stop.read_text().strip() or who
        self.note(f"stopping the cluster ({who})")
        return 128 + (self.signalled or signal.SIGTERM)

    def stop_leftovers(self, session: int) -> None:
        """Stop what the driver left running in its session (`cmd &`): TERM, then KILL."""
        left = session_processes(session)
        if not left:
            return
        names = ", ".join(sorted({process_name(pid) for pid in left[:5]}))
        self.note(f"the driver left {len(left)} process(es) running ({names}): stopping them")
        deadline = time.monotonic() + LEFTOVER_GRACE_S
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            while (left := session_processes(session)) and time.monotonic() < deadline:
                time.sleep(POLL_S / 2)
            if not left:
                return

    def _stop_driver_on_request(self) -> None:
        """A stop file from outside (the job script on the walltime warning) stops the driver."""
        while self.driver and self.driver.poll() is None:
            if self.paths.stop.exists():
                self.say("stop requested: stopping the driver")
                self.on_stop_request()
                return
            time.sleep(POLL_S)

    def teardown(self) -> None:
        try:
            self.paths.request_stop(f"head: {self.node} is tearing down")
            told = True
        except OSError as exc:  # the workers stop when the head is gone instead
            self.say(f"cannot tell the workers to stop: {run_dir_problem(exc)}")
            told = False
        ray = sys.modules.get("ray")
        if ray is not None:
            ray.shutdown()  # the agent's own connection, made in start_head
        self.stop_ray()
        self.harvest_logs()
        self.record_last("stopped")
        deadline = time.time() + (self.spec["stop_timeout"] if told else 0)
        while time.time() < deadline:
            # Batch nodes are named by host and known from their records only; lost nodes
            # cannot say they stopped.
            records = self.node_records()
            workers = (set(self.spec["node_names"] or records) - {self.node}
                       - set(self.timing["nodes_lost"]))
            if all(records.get(n, {}).get("state") in (None, *FINAL_STATES) for n in workers):
                break
            time.sleep(POLL_S)
        self.timing["t_teardown_done"] = time.time()


class Worker(Agent):
    def run(self) -> int:
        head = None
        cli = RayCli(self.env)
        try:
            self.check_temp_dir()
            head = self.wait_for_head()
            if head is None:
                cli.cancel()
                self.record("stopped", reason="stopped before joining")
                return 128 + self.signalled if self.signalled else 0
            joined = self.join(head, cli)
            reason = self.follow(head) if joined else "stop requested while joining"
            state = "lost-head" if reason == "head gone" else "stopped"
        except (LaunchFailed, OSError) as exc:
            cli.cancel()
            reason = run_dir_problem(exc) if isinstance(exc, OSError) else str(exc)
            self.say(f"error: {reason}")
            state = "failed"
        # A stop can come before the head's loss is noticed (the launcher saw it first).
        headless = state == "lost-head" or (
            head is not None and not probe(head["ip"], head["gcs_port"], timeout=0.5))
        self.stop_ray(RAY_STOP_GRACE_HEADLESS_S if headless else RAY_STOP_GRACE_S)
        self.harvest_logs()
        self.record_last(state, reason=reason)
        self.say(f"{state} ({reason})")
        return 0 if state == "stopped" else 1

    def wait_for_head(self) -> dict | None:
        self.record("waiting")
        wait_s = self.spec["join_timeout"] + HEAD_START_ALLOWANCE_S
        deadline = time.time() + wait_s
        while not self.stop_requested():
            head = read_json(self.paths.head)
            if head:
                return head
            if time.time() > deadline:
                raise LaunchFailed(f"no head.json after {wait_s} s: the head never came up")
            time.sleep(POLL_S / 2)
        return None

    def join(self, head: dict, cli: RayCli) -> bool:
        self.ip = node_ip(self.spec["interface"], True)
        self.record("starting")
        self.say(f"joining {head['address']} from {self.ip}")
        if self.ray(*ray_start_args(self.spec, self.ip, head["address"], self.object_store()),
                    interruptible=True, cli=cli) is None:
            return False
        self.record("joined")
        self.prepare_stop()
        return True

    def follow(self, head: dict) -> str:
        failures, next_probe = 0, 0.0
        while True:
            if self.stop_requested():
                return "stop requested"
            if time.monotonic() >= next_probe:
                next_probe = time.monotonic() + 1.0
                failures = 0 if probe(head["ip"], head["gcs_port"]) else failures + 1
                if failures >= HEAD_PROBE_FAILURES:
                    self.say("head is gone: stopping")
                    return "head gone"
            time.sleep(POLL_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="rayhpc node agent (one per node)")
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--role", choices=("head", "worker"),
                        help="default: head for rank 0 of the launcher, else worker")
    parser.add_argument("--node-name", help="default: this host's name")
    args = parser.parse_args(argv)
    paths = RunPaths(args.run_dir)
    spec = read_json(paths.spec)
    if spec is None:
        print(f"rayhpc agent: cannot read {paths.spec}", file=sys.stderr)
        return 2
    role = args.role
    if role is None:
        rank = detect_rank()
        if rank is None:
            print("rayhpc agent: no --role and no rank variable "
                  f"({', '.join(RANK_ENV_VARS)})", file=sys.stderr)
            return 2
        role = "head" if rank == 0 else "worker"
    node = args.node_name or socket.gethostname()
    agent = (Head if role == "head" else Worker)(paths, node, spec)
    try:
        return agent.run()
    except Exception:
        # A bug or an unforeseen Ray failure: keep the traceback with the run, tell the launcher.
        agent.say("agent failed:\n" + traceback.format_exc())
        if role == "head":
            atomic_write(paths.error, f"node agent on {node} failed: "
                         f"{traceback.format_exc().strip().splitlines()[-1]} "
                         f"(traceback in logs/{node}/agent.log)\n")
        raise


if __name__ == "__main__":
    sys.exit(main())
