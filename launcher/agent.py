#!/usr/bin/env python3
"""rayhpc node agent: runs in every container of a launch and does the node's work.

Standard library and Ray only, so any stock rayproject/ray image runs it as delivered (the
launcher copies this file into the run directory). No MPI is needed.

  head (rank 0):   listen for the workers' agents, start Ray's head, publish head.json, wait for
                   every node, run the driver (or, with no driver, write connect.txt and keep
                   the cluster up until a stop), stop every node, write exit_code and timing.json.
  worker (rank>0): reach the head's agent over TCP, join Ray, follow the head; stop when the
                   head says so, on SIGTERM/SIGINT/SIGHUP, or when the connection to it closes.

The control plane is the network, not the shared file system (at 1024 nodes, every file a node
polls is a metadata server's load): workers find the head by probing its agent port (backoff
0.1 s to 2 s, jittered), get its address, report their state and get "stop" over that one
connection, and a closed connection means the head is gone. On the shared run directory each
node reads spec.json and the token once, writes one log archive and one record at its end; only
the head watches the `stop` file (once a second). `RunPaths` below names every file.
"""

from __future__ import annotations

import os
import sys

# This file runs from the run directory on the shared file system: Python's import system would
# list and stat that directory for every module imported from here on, on every node. Nothing
# is imported from it; take it off the path before anything else is imported.
if __name__ == "__main__" and sys.path and sys.path[0] == os.path.dirname(
        os.path.abspath(__file__)):
    del sys.path[0]

import argparse  # noqa: E402
import contextlib
import errno
import functools
import hashlib
import importlib.metadata
import io
import json
import random
import select
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import tarfile
import tempfile
import threading
import time
import traceback
from pathlib import Path

# The job script names the launcher's rank variable(s) here (comma-separated; each scheduler
# module declares its own). Without it (the agent started by other means, no --role), the
# launchers' rank variables below, in the order they are trusted.
RANK_VARS_ENV = "RAYHPC_RANK_VARS"
RANK_ENV_VARS = ("SLURM_PROCID", "ALPS_APP_PE", "PMI_RANK", "PALS_RANKID",
                 "OMPI_COMM_WORLD_RANK", "JSM_NAMESPACE_RANK")
TOKEN_AUTH_SINCE = (2, 52)
# `ray start --labels key=value,...`: Ray's docs, "Use labels to control scheduling": "In Ray
# version 2.49.0 and above, you can use labels" (docs.ray.io ray-core/scheduling/labels.html).
LABELS_SINCE = (2, 49)
NODE_LABEL = "rayhpc.io/node"  # which node this is (the launcher adds group and image labels)
MIN_OBJECT_STORE = 80 * 1024 * 1024  # Ray refuses less than 75 MiB
AF_UNIX_MAX = 107
# The longest tail Ray appends to its temp dir for a socket path (session name, sockets/...).
RAY_SOCKET_SUFFIX = len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")
# Workers wait this long (on top of the join timeout) for the head to come up at all; the head
# tells them to stop sooner when it fails.
HEAD_START_ALLOWANCE_S = 600
FINAL_STATES = ("stopped", "lost-head", "failed")
DRIVER_KILL_AFTER_S = 10  # SIGKILL a driver still there this long after SIGTERM
LEFTOVER_GRACE_S = 3  # what the driver left running gets this long after SIGTERM
# Seconds Ray's processes get to exit on SIGTERM before SIGKILL. A raylet whose head is gone
# waits for the GCS instead of exiting: no grace is of use there.
RAY_STOP_GRACE_S = 5
RAY_STOP_GRACE_HEADLESS_S = 1
POLL_S = 0.2
# Finding the head: probe its agent port with backoff from 0.1 s to 2 s (x0.5-1.5 jitter);
# the run directory is looked at only every FILE_CHECK_S (the stop file; head.json when the
# head's host is not known in advance).
PROBE_FIRST_S, PROBE_MAX_S = 0.1, 2.0
FILE_CHECK_S = 15.0
HEAD_HOST_ENV = "RAYHPC_HEAD_HOST"  # the head's host, where the job script knows it
STOP_FILE_EVERY_S = 1.0  # the head looks at the stop file at most this often
STATUS_EVERY_S = 1.0  # status.json is rewritten at most this often (and at once when all joined)
HARVEST_OPS_PER_S = 150  # the run directory operations per second the archives may cost
RAY_START_TRIES = 3  # `ray start` on a worker, with jittered backoff between tries
# Keepalive on the control connection: a dead host (no FIN) is noticed in about 90 s.
KEEPALIVE = {"TCP_KEEPIDLE": 30, "TCP_KEEPINTVL": 10, "TCP_KEEPCNT": 6}
# Ray's published scalability envelope ("Ray Scalability Envelope", release/benchmarks/
# README.md in ray-project/ray: "# nodes in cluster (with trivial task workload) | 3k+"); the
# head says so above it.
RAY_TESTED_NODES = 3000
# Log harvest: Ray's daemons' logs always go first; per-process worker logs only from the head
# and failed nodes, or while the cap leaves room.
# The order `ray stop` stops a node's processes in (None: every other one).
STOP_ORDER = ("raylet", None, "gcs_server")
WORKER_LOG_PREFIXES = ("worker-", "python-core-worker-", "python-core-driver-",
                       "runtime_env_setup-")


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
      head.json (address, once), status.json (join progress, lost nodes, notes; at most once a
      second), driver.log, connect.txt (interactive clusters: how to connect, once every node
      joined), timing.json, error, exit_code (last: the run is over)
    each node's agent, once, at its end:
      logs/<node>.log (its agent's lines, opened once and appended to as it goes)
      logs/<node>.tar.gz (Ray's logs, capped; MANIFEST.json inside says what was kept and
      dropped); its final record goes to the head over the network, and the head
      writes every node's in nodes.json; a node that cannot tell the head (it never reached it,
      or the head is gone) writes its own, nodes/<node>.json
    stop (a request, written once with O_EXCL by whoever asks first; the text says who):
      the job script (walltime warning or its own walltime timer, scancel --batch), the
      launcher, or the head at teardown
    the job script, only when no agent can start (the container runtime is not on PATH after
      the site's setup): error, then exit_code
    the local launcher, only where no agent can any more:
      logs/containers.log (the containers' own output); logs/<node>.tar.gz of a node whose
      agent wrote none (Ray's logs copied out of its stopped container); and error,
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
        self.nodes_file = self.dir / "nodes.json"
        self.logs = self.dir / "logs"
        self.containers_log = self.logs / "containers.log"

    def node_record(self, node: str) -> Path:
        return self.nodes / f"{node}.json"

    def node_archive(self, node: str) -> Path:
        return self.logs / f"{node}.tar.gz"

    def node_log(self, node: str) -> Path:
        """A node's agent log, appended to as it goes (one open per node)."""
        return self.logs / f"{node}.log"

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

def rank_vars(environ: dict | os._Environ = os.environ) -> tuple[str, ...]:
    """The variables that hold this task's rank: the ones the job script names, else all the
    launchers' known ones."""
    named = tuple(v for v in environ.get(RANK_VARS_ENV, "").split(",") if v.strip())
    return named or RANK_ENV_VARS


def detect_rank(environ: dict | os._Environ = os.environ) -> int | None:
    for var in rank_vars(environ):
        value = environ.get(var.strip(), "")
        if value.strip().isdigit():
            return int(value)
    return None


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: what srun, aprun, mpiexec or jsrun
    gave the task), not the node's count that Ray would take by itself."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def without_proxy(environ: dict, *hosts: str) -> dict:
    """Where the site sets an outbound proxy, the cluster's own addresses must bypass it:
    ``hosts`` are added to no_proxy/NO_PROXY (the job script sets the site's own list)."""
    if not any(environ.get(v) for v in ("http_proxy", "https_proxy", "HTTP_PROXY",
                                        "HTTPS_PROXY")):
        return environ
    current = environ.get("no_proxy") or environ.get("NO_PROXY") or ""
    entries = [e for e in current.split(",") if e]
    for host in ("localhost", "127.0.0.1", *hosts):
        if host and host not in entries:
            entries.append(host)
    value = ",".join(entries)
    return {**environ, "no_proxy": value, "NO_PROXY": value}


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
    """This node's address for Ray: $RAYHPC_NODE_IP when set, by interface when the site names
    one, else by hostname."""
    if os.environ.get("RAYHPC_NODE_IP"):
        return os.environ["RAYHPC_NODE_IP"]
    ip = interface_ip(interface) if interface else socket.gethostbyname(socket.gethostname())
    if ip.startswith("127.") and multi_node:
        raise LaunchFailed(f"hostname {socket.gethostname()} resolves to {ip}: other nodes "
                           "cannot reach it; set the site's 'interface' to the cluster network")
    return ip


def ray_start_args(spec: dict, ip: str, head_address: str | None,
                   object_store: int | None, cpus: int | None = None,
                   group: dict | None = None, labels: dict | None = None) -> list[str]:
    """Arguments of `ray start` for the head (head_address None) or a worker. ``cpus``: the
    CPUs the agent may use, Ray's CPU count unless the spec sets num_cpus (or head_cpus, on
    the head). ``group``: the node's group (its num_cpus, num_gpus and resources win);
    ``labels``: Ray node labels (only where this Ray takes them)."""
    group = group or {}
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
    num_cpus = next((n for n in (group.get("num_cpus"), spec["num_cpus"]) if n is not None),
                    cpus)
    if head_address is None and spec["head_cpus"] is not None:
        num_cpus = spec["head_cpus"]  # 0 keeps tasks off the head (Ray's large-cluster advice)
    if num_cpus is not None:
        args.append(f"--num-cpus={num_cpus}")
    num_gpus = next((n for n in (group.get("num_gpus"), spec.get("num_gpus")) if n is not None),
                    None)
    if num_gpus is not None:
        args.append(f"--num-gpus={num_gpus}")
    if group.get("resources"):
        args.append(f"--resources={json.dumps(group['resources'], sort_keys=True)}")
    if labels:
        args.append("--labels=" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())))
    return args


def label_value(text: str) -> str:
    """``text`` as a Ray label value (Kubernetes' syntax: at most 63 of [-_.A-Za-z0-9],
    alphanumeric at both ends): other characters become `_`, and the end (a tag, a file name,
    a host's number) is kept when it is too long."""
    value = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in text)
    return value[-63:].strip("-_.")


def node_resources(ray_nodes: list[dict], names: list[str],
                   names_by_ip: dict[str, str]) -> dict[str, dict]:
    """What each node brought to Ray (from `ray.nodes()`), by node name: CPUs, GPUs and their
    kind, memory and object store bytes, custom resources. A node is known by its label (one
    of ``names``), else by its address."""
    by_label = {label_value(name): name for name in names}
    found = {}
    for info in ray_nodes:
        labels = info.get("Labels") or {}
        name = (by_label.get(labels.get(NODE_LABEL, ""))
                or names_by_ip.get(info.get("NodeManagerAddress", "")))
        if not name:
            continue
        res = info.get("Resources") or {}
        kinds = sorted(k.split(":", 1)[1] for k in res if k.startswith("accelerator_type:"))
        found[name] = {
            "cpus": res.get("CPU", 0), "gpus": res.get("GPU", 0),
            "gpu_kind": ",".join(kinds) or labels.get("ray.io/accelerator-type", ""),
            "memory": int(res.get("memory", 0)),
            "object_store": int(res.get("object_store_memory", 0)),
            "custom": {k: v for k, v in sorted(res.items())
                       if k not in ("CPU", "GPU", "memory", "object_store_memory")
                       and not k.startswith(("node:", "accelerator_type:"))}}
    return found


def gpu_shortfall(groups: list[dict], group_of: dict[str, str],
                  resources: dict[str, dict]) -> str:
    """Why the launch must fail ("" : it need not): a group that asked for GPUs (`gpu`, and no
    num_gpus of 0) has nodes that brought none to Ray. A GPU job silently on CPUs is worse."""
    for group in groups:
        if not group.get("gpu") or group.get("num_gpus") == 0:
            continue
        without = sorted(node for node, owner in group_of.items()
                         if owner == group["name"] and not resources.get(node, {}).get("gpus"))
        if without:
            return (f"group {group['name']} asked for {group['gpu']} GPUs, but Ray found none "
                    f"on {first_few(without, 'and more')} ({len(without)} of {group['nodes']} "
                    "nodes): check the group's scheduler resources (e.g. gpus_per_node), the "
                    "runtime's GPU flags and the image's GPU stack")
    return ""


def group_totals(groups: list[dict], group_of: dict[str, str],
                 resources: dict[str, dict]) -> dict[str, dict]:
    """Per group: nodes that reported, CPUs, GPUs (and kinds), memory and object store."""
    totals = {}
    for group in groups:
        nodes = [resources[n] for n, owner in group_of.items()
                 if owner == group["name"] and n in resources]
        totals[group["name"]] = {
            "nodes": len(nodes), "image": group.get("image", ""),
            **{key: sum(r[key] for r in nodes)
               for key in ("cpus", "gpus", "memory", "object_store")},
            "gpu_kind": ",".join(sorted({r["gpu_kind"] for r in nodes if r["gpu_kind"]})),
            "custom": {k: sum(r["custom"].get(k, 0) for r in nodes)
                       for k in sorted({k for r in nodes for k in r["custom"]})}}
    return totals


def size_text(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def resources_line(group: str, total: dict) -> str:
    """One console line of what a group's nodes brought: nodes, CPUs, GPUs, memory, object
    store, custom resources."""
    gpus = f"{total['gpus']:g} GPUs" + (f" ({total['gpu_kind']})" if total["gpu_kind"] else "")
    custom = "".join(f", {name} {amount:g}" for name, amount in total["custom"].items())
    who = f"group {group}: " if group else ""
    image = f" of {total['image']}" if group and total["image"] else ""
    return (f"{who}{total['nodes']} node{'s' if total['nodes'] != 1 else ''}{image}: "
            f"{total['cpus']:g} CPUs, {gpus}, {size_text(total['memory'])} memory, "
            f"{size_text(total['object_store'])} object store{custom}")


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


def raise_fd_limit() -> tuple[int, int]:
    """Soft open-files limit up to the hard one (Ray holds many sockets per node; its large
    cluster guide asks for 65535 or more). Returns (soft, hard) after."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft, hard


def backoff(attempt: int, first: float = PROBE_FIRST_S, most: float = PROBE_MAX_S) -> float:
    """Seconds before try ``attempt`` + 1: doubling from ``first`` up to ``most``, jittered
    (x0.5-1.5) so that a thousand nodes do not knock at once."""
    return min(most, first * 2 ** attempt) * random.uniform(0.5, 1.5)


def harvest_spread_s(nodes: int, stop_timeout: float) -> float:
    """Over how many seconds the workers spread the writing of their log archives (each picks
    a moment at random): on a cluster every node ends at once, and a thousand archives (two
    metadata operations each) at once would be a burst the file system feels. Well inside the
    head's wait for them."""
    return min(nodes * 2 / HARVEST_OPS_PER_S, stop_timeout / 2)


def nodes_poll_s(nodes: int, during_driver: bool = False) -> float:
    """How often the head asks Ray's GCS for every node's record: each answer carries all N
    records, so the rate falls as N grows (and is lower while the driver runs)."""
    if during_driver:
        return max(2.0, nodes / 32)
    return min(10.0, max(0.5, nodes / 100))


def secret_of(token: str) -> str:
    """What a worker shows the head agent: proof that it holds the run's token."""
    return hashlib.sha256(("rayhpc-agent:" + token).encode()).hexdigest()


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
        why = {None: "its agent never reached the head", "waiting": "agent waiting for the head",
               "starting": "ray start did not finish"}.get(state, f"state {state}")
        if rec and rec.get("reason"):
            why += f": {rec['reason']}"
        described.append(f"{name} ({why})")
    unnamed = count - len(joined) - len(described)
    if not expected and unnamed > 0:
        described.append(f"{unnamed} more node(s) whose agent never reached the head")
    return described


def first_few(items: list[str], rest_hint: str, shown: int = 5) -> str:
    """A short list for a one-line message: the first few, then how many more and where."""
    text = ", ".join(items[:shown])
    if len(items) > shown:
        text += f" and {len(items) - shown} more ({rest_hint})"
    return text


def lost_nodes(joined_ips: dict[str, str], alive_ips: set[str]) -> list[str]:
    """Names of nodes that were in the cluster (ip -> name) and are no longer alive in it."""
    return sorted(name for ip, name in joined_ips.items() if ip not in alive_ips)


def plan_archive(files: list[tuple[str, int]], cap: int, full: bool
                 ) -> tuple[list[tuple[str, int, int]], list[tuple[str, int, str]]]:
    """Which log files go into a node's archive: (name, size, bytes kept: the file's tail)
    and (name, size, why dropped). Ray's daemons' logs first, smallest first; per-process
    worker logs only for ``full`` nodes (the head, a failed node); at most ``cap`` bytes."""
    def is_worker_log(name: str) -> bool:
        return Path(name).name.startswith(WORKER_LOG_PREFIXES)

    kept, dropped, room = [], [], cap
    for name, size in sorted(files, key=lambda f: (is_worker_log(f[0]), f[1], f[0])):
        if is_worker_log(name) and not full:
            dropped.append((name, size, "worker process log of a node that ended cleanly"))
        elif room <= 0:
            dropped.append((name, size, f"over the cap of {cap} bytes"))
        else:
            kept.append((name, size, min(size, room)))
            room -= min(size, room)
    return kept, dropped


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


def process_command(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            words = handle.read().split(b"\0")
    except OSError:
        return []
    return [w.decode(errors="replace") for w in words if w]


def process_name(pid: int) -> str:
    return " ".join(process_command(pid))[:60] or str(pid)


def program_of(pid: int) -> str:
    """The program a process runs (its first word's last part: raylet, gcs_server, python)."""
    command = process_command(pid)
    return command[0].rsplit("/", 1)[-1] if command else ""


def stop_session(session: int, grace_s: float) -> list[str]:
    """Stop every process of a session; the names of those that were running. A session holds
    one node's Ray (started by `ray start` in a session of its own) or one driver's leftovers:
    nothing else of the user's on the node. Ray's processes go in `ray stop`'s order: the
    raylet first, the GCS last (a raylet whose GCS is gone waits for it instead of exiting);
    each group gets SIGTERM, then SIGKILL after ``grace_s``."""
    names = sorted({process_name(pid) for pid in session_processes(session)[:5]})
    for group in STOP_ORDER:
        members = [pid for pid in session_processes(session)
                   if group is None or program_of(pid) == group]
        if group is None:  # everything but the GCS
            members = [pid for pid in members if program_of(pid) != STOP_ORDER[-1]]
        signal_until_gone(members, grace_s)
    return names


def signal_until_gone(pids: list[int], grace_s: float) -> None:
    """SIGTERM, wait up to ``grace_s`` for them to go, SIGKILL the rest (and wait for that)."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 2.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while (pids := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not pids:
            return


def alive(pid: int) -> bool:
    """Running (a zombie has ended: only its parent's wait is missing)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


# ---------------------------------------------------------------------------------------------
# The control plane: JSON lines over TCP between each worker's agent and the head's agent

class Channel:
    """One connection: send messages (thread-safe), read them as they come."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._buffer = b""
        self._lock = threading.Lock()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in KEEPALIVE.items():
            if hasattr(socket, name):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)

    def send(self, **message: object) -> bool:
        data = (json.dumps(message) + "\n").encode()
        try:
            with self._lock:
                self.sock.sendall(data)
            return True
        except OSError:
            return False

    def read(self) -> list[dict] | None:
        """What has arrived (the socket is readable): messages, or None once it closed."""
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            return None
        if not data:
            return None
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        messages = []
        for line in lines:
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                if isinstance(message, dict):
                    messages.append(message)
        return messages

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Peer:
    """A worker's agent as the head sees it."""

    def __init__(self, name: str, channel: Channel):
        self.name = name
        self.channel = channel
        self.state = "waiting"
        self.reason = ""
        self.ip = ""
        self.group = ""
        self.connected = True
        self.final: dict | None = None  # its last record, sent when it stopped

    def record(self) -> dict:
        return {"state": self.state, "reason": self.reason, "ip": self.ip, "group": self.group,
                "final": self.final}


class ControlServer:
    """The head agent's side: accepts the workers' agents (who must show the run's token),
    tracks what each says, tells them the head's address and, at the end, to stop. One thread,
    one selector, whatever the node count."""

    def __init__(self, port: int, secret: str):
        self.secret = secret
        self.listener = socket.create_server(("", port), backlog=4096)
        self.listener.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.peers: dict[str, Peer] = {}
        self._by_channel: dict[Channel, Peer] = {}
        self.changed = threading.Condition()
        self.version = 0  # bumped on every change of a peer
        self.head_message: dict | None = None
        self._closing = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        unnamed: dict[Channel, None] = {}
        while not self._closing:
            try:
                events = self.selector.select(timeout=1.0)
            except OSError:
                return
            for key, _ in events:
                if key.fileobj is self.listener:
                    with contextlib.suppress(OSError):
                        sock, _ = self.listener.accept()
                        sock.setblocking(False)
                        channel = Channel(sock)
                        unnamed[channel] = None
                        self.selector.register(sock, selectors.EVENT_READ, channel)
                    continue
                channel = key.data
                messages = channel.read()
                if messages is None:
                    self.selector.unregister(channel.sock)
                    unnamed.pop(channel, None)
                    self._closed(channel)
                    channel.close()
                    continue
                for message in messages:
                    if channel in unnamed:
                        if not self._hello(channel, message):
                            self.selector.unregister(channel.sock)
                            channel.close()
                            break
                        del unnamed[channel]
                    else:
                        self._update(channel, message)

    def _hello(self, channel: Channel, message: dict) -> bool:
        if message.get("secret") != self.secret or not message.get("node"):
            return False  # not one of this run's agents
        with self.changed:
            peer = Peer(str(message["node"]), channel)
            peer.group = str(message.get("group") or "")
            old = self.peers.get(peer.name)
            if old is not None and old.connected:
                peer.name = f"{peer.name}#{len(self.peers)}"  # two agents, one host name
            self.peers[peer.name] = peer
            self._by_channel[channel] = peer
            self._bump()
        if self.head_message is not None:
            channel.send(**self.head_message)
        return True

    def _update(self, channel: Channel, message: dict) -> None:
        with self.changed:
            peer = self._by_channel.get(channel)
            if peer is None:
                return
            peer.state = str(message.get("state", peer.state))
            peer.reason = str(message.get("reason", peer.reason))
            peer.ip = str(message.get("ip", peer.ip))
            if isinstance(message.get("final"), dict):
                peer.final = message["final"]
            self._bump()

    def _closed(self, channel: Channel) -> None:
        with self.changed:
            peer = self._by_channel.pop(channel, None)
            if peer is not None:
                peer.connected = False
                if peer.state not in FINAL_STATES:
                    peer.state, peer.reason = "gone", "its agent's connection closed"
                self._bump()

    def _bump(self) -> None:
        self.version += 1
        self.changed.notify_all()

    def announce(self, **message: object) -> None:
        """Tell every worker (and every one that connects later) ``message``."""
        self.head_message = message
        self.broadcast(**message)

    def broadcast(self, **message: object) -> None:
        with self.changed:
            peers = [p for p in self.peers.values() if p.connected]
        for peer in peers:
            peer.channel.send(**message)

    def count(self, state: str) -> int:
        with self.changed:
            return sum(1 for p in self.peers.values() if p.state == state)

    def records(self) -> dict[str, dict]:
        with self.changed:
            return {name: p.record() for name, p in self.peers.items()}

    def wait(self, version: int, timeout: float) -> int:
        """Until something changed after ``version`` (or ``timeout``); the version now."""
        with self.changed:
            self.changed.wait_for(lambda: self.version != version, timeout=timeout)
            return self.version

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self.listener.close()


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
    """One `ray ...` command, started before its arguments are known, in a session of its own:
    what `ray start` starts (the node's Ray) stays in that session, so that stopping this
    run's Ray stops nothing else of the user's on the node."""

    def __init__(self, env: dict):
        # A file, not a pipe: nothing to drain while it runs. Closed by run() or cancel().
        self.output = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-c", RAY_CLI_ARGS_FROM_STDIN], env=env,
                                     stdin=subprocess.PIPE, stdout=self.output,
                                     stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)

    @property
    def session(self) -> int:
        return self.proc.pid

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
        """Kill it unless it has finished (then its session holds the Ray it started)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.output.close()


class Agent:
    def __init__(self, paths: RunPaths, node: str, spec: dict, group: str = ""):
        self.paths = paths
        self.node = node
        self.spec = spec
        # The node's group (a launch with groups; {} otherwise): its resources, labels, GPUs.
        self.group = next((g for g in spec.get("groups") or [] if g["name"] == group), {})
        self.t0 = time.time()
        self.signalled: int | None = None
        # $RAYHPC_NODE_TEMP_DIR: several agents of one run on one host (the scale simulator).
        self.temp_dir = Path(os.environ.get("RAYHPC_NODE_TEMP_DIR") or spec["temp_dir"])
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        # In the run directory (one open; its lines are appended as they come, so that `invoke
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
        print(line, flush=True)
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

    def final_record(self, state: str, **extra: object) -> dict:
        return {"node": self.node, "state": state, "ip": self.ip,
                "hostname": socket.gethostname(), "pid": os.getpid(), "time": time.time(),
                **extra}

    def write_record(self, record: dict) -> None:
        """A node's own record file: only where the head cannot collect it."""
        try:
            self.paths.nodes.mkdir(exist_ok=True)
            write_json(self.paths.node_record(self.node), record)
        except OSError as exc:
            self.say(f"state {record['state']} not recorded: {run_dir_problem(exc)}")

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
        env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        if self.spec["auth"] == "token" and self.token:
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
        try:
            shm = os.statvfs("/dev/shm")
            shm_bytes = shm.f_blocks * shm.f_frsize
        except OSError:
            shm_bytes = 0
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return object_store_bytes(shm_bytes, mem, self.spec["object_store_memory"])

    def check_temp_dir(self) -> None:
        if not temp_dir_fits(str(self.temp_dir)):
            raise LaunchFailed(f"Ray temp dir {self.temp_dir} is too long for Ray's "
                               f"AF_UNIX sockets ({AF_UNIX_MAX} bytes); use a shorter one")

    def start_args(self, head_address: str | None) -> list[str]:
        spec = {**self.spec, "temp_dir": str(self.temp_dir)}
        labels = None
        if self.group:
            labels = {**self.group.get("labels", {}), NODE_LABEL: label_value(self.node)}
            if version_tuple(self.ray_version) < LABELS_SINCE:
                self.say(f"Ray {self.ray_version} takes no node labels (2.49+): the group's "
                         "labels are not set; target the group by its resources")
                labels = None
        return ray_start_args(spec, self.ip, head_address, self.object_store(), usable_cpus(),
                              self.group, labels)

    def stop_ray(self, grace_s: float = RAY_STOP_GRACE_S) -> None:
        """Stop this node's Ray: the processes of `ray start`'s session, nothing else."""
        if self.ray_session is not None:
            stop_session(self.ray_session, grace_s)
            self.ray_session = None

    def harvest_logs(self) -> dict:
        """One archive of this node's logs in the run directory, written once (a temp name,
        then renamed); Ray's node-local temp dir is removed after. Returns its summary."""
        session_logs = self.temp_dir / "session_latest" / "logs"
        files = [(str(p.relative_to(session_logs)), p.stat().st_size)
                 for p in (session_logs.rglob("*") if session_logs.is_dir() else [])
                 if p.is_file()]
        kept, dropped = plan_archive(files, self.spec["log_cap"],
                                     full=self.failed or isinstance(self, Head))
        manifest = {"kept": [{"file": n, "bytes": size, "kept_bytes": part}
                             for n, size, part in kept],
                    "dropped": [{"file": n, "bytes": size, "why": why}
                                for n, size, why in dropped]}
        summary = {"archive": self.paths.node_archive(self.node).name, "files_kept": len(kept),
                   "bytes_kept": sum(k[2] for k in kept), "files_dropped": len(dropped),
                   "bytes_dropped": sum(d[1] for d in dropped)}
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None
        target = self.paths.node_archive(self.node)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with tarfile.open(tmp, "w:gz", compresslevel=1) as tar:
                for name, size, part in kept:
                    add_file(tar, name, session_logs / name, skip=size - part)
                data = json.dumps(manifest, indent=1).encode()
                add_bytes(tar, "MANIFEST.json", data)
            os.replace(tmp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            summary = {"archive": None, "error": run_dir_problem(exc)}
            print(f"[rayhpc {self.node}] logs not kept: {summary['error']}", flush=True)
        # The node's temp dir is the run's alone (HPC nodes keep /tmp between jobs).
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return summary


def add_file(tar: tarfile.TarFile, name: str, path: Path, skip: int = 0) -> None:
    """A file into the archive; ``skip``: leave out its first bytes (keep the tail)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(skip)
            data = handle.read()
    except OSError:
        return  # vanished meanwhile
    add_bytes(tar, name, data)


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


class Head(Agent):
    def __init__(self, paths: RunPaths, node: str, spec: dict, group: str = ""):
        super().__init__(paths, node, spec, group)
        self.driver: subprocess.Popen | None = None
        self.timing: dict = {"t_submit": spec["t_submit"], "nodes_expected": spec["nodes"],
                             "nodes_joined": 0, "nodes_lost": []}
        self.status: dict = {"joined": 0, "expected": spec["nodes"], "lost": []}
        self._status_written = 0.0
        self._stop_seen = False
        self._stop_checked = 0.0
        self.server = ControlServer(spec["ports"]["agent"], secret_of(self.token))
        self.ray_nodes: list[dict] = []  # Ray's node list when every node had joined
        self.resources: dict[str, dict] = {}  # node -> what it brought to Ray

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

    def stop_requested(self) -> bool:
        """A signal, or the stop file (the job script's walltime warning, a cancel): the file
        is looked at once a second at most, by the head alone."""
        if self.signalled is not None or self._stop_seen:
            return True
        now = time.monotonic()
        if now - self._stop_checked >= STOP_FILE_EVERY_S:
            self._stop_checked = now
            self._stop_seen = self.paths.stop.exists()
        return self._stop_seen

    def run(self) -> int:
        code, error = 1, ""
        try:
            self.check_temp_dir()
            if self.spec["nodes"] > RAY_TESTED_NODES:
                self.note(f"{self.spec['nodes']} nodes is beyond what Ray's own scalability "
                          f"envelope covers ({RAY_TESTED_NODES}): expect a slow bring-up; "
                          "consider head_cpus: 0")
            address = self.start_head()
            if self.wait_for_nodes(address) and not self.stop_requested():
                self.report_resources()
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
        self.failed = bool(error)
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
        self.say(f"starting Ray head on {self.ip}")
        # The driver (and Ray's head) reach the head's address without the site's proxy.
        self.env = without_proxy(self.env, self.ip)
        self.ray(*self.start_args(None))
        address = f"{self.ip}:{self.spec['ports']['gcs']}"
        # The GCS is up once `ray start` returns: workers may join while we connect.
        self.timing["t_head_up"] = time.time()
        head = {"address": address, "ip": self.ip, "node": self.node,
                "gcs_port": self.spec["ports"]["gcs"], "agent_port": self.spec["ports"]["agent"],
                "dashboard_port": self.spec["ports"]["dashboard"],
                "client_port": self.spec["ports"]["client"], "time": self.timing["t_head_up"]}
        self.server.announce(head=head)
        write_json(self.paths.head, head)
        self.connect(address)
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

    def publish_status(self, force: bool = False, **changes: object) -> None:
        """status.json for the launcher: at most once a second, unless ``force``. It names
        every node with its state and address (`invoke status` and `logs` read them)."""
        self.status.update(changes)
        nodes = {self.node: {"state": "joined", "ip": self.ip, "group": self.group.get("name")},
                 **{name: {"state": r["state"], "ip": r["ip"], "group": r["group"] or None}
                    for name, r in self.server.records().items()}}
        for name, node in nodes.items():
            if not node["group"]:
                del node["group"]
            if name in self.resources:
                node["resources"] = self.resources[name]
        self.status["nodes"] = nodes
        now = time.monotonic()
        if force or now - self._status_written >= STATUS_EVERY_S:
            self._status_written = now
            write_json(self.paths.status, self.status)

    def report_resources(self) -> None:
        """What every node brought to Ray, from Ray's node list at the join (no extra call):
        one line per group on the console, each node's in status.json, the groups' totals in
        timing.json (the summary). A GPU group whose nodes brought no GPU fails the launch."""
        records = self.server.records()
        names_by_ip = {self.ip: self.node, **{r["ip"]: name for name, r in records.items()
                                              if r["ip"]}}
        self.resources = node_resources(self.ray_nodes, [self.node, *records], names_by_ip)
        groups = self.spec.get("groups") or [{"name": "", "nodes": self.spec["nodes"],
                                              "image": self.spec["image"]}]
        group_of = {self.node: self.group.get("name", ""),
                    **{name: r["group"] for name, r in records.items()}}
        totals = group_totals(groups, group_of, self.resources)
        self.timing["groups"] = totals
        for name, total in totals.items():
            self.note(resources_line(name, total))
        problem = gpu_shortfall(groups, group_of, self.resources)
        if problem:
            raise LaunchFailed(problem)

    def note(self, message: str) -> None:
        """Say something the user should see on the launcher's console too (status.json)."""
        self.say(message)
        with contextlib.suppress(OSError):
            self.publish_status(force=True, notes=[*self.status.get("notes", []), message])

    def wait_for_nodes(self, address: str) -> bool:
        """Until every node has joined: the workers say so over the control connection; Ray's
        own node list confirms it (asked rarely while they come, and at the end)."""
        expected = self.spec["nodes"]
        deadline = time.time() + self.spec["join_timeout"]
        self.status["address"] = address
        version, shown, next_gcs, alive = -1, -1, 0.0, 1
        while not self.stop_requested():
            joined = 1 + self.server.count("joined")  # what the workers' agents said
            if time.monotonic() >= next_gcs or joined >= expected:
                self.ray_nodes = self.alive_nodes()
                alive = len(self.ray_nodes)  # what Ray says
                next_gcs = time.monotonic() + (0.1 if joined >= expected
                                               else nodes_poll_s(expected))
            # All joined only once Ray confirms it; progress from whichever knows more.
            progress = max(joined, alive) if alive >= expected else min(max(joined, alive),
                                                                        expected - 1)
            if progress != shown:
                shown = progress
                self.timing["nodes_joined"] = progress
                self.publish_status(force=progress >= expected, joined=progress)
                self.say(f"{progress}/{expected} nodes joined")
            if alive >= expected:
                self.timing["t_all_joined"] = time.time()
                return True
            if time.time() > deadline:
                missing = missing_nodes(self.spec["node_names"][1:], expected - 1,
                                        self.server.records())
                raise LaunchFailed(
                    f"timed out after {self.spec['join_timeout']} s waiting for "
                    f"{expected} nodes ({alive} joined); never joined: "
                    f"{first_few(missing, f'states in {self.paths.status.name}') or 'unknown'}")
            version = self.server.wait(version, timeout=min(STOP_FILE_EVERY_S,
                                                            max(0.0, next_gcs
                                                                - time.monotonic())))
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
            node_watch = threading.Thread(target=self.watch_nodes, daemon=True)
            node_watch.start()
            # The driver's end is its own exit, not the end of its output: a background
            # process it left behind may hold the pipe open for ever.
            asked = False
            while (code := self.driver.poll()) is None:
                if not asked and self.signalled is None and self.stop_requested():
                    asked = True  # the stop file (a signal has stopped the driver already)
                    self.say("stop requested: stopping the driver")
                    self.on_stop_request()
                time.sleep(POLL_S)
            self.timing["t_driver_end"] = time.time()
            left = stop_session(self.driver.pid, LEFTOVER_GRACE_S)
            if left:
                self.note(f"the driver left {len(left)} process(es) running "
                          f"({', '.join(left)}): stopped them")
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

    def watch_nodes(self, running=None) -> None:
        """While the driver runs (or ``running()`` is true): notice workers that leave the
        cluster (a killed container, a dead host) and say which. Their agent's connection
        closing says it at once; Ray's node list, asked rarely, catches a node whose Ray died
        under a living agent."""
        running = running or (lambda: self.driver is not None and self.driver.poll() is None)
        by_ip = {r["ip"]: name for name, r in self.server.records().items() if r["ip"]}
        next_gcs = time.monotonic() + nodes_poll_s(self.spec["nodes"], during_driver=True)
        version = -1
        while running():
            lost = {name for name, r in self.server.records().items() if r["state"] == "gone"}
            if time.monotonic() >= next_gcs:
                next_gcs = time.monotonic() + nodes_poll_s(self.spec["nodes"], True)
                try:
                    alive = {n["NodeManagerAddress"] for n in self.alive_nodes()}
                    lost |= set(lost_nodes(by_ip, alive))
                except Exception as exc:  # noqa: BLE001 (the GCS is the head's own)
                    self.say(f"cannot list the nodes: {exc}")
            if sorted(lost) != self.timing["nodes_lost"]:
                for name in sorted(lost - set(self.timing["nodes_lost"])):
                    self.note(f"node {name} left the cluster; the run goes on without it")
                self.timing["nodes_lost"] = sorted(lost)
                with contextlib.suppress(OSError):
                    self.publish_status(force=True, joined=self.spec["nodes"] - len(lost),
                                        lost=sorted(lost))
            version = self.server.wait(version, timeout=1.0)

    def teardown(self) -> None:
        """Tell every worker to stop (over the network; the stop file too, for any that never
        reached us), stop our Ray, keep the logs, wait for the workers to say they stopped."""
        self.server.broadcast(stop="the head is tearing down")
        try:
            self.paths.request_stop(f"head: {self.node} is tearing down")
        except OSError as exc:
            self.say(f"cannot write the stop file: {run_dir_problem(exc)}")
        ray = sys.modules.get("ray")
        if ray is not None:
            ray.shutdown()  # the agent's own connection, made in start_head
        self.stop_ray()
        summary = self.harvest_logs()
        deadline = time.monotonic() + self.spec["stop_timeout"]
        version = -1
        while time.monotonic() < deadline:
            records = self.server.records()
            if all(r["state"] in (*FINAL_STATES, "gone") for r in records.values()):
                break
            version = self.server.wait(version, timeout=max(0.0, deadline - time.monotonic()))
        self.server.close()
        # Every node's final record in one file: one write for the whole cluster.
        records = {self.node: self.final_record("failed" if self.failed else "stopped",
                                                logs=summary)}
        for name, peer in self.server.records().items():
            records[name] = peer["final"] or {"node": name, "state": peer["state"],
                                              "reason": peer["reason"], "ip": peer["ip"]}
        try:
            write_json(self.paths.nodes_file, records)
        except OSError as exc:
            self.say(f"node records not written: {run_dir_problem(exc)}")
        self.timing["t_teardown_done"] = time.time()


class Worker(Agent):
    def __init__(self, paths: RunPaths, node: str, spec: dict, group: str = ""):
        super().__init__(paths, node, spec, group)
        self.channel: Channel | None = None
        self.head: dict | None = None
        self.told_stop = threading.Event()
        self.head_gone = threading.Event()
        self.head_known = threading.Event()

    def stop_requested(self) -> bool:
        return self.signalled is not None or self.told_stop.is_set() or self.head_gone.is_set()

    def run(self) -> int:
        cli = RayCli(self.env)  # imports Ray while we look for the head
        state, reason = "failed", ""
        try:
            self.check_temp_dir()
            if not self.reach_head():
                cli.cancel()
                reason = "stopped before reaching the head"
                state = "stopped"
            elif not self.wait_for_head_up():
                cli.cancel()
                state, reason = self.ending("before joining")
            else:
                self.join(cli)
                self.follow()
                state, reason = self.ending("")
        except (LaunchFailed, OSError) as exc:
            cli.cancel()
            reason = run_dir_problem(exc) if isinstance(exc, OSError) else str(exc)
            self.say(f"error: {reason}")
            self.failed = True
            self.tell(state="failed", reason=reason)
        self.stop_ray(RAY_STOP_GRACE_HEADLESS_S if self.head_gone.is_set() else RAY_STOP_GRACE_S)
        time.sleep(random.uniform(0, harvest_spread_s(self.spec["nodes"],
                                                      self.spec["stop_timeout"])))
        record = self.final_record(state, reason=reason, logs=self.harvest_logs())
        # The head writes every node's record at once; ours ourselves only if it cannot.
        if self.head_gone.is_set() or not (self.channel and self.channel.send(
                state=state, reason=reason, final=record)):
            self.write_record(record)
        self.say(f"{state} ({reason})")
        if self.channel is not None:
            self.channel.close()
        if self.signalled:
            return 128 + self.signalled
        return 0 if state == "stopped" else 1

    def ending(self, when: str) -> tuple[str, str]:
        if self.head_gone.is_set():
            return "lost-head", "the head's agent is gone" + (f" ({when})" if when else "")
        if self.signalled is not None:
            return "stopped", f"got {signal.Signals(self.signalled).name}"
        return "stopped", "the head said stop" + (f" {when}" if when else "")

    def tell(self, **message: object) -> None:
        if self.channel is not None:
            self.channel.send(**message)

    def head_host(self) -> str:
        """Where the head's agent listens: given by the launcher (the job script's first host,
        the local head's name), else learned from head.json."""
        return (os.environ.get(HEAD_HOST_ENV)
                or (self.spec["node_names"][0] if self.spec["node_names"] else ""))

    def reach_head(self) -> bool:
        """Connect to the head's agent: probe its port with jittered backoff; look at the run
        directory only every FILE_CHECK_S (a stop before we got through; head.json where the
        head's host is not known, or not answering after a while). False: stopped first."""
        host, port = self.head_host(), self.spec["ports"]["agent"]
        deadline = time.monotonic() + self.spec["join_timeout"] + HEAD_START_ALLOWANCE_S
        next_file_check = time.monotonic() + FILE_CHECK_S * random.uniform(0.5, 1.0)
        attempt, started = 0, time.monotonic()
        while self.signalled is None:
            if host:
                try:
                    sock = socket.create_connection((host, port), timeout=2.0)
                except OSError:
                    pass
                else:
                    self.channel = Channel(sock)
                    self.channel.send(node=self.node, secret=secret_of(self.token),
                                      group=self.group.get("name", ""))
                    threading.Thread(target=self._listen, daemon=True).start()
                    return True
            if time.monotonic() >= next_file_check:
                next_file_check = time.monotonic() + FILE_CHECK_S * random.uniform(0.75, 1.25)
                if self.paths.stop.exists():
                    return False
                # No host given, or none reached there for a while (the head runs elsewhere
                # than the job script thought): its own word, once written.
                if not host or time.monotonic() - started > 2 * FILE_CHECK_S:
                    head = read_json(self.paths.head)
                    host = head["ip"] if head else host
            if time.monotonic() > deadline:
                raise LaunchFailed(f"could not reach the head's agent at {host or '?'}:{port} "
                                   f"in {self.spec['join_timeout'] + HEAD_START_ALLOWANCE_S} s")
            time.sleep(backoff(attempt))
            attempt += 1
        return False

    def _listen(self) -> None:
        """Messages from the head: its address, then stop; the connection's end: head gone."""
        assert self.channel is not None
        sock = self.channel.sock
        while True:
            try:
                readable, _, _ = select.select([sock], [], [], 5.0)
            except (OSError, ValueError):
                readable = True
            if not readable:
                continue
            messages = self.channel.read()
            if messages is None:
                if not self.told_stop.is_set():
                    self.say("the head's agent is gone: stopping")
                self.head_gone.set()
                return
            for message in messages:
                if "head" in message:
                    self.head = message["head"]
                    self.head_known.set()
                if "stop" in message:
                    self.say(f"the head says stop ({message['stop']})")
                    self.told_stop.set()

    def wait_for_head_up(self) -> bool:
        """Until the head's GCS is up (the head tells us its address). False: stopped first."""
        self.tell(state="waiting")
        while not self.stop_requested():
            if self.head_known.wait(timeout=POLL_S):
                return True
        return False

    def join(self, cli: RayCli) -> None:
        """`ray start` against the head; tried again with jittered backoff when it fails (a GCS
        busy with a thousand registrations can refuse some)."""
        assert self.head is not None
        self.ip = node_ip(self.spec["interface"], True)
        self.tell(state="starting", ip=self.ip)
        self.say(f"joining {self.head['address']} from {self.ip}")
        for attempt in range(RAY_START_TRIES):
            try:
                self.ray(*self.start_args(self.head["address"]), cli=cli, interruptible=True)
                break
            except LaunchFailed as exc:
                self.stop_ray(RAY_STOP_GRACE_HEADLESS_S)  # whatever the failed try started
                if attempt + 1 == RAY_START_TRIES or self.stop_requested():
                    raise
                wait = backoff(attempt, first=1.0, most=8.0)
                self.say(f"{exc}; trying again in {wait:.1f} s")
                time.sleep(wait)
                cli = RayCli(self.env)
        if not self.stop_requested():
            self.tell(state="joined", ip=self.ip)

    def follow(self) -> None:
        """Until the head says stop, its agent is gone, or a signal: no polling of anything."""
        while not self.stop_requested():
            self.told_stop.wait(timeout=POLL_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="rayhpc node agent (one per node)")
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--role", choices=("head", "worker"),
                        help="default: head for rank 0 of the launcher, else worker")
    parser.add_argument("--node-name", help="default: this host's name")
    parser.add_argument("--group", default="", help="the node's group (a launch with groups)")
    args = parser.parse_args(argv)
    paths = RunPaths(args.run_dir)
    spec = read_json(paths.spec)
    if spec is None:
        print(f"rayhpc agent: cannot read {paths.spec}", file=sys.stderr)
        return 2
    if args.group and args.group not in {g["name"] for g in spec.get("groups") or []}:
        print(f"rayhpc agent: no group {args.group!r} in {paths.spec}", file=sys.stderr)
        return 2
    role = args.role
    if role is None:
        rank = detect_rank()
        if rank is None:
            print("rayhpc agent: no --role and no rank variable "
                  f"({', '.join(rank_vars())})", file=sys.stderr)
            return 2
        role = "head" if rank == 0 else "worker"
    node = args.node_name or socket.gethostname()
    agent = (Head if role == "head" else Worker)(paths, node, spec, args.group)
    try:
        return agent.run()
    except Exception:
        # A bug or an unforeseen Ray failure: keep the traceback with the run, tell the launcher.
        agent.say("agent failed:\n" + traceback.format_exc())
        if role == "head":
            with contextlib.suppress(OSError):
                atomic_write(paths.error, f"node agent on {node} failed: "
                             f"{traceback.format_exc().strip().splitlines()[-1]} "
                             "(traceback in the head's output)\n")
        raise


if __name__ == "__main__":
    sys.exit(main())
