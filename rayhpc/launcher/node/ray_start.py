"""`ray start` for one node: its arguments, the Ray versions that take them, the node's address,
CPUs and object store size."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import struct

from rayhpc.launcher.contract import NODE_IP_ENV, LaunchSpec, NodeGroup
from rayhpc.launcher.node.launch_failed import LaunchFailed

TOKEN_AUTH_SINCE = (2, 52)
# `ray start --labels key=value,...`: Ray's docs, "Use labels to control scheduling": "In Ray
# version 2.49.0 and above, you can use labels" (docs.ray.io ray-core/scheduling/labels.html).
LABELS_SINCE = (2, 49)
MIN_OBJECT_STORE = 80 * 1024 * 1024  # Ray refuses less than 75 MiB


def version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def supports_token_auth(ray_version: str) -> bool:
    return version_tuple(ray_version)[:2] >= TOKEN_AUTH_SINCE


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: what srun, aprun, mpiexec or jsrun
    gave the task), not the node's count that Ray would take by itself."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def object_store_bytes(shm_bytes: int, mem_bytes: int, requested: int | None = None) -> int | None:
    """Object store size that fits /dev/shm (else Ray falls back to slow /tmp); None: Ray's default.

    Ray's own default is 30% of memory; keep that, capped at 80% of the shm size.
    """
    if requested:
        return int(requested)
    size = min(int(mem_bytes * 0.3), int(shm_bytes * 0.8))
    return size if size >= MIN_OBJECT_STORE else None


def interface_ip(name: str) -> str:
    """IPv4 address of a network interface (SIOCGIFADDR), e.g. the high-speed network's."""
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
    if os.environ.get(NODE_IP_ENV):
        return os.environ[NODE_IP_ENV]
    ip = interface_ip(interface) if interface else socket.gethostbyname(socket.gethostname())
    if ip.startswith("127.") and multi_node:
        raise LaunchFailed(f"hostname {socket.gethostname()} resolves to {ip}: other nodes "
                           "cannot reach it; set the site's 'interface' to the cluster network")
    return ip


def agent_addresses(interface: str | None, multi_node: bool) -> list[str]:
    """Where the head's agent listens: the node's cluster address, and its host name's address
    where that differs (the job script gives workers the head's host name), never every
    interface; [""] (every interface) only where neither can be found now (the start of the
    head then says why)."""
    try:
        addresses = [node_ip(interface, multi_node)]
        by_name = socket.gethostbyname(socket.gethostname())
    except (LaunchFailed, OSError):
        return [""]
    if by_name not in addresses and not by_name.startswith("127."):
        addresses.append(by_name)
    return addresses


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


def ray_start_args(spec: LaunchSpec, ip: str, head_address: str | None,
                   object_store: int | None, temp_dir: str, cpus: int | None = None,
                   group: NodeGroup | None = None, labels: dict | None = None) -> list[str]:
    """Arguments of `ray start` for the head (head_address None) or a worker. ``temp_dir``:
    the node's Ray temp dir; ``cpus``: the CPUs the agent may use, Ray's CPU count unless the
    spec sets num_cpus (or head_cpus, on the head). ``group``: the node's group (its num_cpus,
    num_gpus and resources win); ``labels``: Ray node labels (only where this Ray takes them)."""
    ports = spec.ports
    args = ["start", f"--node-ip-address={ip}", f"--temp-dir={temp_dir}",
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
                 f"--dashboard-host={spec.dashboard_host or ip}",
                 f"--dashboard-port={ports['dashboard']}"]
    else:
        args.append(f"--address={head_address}")
    if object_store:
        args.append(f"--object-store-memory={object_store}")
    num_cpus = next((n for n in (group and group.num_cpus, spec.num_cpus) if n is not None),
                    cpus)
    if head_address is None and spec.head_cpus is not None:
        num_cpus = spec.head_cpus  # 0 keeps tasks off the head (Ray's large-cluster advice)
    if num_cpus is not None:
        args.append(f"--num-cpus={num_cpus}")
    num_gpus = next((n for n in (group and group.num_gpus, spec.num_gpus) if n is not None),
                    None)
    if num_gpus is not None:
        args.append(f"--num-gpus={num_gpus}")
    if group and group.resources:
        args.append(f"--resources={json.dumps(group.resources, sort_keys=True)}")
    if labels:
        args.append("--labels=" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())))
    return args
