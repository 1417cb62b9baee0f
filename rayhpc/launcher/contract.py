"""The contract between the launcher and the node program: what one writes and the other reads.

Both sides import this module and nothing of each other (the node program, `launcher.node`, is
delivered to the nodes as one file with this module inside it). It holds:

- the run directory: every file's path and who writes it (`RunPaths`), and how files are
  written there (whole or not at all) and read back;
- the launch's spec as serialised in spec.json (`LaunchSpec`, `NodeGroup`): one definition of
  its fields, written by the launcher and read by every node;
- the environment variables the job script (or compose file) hands the node program;
- the Ray node labels every node carries, and the socket-path limit both sides check.

Standard library only: it runs inside any stock rayproject/ray image.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any

# ---------------------------------------------------------------------------------------------
# Environment variables the job script (or compose file) sets for the node program

# The launcher's rank variable(s), comma-separated, in the order trusted (each scheduler module
# declares its own `rank_vars`); rank 0 is the head. Not needed where `--role` is given.
RANK_VARS_ENV = "RAYHPC_RANK_VARS"
HEAD_HOST_ENV = "RAYHPC_HEAD_HOST"  # the head's host, where the job script knows it
NODE_IP_ENV = "RAYHPC_NODE_IP"  # this node's address for Ray, where the host cannot tell it
# A node-local temp dir of its own (several agents of one run on one host: the simulator).
NODE_TEMP_DIR_ENV = "RAYHPC_NODE_TEMP_DIR"
# The interface NCCL and Gloo use: set in every container, to the site's `interface` by the
# job script, else by the node to the one that routes to the head; the user's value wins.
# NCCL: "NCCL_SOCKET_IFNAME ... Specifies which IP interfaces to use for communication" (NVIDIA
# NCCL docs, Environment Variables); Gloo: GLOO_SOCKET_IFNAME (PyTorch torch.distributed docs,
# "Common environment variables: Choosing the network interface to use").
FABRIC_VARS = ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME")


def fabric_environment(interface: str | None, environ: Mapping[str, object]) -> dict[str, str]:
    """The fabric variables set to ``interface`` ({} without one), leaving out those
    ``environ`` sets (the user's, or the site's)."""
    if not interface:
        return {}
    return {name: interface for name in FABRIC_VARS if not environ.get(name)}


# What the driver (and every Ray job) finds in its environment.
RUN_DIR_ENV = "RAYHPC_RUN_DIR"
NODES_ENV = "RAYHPC_NODES"

# ---------------------------------------------------------------------------------------------
# Ray node labels every node carries (a driver can target a group, or see a node's image)

RAY_NODE_LABEL = "rayhpc.io/node"  # which node this is (set by the node program)
RAY_GROUP_LABEL = "rayhpc.io/group"  # its node group (set by the launcher in the spec)
RAY_IMAGE_LABEL = "rayhpc.io/image"  # its group's image (likewise)


def label_value(text: str) -> str:
    """``text`` as a Ray label value (Kubernetes' syntax: at most 63 of [-_.A-Za-z0-9],
    alphanumeric at both ends): other characters become `_`, and the end (a tag, a file name,
    a host's number) is kept when it is too long."""
    value = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in text)
    return value[-63:].strip("-_.")


# ---------------------------------------------------------------------------------------------
# Ray's socket paths: the launcher refuses a temp dir that cannot hold them, the node checks

AF_UNIX_MAX = 107
# The longest tail Ray appends to its temp dir for a socket path (session name, sockets/...).
RAY_SOCKET_SUFFIX = len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")


def temp_dir_fits(temp_dir: str) -> bool:
    """Ray's AF_UNIX socket paths under temp_dir must fit in 107 bytes."""
    return len(temp_dir) + RAY_SOCKET_SUFFIX <= AF_UNIX_MAX


# ---------------------------------------------------------------------------------------------
# The run directory: <shared>/runs/<run-id>/. One writer per file.

FINAL_STATES = ("stopped", "lost-head", "failed")  # a node's state once its agent ended
NODE_PROGRAM = "node_agent.pyz"  # the node program as delivered: one file that Python runs
LEFT = "left"  # the head's word for a node of a block it released (drained, then stopped)

# Blocks: worker-only jobs (or compose projects) that join a running cluster (`rayhpc grow`).
# The launch's own job is block 1; grown blocks are b2, b3, ... and their nodes are named
# `<block>-<node>` (b2-worker-1 locally, b2-<host> on a batch site): unique across blocks.
FIRST_GROWN_BLOCK = 2


# Ray's drain deadline for a released block's nodes, and how long the head waits for them to
# go idle before stopping them (their tasks then fail over as on a lost node: Ray retries them).
DRAIN_MAX_S = 30


def drain_window(stop_grace: int) -> int:
    """How long a released block's nodes may finish their work: half the walltime grace (the
    rest is for stopping Ray and keeping the logs), at most DRAIN_MAX_S."""
    return max(0, min(DRAIN_MAX_S, stop_grace // 2))


def block_name(number: int) -> str:
    return f"b{number}"


def block_node_name(block: str, node: str) -> str:
    """A block's node's name: its block before its own (host) name."""
    return f"{block}-{node}"


class RunPaths:
    """Every file of a run directory, and who writes it.

    launcher (`rayhpc launch`, before any node starts; never changed after):
      spec.json, node_agent.pyz (the node program), auth_token (0600), compose.yaml (local) or
      job.sh and job_id (batch; job.out is the scheduler's)
    head agent:
      head.json (address, once), status.json (join progress, lost nodes, notes; at most once a
      second), driver.log, connect.txt (interactive clusters: how to connect, once every node
      joined), timing.json, timeline.svg (the bring-up picture, from timing.json and
      nodes.json; `rayhpc report` rewrites it), error, exit_code (last: the run is over)
    each node's agent, once, at its end:
      logs/<node>.log (its agent's lines, opened once and appended to as it goes)
      logs/<node>.tar.gz (Ray's logs, capped; MANIFEST.json inside says what was kept and
      dropped); its final record goes to the head over the network, and the head
      writes every node's in nodes.json; a node that cannot tell the head (it never reached it,
      or the head is gone) writes its own, nodes/<node>.json
    stop (a request, written once with O_EXCL by whoever asks first; the text says who):
      the job script (walltime warning or its own walltime timer, scancel --batch), the
      launcher, or the head at teardown
    blocks/ (`rayhpc grow`; see `Block`): per grown block B, written by the launcher:
      B.json (its record: once at submission, again when its job id is known or it is
      released), B.pyz (the node program with the block's spec), B.sh and B.out (batch: its
      job script and the scheduler's output) or B.yaml (local: its compose file);
      B.stop (a request to release the block, O_EXCL like stop: `rayhpc shrink` or the
      block's own job script at its walltime warning; `rayhpc down` writes none, the head's
      teardown stops every node). The head lists blocks/
      once a second (one directory read whatever the block count), drains a released
      block's nodes and stops them; it counts every block's nodes in status.json.
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
        self.node_program = self.dir / NODE_PROGRAM
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
        self.timeline = self.dir / "timeline.svg"
        self.error = self.dir / "error"
        self.exit_code = self.dir / "exit_code"
        self.stop = self.dir / "stop"
        self.nodes = self.dir / "nodes"
        self.nodes_file = self.dir / "nodes.json"
        self.logs = self.dir / "logs"
        self.containers_log = self.logs / "containers.log"
        self.blocks = self.dir / "blocks"

    def node_record(self, node: str) -> Path:
        return self.nodes / f"{node}.json"

    def node_archive(self, node: str) -> Path:
        return self.logs / f"{node}.tar.gz"

    def node_log(self, node: str) -> Path:
        """A node's agent log, appended to as it goes (one open per node)."""
        return self.logs / f"{node}.log"

    def agent_command(self, *args: str, program: Path | None = None) -> list[str]:
        """How a container starts the node program: `python node_agent.pyz --run-dir DIR
        [ARGS]` (the node program's own flags: see `launcher.node.main`); ``program``: another
        build of it (a block's, with the block's spec inside)."""
        return ["python", str(program or self.node_program), "--run-dir", str(self.dir), *args]

    def block_file(self, block: str, suffix: str) -> Path:
        """A grown block's file: blocks/<block>.<suffix> (json, pyz, sh, out, yaml, stop)."""
        return self.blocks / f"{block}.{suffix}"

    def request_block_stop(self, block: str, who: str) -> bool:
        """Ask the head to release a block (its stop file, made once); True if this call made
        it."""
        try:
            fd = os.open(self.block_file(block, "stop"), os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                         0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            handle.write(who + "\n")
        return True

    def released_blocks(self) -> set[str]:
        """The blocks asked to leave (their stop files): one read of blocks/, whatever the
        number of blocks."""
        try:
            names = os.listdir(self.blocks)
        except OSError:
            return set()
        return {name[:-len(".stop")] for name in names if name.endswith(".stop")}

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


@contextlib.contextmanager
def atomic_file(path: Path, binary: bool = False, mode: int | None = None) -> Iterator[IO]:
    """A file written whole or not at all (a temp name beside it, renamed when the block ends
    without an error): readers on other nodes never see half a file, and a failure (a full
    disk) leaves no temp file behind. ``mode``: the file's mode."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb" if binary else "w") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write(path: Path, data: str | bytes, mode: int | None = None) -> None:
    """``data`` into ``path``, whole or not at all (see `atomic_file`)."""
    with atomic_file(path, isinstance(data, bytes), mode) as handle:
        handle.write(data)


def json_text(data: dict) -> str:
    """How the run directory's JSON files are written."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, json_text(data))


def read_json(path: Path) -> dict | None:
    """A JSON object from a file; None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------------------------------------
# The driver's output, stored once: in driver.log. When driver.log can take no more (a full run
# directory, a quota), the head's agent says OVERFLOW_MARKER once on its own output (the
# container's log on the local site, the job's output on batch sites) with the bytes driver.log
# holds, then writes the rest of the driver's output there, each line after OVERFLOW_PREFIX,
# and says OVERFLOW_END when the driver's output ended. The local launcher follows the head's
# container output from the marker on, so the console misses nothing.

OVERFLOW_PREFIX = b"driver| "
_OVERFLOW_MARKER = re.compile(r"driver\.log takes no more after (\d+) bytes \((.*?)\); ")
OVERFLOW_END = "the driver's output ended"


def overflow_marker(stored: int, why: str) -> str:
    """The head's line when driver.log stopped taking the driver's output at ``stored`` bytes."""
    return (f"driver.log takes no more after {stored} bytes ({why}); the driver's output goes "
            f"on here, each line after '{OVERFLOW_PREFIX.decode()}'")


def parse_overflow_marker(line: str) -> tuple[int, str] | None:
    """(bytes driver.log holds, why) from a head's line, if it is the marker."""
    match = _OVERFLOW_MARKER.search(line)
    return (int(match.group(1)), match.group(2)) if match else None


def run_dir_problem(exc: OSError) -> str:
    """What a failed write to the shared run directory means, in words."""
    what = {errno.ENOSPC: "is full", errno.EDQUOT: "is over its quota",
            errno.EROFS: "became read-only"}.get(exc.errno or 0, "cannot be written")
    where = f": {exc.filename}" if exc.filename else ""
    return f"the run directory {what} ({exc.strerror}{where})"


# ---------------------------------------------------------------------------------------------
# The spec (spec.json): one definition of its fields, for the launcher and every node

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


DASHBOARD_LOCAL_PORT = 8265  # the laptop's end of the SSH tunnel (Ray's usual dashboard port)


@dataclass(frozen=True)
class LaunchSpec:
    """Everything one launch needs, complete when made (`launcher.launch.resolve_spec`); the
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


@dataclass(frozen=True)
class Block:
    """A grown block as recorded in blocks/<name>.json (written by the launcher only)."""
    name: str  # b2, b3, ...
    nodes: int
    group: str  # its node group ("" : the run's only kind of node)
    image: str
    walltime_s: int
    t_submit: float
    queue: str = ""
    job_id: str = ""  # batch: the scheduler's; local: "" (its compose project is named)
    node_names: list[str] = field(default_factory=list)  # known ahead on the local site
    released: str = ""  # who asked it to leave ("" : not asked)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Block | None:
        """The record from its JSON; None: missing or not a block's record."""
        if not isinstance(data, dict):
            return None
        try:
            check_json_types(cls, data)
            return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})
        except (TypeError, ValueError):
            return None


def read_blocks(paths: RunPaths) -> list[Block]:
    """Every grown block's record, in order (b2, b3, ... b10)."""
    found = [Block.from_json(read_json(path)) for path in paths.blocks.glob("b*.json")]
    return sorted((b for b in found if b is not None), key=lambda b: int(b.name[1:]))


# What each annotation of the spec's fields takes in JSON (Path: its text).
JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "str": str, "int": int, "float": (int, float), "bool": bool, "Path": str, "Any": object,
    "NodeGroup": dict}


def fits_json_type(annotation: str, value: Any) -> bool:
    """Whether a value read from JSON is of the type a field's annotation names."""
    for option in (part.strip() for part in annotation.split(" | ")):
        if option == "None":
            if value is None:
                return True
            continue
        outer, _, inner = option.partition("[")
        inner = inner[:-1]
        if outer == "dict":
            value_type = inner.split(",", 1)[1].strip()
            if isinstance(value, dict) and all(fits_json_type(value_type, item)
                                               for item in value.values()):
                return True
        elif outer in ("list", "tuple"):
            item_type = inner.split(",", 1)[0].strip()
            if isinstance(value, (list, tuple)) and all(fits_json_type(item_type, item)
                                               for item in value):
                return True
        elif isinstance(value, JSON_TYPES[outer]) and not (
                outer in ("int", "float") and isinstance(value, bool)):
            return True
    return False


def check_json_types(cls: type, values: Any) -> None:
    """ValueError naming the first field of ``values`` (a spec's or a group's, from
    spec.json) whose value is not of its field's type: a hand-edited or foreign spec.json."""
    if not isinstance(values, dict):
        raise ValueError(f"spec.json: a {cls.__name__} is not a JSON object")
    for spec_field in fields(cls):
        if spec_field.name in values and not fits_json_type(str(spec_field.type),
                                                            values[spec_field.name]):
            raise ValueError(f"spec.json: {spec_field.name}: "
                             f"{type(values[spec_field.name]).__name__} is not {spec_field.type}")


def read_spec(paths: RunPaths, strict: bool = True) -> LaunchSpec | None:
    """A run's spec from its spec.json; None when it is missing, unreadable or not this
    version's spec (see `LaunchSpec.from_json`)."""
    data = read_json(paths.spec)
    try:
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
