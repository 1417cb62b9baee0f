"""The launch's spec as serialised in spec.json (`LaunchSpec`, `NodeGroup`): one definition of
its fields, written by the launcher and read strictly by every node. Standard library only."""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rayhpc.launcher.contract.atomic_io import read_json
from rayhpc.launcher.contract.json_types import check_json_types
from rayhpc.launcher.contract.run_paths import RunPaths


@dataclass(frozen=True)
class NodeGroup:
    """One kind of node (see `launcher.resolve.groups`, which parses and checks them). In a
    resolved launch every field is final: ``image`` is the group's own or the launch's."""
    name: str
    nodes: int
    image: str = ""
    head: bool = False
    gpu: str = ""  # "", nvidia, amd or intel: the GPUs this group's nodes must bring to Ray
    num_cpus: int | None = None
    num_gpus: int | None = None
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per node
    labels: dict[str, str] = field(default_factory=dict)  # Ray node labels
    queue: str = ""  # partition / queue of this group's nodes (HPC sites)
    scheduler_options: dict[str, Any] = field(default_factory=dict)  # per group (HPC sites)
    runtime_options: list[str] = field(default_factory=list)  # extra container runtime flags


SERVE_DEFAULT_PORT = 8000  # Ray Serve's default HTTP port (serve.config.HTTPOptions)
DASHBOARD_LOCAL_PORT = 8265  # the laptop's end of the SSH tunnel (Ray's usual dashboard port)


@dataclass(frozen=True)
class LaunchSpec:
    """Everything one launch needs, complete when made (`launcher.orchestration.resolve_spec`); the
    nodes read it from spec.json. Defaults live in `launcher.resolve.config.SETTINGS` only."""
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
    # `--restarts N`: how many times the run starts again when its allocation ends first
    # (`contract.attempts`); with restart_on_failure, when its driver fails too.
    restarts: int = 0
    restart_on_failure: bool = False
    checkpoint_dir: str = ""  # where the driver keeps checkpoints ("" : `checkpoints`)
    # An HTTP endpoint on the head (`docs/serving.md`): a Ray Serve application to deploy
    # (MODULE:NAME), its port (or a driver's own service's), and where it listens.
    serve: str = ""
    serve_port: int | None = None
    serve_bind: str = "loopback"

    @property
    def interactive(self) -> bool:
        return self.driver is None

    @property
    def has_endpoint(self) -> bool:
        """An HTTP endpoint on the head: a Serve application, or a driver's declared port."""
        return bool(self.serve or self.serve_port)

    @property
    def endpoint_port(self) -> int:
        """The endpoint's port on the head (Ray Serve's usual 8000 unless given)."""
        return self.serve_port or SERVE_DEFAULT_PORT

    @property
    def run_dir(self) -> Path:
        return self.shared / "runs" / self.run_id

    @property
    def project(self) -> str:
        """Name for everything this run creates (compose project, network, containers)."""
        return f"rayhpc-{self.run_id}"

    @property
    def checkpoints(self) -> Path:
        """The driver's checkpoint directory (RAYHPC_CHECKPOINT_DIR): in the shared dir, so
        that every attempt's head sees it; <shared>/checkpoints/<run id> unless given."""
        return Path(self.checkpoint_dir) if self.checkpoint_dir else \
            self.shared / "checkpoints" / self.run_id

    def container(self, node: str) -> str:
        """Name of a node's container on the local site."""
        return f"{self.project}-{node}"

    def group(self, name: str) -> NodeGroup | None:
        return next((group for group in self.groups if group.name == name), None)

    def dashboard_url(self, head_ip: str) -> str:
        """Where the user reaches the dashboard: its published port on this host (local site),
        else the address it binds on the head (the cluster network)."""
        if self.published.get("dashboard"):
            return f"http://127.0.0.1:{self.published['dashboard']}"
        host = self.dashboard_host or head_ip
        host = head_ip if host == "0.0.0.0" else host
        return f"http://{host}:{self.ports['dashboard']}"

    def endpoint_url(self, head_ip: str) -> str | None:
        """Where the launching side (this host on the local site, the login node) reaches the
        HTTP endpoint: its published port, or the head's cluster address where it listens
        there; None where it listens on the head's loopback (an SSH tunnel reaches it)."""
        if self.published.get("serve"):
            return f"http://127.0.0.1:{self.published['serve']}"
        if self.serve_bind == "network":
            return f"http://{head_ip}:{self.endpoint_port}"
        return None

    def client_address(self, head_ip: str) -> str:
        """Ray Client's address (`ray.init("ray://...")` from outside the cluster)."""
        if self.published.get("client"):
            return f"ray://127.0.0.1:{self.published['client']}"
        return f"ray://{head_ip}:{self.ports['client']}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["shared"] = str(self.shared)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], strict: bool = True) -> LaunchSpec:
        """The spec from spec.json. ``strict`` (the node program: its spec.json was written
        with it): every field must be there and no other, else ValueError naming them; not
        strict (the launcher reading older runs): fields it does not know are left out."""
        known = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls)
                    if f.default is MISSING and f.default_factory is MISSING}
        unknown = sorted(set(data) - known)
        missing = sorted(required - set(data))
        if missing or (strict and unknown):
            problems = [f"unknown fields: {', '.join(unknown)}" if strict and unknown else "",
                        f"missing fields: {', '.join(missing)}" if missing else ""]
            raise ValueError("spec.json is not this rayhpc's spec ("
                             + "; ".join(p for p in problems if p) + ")")
        values = {key: value for key, value in data.items() if key in known}
        check_json_types(cls, values)
        for group in values.get("groups", ()):
            check_json_types(NodeGroup, group)
        values["shared"] = Path(values["shared"])
        values["groups"] = tuple(NodeGroup(**group) for group in values.get("groups", ()))
        return cls(**values)


def read_spec(paths: RunPaths, strict: bool = True) -> LaunchSpec | None:
    """A run's spec from its spec.json; None when it is missing, unreadable or not this
    version's spec (see `LaunchSpec.from_json`)."""
    try:
        data = read_json(paths.spec, root=paths.dir)  # RecordError: a link, too large
        return None if data is None else LaunchSpec.from_json(data, strict)
    except (ValueError, TypeError):
        return None


def spec_from_text(text: str) -> LaunchSpec | None:
    """The spec from spec.json's text (as bundled with the node program); None: not this
    version's spec."""
    try:
        return LaunchSpec.from_json(json.loads(text))
    except (ValueError, TypeError):
        return None
