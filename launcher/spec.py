"""The resolved description of one launch, and what the node agent reads of it (spec.json)."""

from __future__ import annotations

import secrets
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Fixed-port Ray components, offsets in a per-run block so that two runs sharing a node (or a
# host network) do not collide; worker processes take free ports from Ray's own range.
PORT_OFFSETS = {"gcs": 0, "dashboard": 1, "client": 2, "node_manager": 3, "object_manager": 4,
                "metrics_export": 5, "dashboard_agent_grpc": 6, "dashboard_agent_listen": 7,
                "runtime_env_agent": 8}
PORT_BLOCKS = (20000, 30000, 10)  # first port, end, block size


def new_run_id(now: float | None = None) -> str:
    """Unique and sortable: 20261123-190512-a3f9 (time, then 16 random bits)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return f"{stamp}-{secrets.token_hex(2)}"


def unused_run_id(busy_gcs_ports: set[int], tries: int = 100) -> str:
    """A new run id whose port block no unfinished run holds (runs may share a node)."""
    for _ in range(tries):
        run_id = new_run_id()
        if ports_for(run_id)["gcs"] not in busy_gcs_ports:
            break
    return run_id


def ports_for(run_id: str) -> dict[str, int]:
    first, end, step = PORT_BLOCKS
    base = first + (zlib.crc32(run_id.encode()) % ((end - first) // step)) * step
    return {name: base + offset for name, offset in PORT_OFFSETS.items()}


def node_names(nodes: int) -> list[str]:
    return ["head"] + [f"worker-{i}" for i in range(1, nodes)]


@dataclass
class LaunchSpec:
    run_id: str
    site: str
    scheduler: str
    runtime: str
    nodes: int
    shared: Path
    driver: str
    image: str
    join_timeout: int = 180
    stop_timeout: int = 30
    shm_size: str = "2g"
    object_store_memory: int | None = None
    dashboard_host: str = "127.0.0.1"
    interface: str | None = None
    temp_dir: str = ""
    num_cpus: int | None = None
    walltime: str = "00:30:00"
    queue: str | None = None
    account: str | None = None
    stop_grace: int = 60
    auth: str = "token"
    t_submit: float | None = None
    ports: dict[str, int] = field(default_factory=dict)
    node_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.shared = Path(self.shared)
        self.ports = self.ports or ports_for(self.run_id)
        # Short and node-local: Ray's socket paths under it must fit AF_UNIX's 107 bytes.
        self.temp_dir = self.temp_dir or f"/tmp/rh-{self.run_id[-4:]}{self.ports['gcs'] % 1000}"

    @property
    def run_dir(self) -> Path:
        return self.shared / "runs" / self.run_id

    @property
    def project(self) -> str:
        """Name for everything this run creates (compose project, network, containers)."""
        return f"rayhpc-{self.run_id}"

    def container(self, node: str) -> str:
        """Name of a node's container on the local site."""
        return f"{self.project}-{node}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["shared"] = str(self.shared)
        return data
