"""The resolved description of one launch, and what the node agent reads of it (spec.json)."""

from __future__ import annotations

import secrets
import time
import zlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from launcher.groups import NodeGroup

# Fixed-port Ray components, offsets in a per-run block so that two runs sharing a node (or a
# host network) do not collide; worker processes take free ports from Ray's own range.
PORT_OFFSETS = {"gcs": 0, "dashboard": 1, "client": 2, "node_manager": 3, "object_manager": 4,
                "metrics_export": 5, "dashboard_agent_grpc": 6, "dashboard_agent_listen": 7,
                "runtime_env_agent": 8, "agent": 9}
PORT_BLOCKS = (20000, 30000, 10)  # first port, end, block size


def new_run_id(now: float | None = None) -> str:
    """Unique and sortable: 20261123-190512-a3f9 (time, then 16 random bits)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return f"{stamp}-{secrets.token_hex(2)}"


def unused_run_id(busy_gcs_ports: set[int], first: str = "", tries: int = 100) -> str:
    """``first`` (else a new run id) unless an unfinished run holds its port block (runs may
    share a node): then a new one that no such run holds."""
    run_id = first or new_run_id()
    for _ in range(tries):
        if ports_for(run_id)["gcs"] not in busy_gcs_ports:
            break
        run_id = new_run_id()
    return run_id


def ports_for(run_id: str) -> dict[str, int]:
    first, end, step = PORT_BLOCKS
    base = first + (zlib.crc32(run_id.encode()) % ((end - first) // step)) * step
    return {name: base + offset for name, offset in PORT_OFFSETS.items()}


def default_temp_dir(run_id: str) -> str:
    """Short and node-local: Ray's socket paths under it must fit AF_UNIX's 107 bytes."""
    return f"/tmp/rh-{run_id[-4:]}{ports_for(run_id)['gcs'] % 1000}"


@dataclass(frozen=True)
class LaunchSpec:
    """Everything one launch needs, complete when made (see `launcher.launch.resolve_spec`);
    the node agents read it as spec.json. Defaults live in `launcher.config.SETTINGS` only."""
    run_id: str
    site: str
    scheduler: str
    runtime: str
    nodes: int
    shared: Path
    driver: str | None  # None: an interactive cluster (no driver; Ray jobs come and go)
    image: str
    join_timeout: int
    stop_timeout: int
    shm_size: str
    object_store_memory: int | None
    dashboard_host: str | None  # None: the head's cluster address
    interface: str | None
    temp_dir: str
    num_cpus: int | None
    num_gpus: int | None
    walltime_s: int  # seconds (parsed once, from Slurm's forms; each scheduler renders its own)
    queue: str | None
    account: str | None
    stop_grace: int
    head_cpus: int | None
    log_cap: int
    auth: str
    t_submit: float
    ports: dict[str, int]
    node_names: list[str]  # known before the start on the local site; [] on batch sites
    # The node groups, the head's first (() : one kind of node, every setting above applies).
    groups: tuple[NodeGroup, ...] = ()
    # Set when the run is prepared (not by resolve_spec, which is pure):
    # Ports published on 127.0.0.1 (local site): {"dashboard": port, "client": port}.
    published: dict[str, int] = field(default_factory=dict)
    login: str = ""  # user@host that submitted a batch job (for the SSH tunnel to the head)

    @property
    def interactive(self) -> bool:
        return self.driver is None

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

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LaunchSpec:
        """The spec of a run from its spec.json (keys it does not know are left out)."""
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["shared"] = Path(values["shared"])
        values["groups"] = tuple(NodeGroup(**group) for group in values.get("groups", ()))
        return cls(**values)

    def group(self, name: str) -> NodeGroup:
        return next(group for group in self.groups if group.name == name)
