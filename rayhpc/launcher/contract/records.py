"""The run directory's JSON records that more than one room reads: one typed definition each,
written (`write_record`) and read (`read_record`) only through it, on both sides.

  head.json      `HeadRecord`    the head's address and ports (the head, once)
  status.json    `StatusRecord`  join progress, every node's state, lost nodes, notes (the head)
  timing.json    `TimingRecord`  the run's moments and counts (the head; the launcher where the
                                 head could not)
  nodes.json     {node: `NodeRecord`}  every node's final record (the head); nodes/<node>.json:
                                 one node's own, where it could not tell the head
  blocks/B.json  `Block`         a grown block (the launcher)

A record's reader is strict about types and values (a container writes these files: a wrong
one is refused by its file and field, `RecordError`; no link is followed and no file read past
its bound, `untrusted_files`) and lenient about fields it does not know (a newer writer).
Fields that are None are left out of the file. Standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from rayhpc.launcher.contract.atomic_io import RECORD_MAX_BYTES, read_json, write_json
from rayhpc.launcher.contract.json_types import RecordError, check_json_types
from rayhpc.launcher.contract.run_paths import RunPaths
from rayhpc.launcher.contract.untrusted_files import UnsafeFile, list_names

R = TypeVar("R", bound="Record")

# status.json and nodes.json hold a record per node (status.json: 2.3 MB at 10,000 nodes).
NODES_RECORD_MAX_BYTES = 32 << 20
BLOCK_NAME = re.compile(r"b[0-9]{1,9}")  # b2, b3, ... (run_paths.block_name)
# A scheduler's job id (1234, 1234_5, 1234+0, 1234.pbs01, 1234[7]): never an option's dash,
# a space or a line break, since it goes on the scheduler's command line.
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+@:\[\]-]{0,199}")


class Record:
    """What every record shares: to and from its JSON object (see the module's docstring)."""

    max_bytes: ClassVar[int] = RECORD_MAX_BYTES  # its file is read up to this size

    def to_json(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items()  # type: ignore[call-overload]
                if value is not None}

    @classmethod
    def from_json(cls: type[R], data: Any, where: str) -> R:
        """The record from its JSON object; RecordError naming ``where`` and the field when a
        field is missing or of the wrong type."""
        check_json_types(cls, data, where)
        missing = [f.name for f in fields(cls)  # type: ignore[arg-type]
                   if f.default is MISSING and f.default_factory is MISSING
                   and f.name not in data]
        if missing:
            raise RecordError(f"{where}: missing fields: {', '.join(missing)}")
        return cls(**{f.name: data[f.name] for f in fields(cls)  # type: ignore[arg-type]
                      if f.name in data})


def check_entries(cls: type[Record], entries: dict[str, Any] | None, where: str) -> None:
    """Each value of a {name: object} field is of ``cls``'s shape (RecordError otherwise)."""
    for name, value in (entries or {}).items():
        cls.from_json(value, f"{where}: {name}")


def check_not_negative(record: Any, names: tuple[str, ...], where: str) -> None:
    for name in names:
        if getattr(record, name) < 0:
            raise RecordError(f"{where}: {name}: {getattr(record, name)} is below zero")


@dataclass
class BlockCounts(Record):
    """A grown block's counts (status.json's and timing.json's "blocks", by block; written by
    the head: node.block_keeper.block_counts)."""
    nodes: list[str] = field(default_factory=list)
    joined: int = 0
    left: int = 0
    lost: int = 0


@dataclass
class GroupTotals(Record):
    """What a group's nodes brought to Ray (timing.json's "groups", by group; written by the
    head: node.report.group_totals)."""
    nodes: int = 0
    image: str = ""
    cpus: float = 0
    gpus: float = 0
    memory: float = 0
    object_store: float = 0
    gpu_kind: str = ""
    custom: dict[str, float] = field(default_factory=dict)


@dataclass
class HeadRecord(Record):
    """head.json, and the head's word to each worker over the control connection."""
    address: str  # ip:gcs_port
    ip: str
    node: str
    gcs_port: int
    agent_port: int
    dashboard_port: int
    client_port: int
    time: float  # when the head's GCS was up
    versions: dict[str, str] = field(default_factory=dict)  # the workers' preflight compares


@dataclass
class NodeRecord(Record):
    """One node: its entry in status.json (state, address, group, block, resources) and, at its
    end, its final record (nodes.json, nodes/<node>.json) with what its agent adds."""
    state: str = ""
    ip: str | None = None
    node: str | None = None
    group: str | None = None
    block: str | None = None
    resources: dict[str, Any] | None = None  # what it brought to Ray (see node.report)
    role: str | None = None  # "head" on the head's final record
    reason: str | None = None  # why it ended (a worker's)
    hostname: str | None = None
    pid: int | None = None
    time: float | None = None  # when its agent wrote its final record
    times: dict[str, float | None] | None = None  # when the head heard each state
    logs: dict[str, Any] | None = None  # its log archive's summary (node.harvest)


def node_records(data: Any, where: str) -> dict[str, NodeRecord]:
    """{node: NodeRecord} from a JSON object of node records."""
    if not isinstance(data, dict):
        raise RecordError(f"{where}: not a JSON object")
    return {name: NodeRecord.from_json(value, f"{where}: {name}") for name, value in data.items()}


@dataclass
class StatusRecord(Record):
    """status.json: written by the head at most once a second."""
    joined: int = 0
    expected: int = 0
    lost: list[str] = field(default_factory=list)
    address: str | None = None
    notes: list[str] = field(default_factory=list)  # what the launcher's console shows too
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    blocks: dict[str, dict[str, Any]] | None = None  # per grown block: `BlockCounts`
    endpoint_answered: float | None = None  # when the head's probe of the endpoint answered

    max_bytes: ClassVar[int] = NODES_RECORD_MAX_BYTES

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(),
                "nodes": {name: node.to_json() for name, node in self.nodes.items()}}

    @classmethod
    def from_json(cls, data: Any, where: str) -> StatusRecord:
        record = super().from_json(data, where)
        record.nodes = node_records(record.nodes, f"{where}: nodes")
        check_entries(BlockCounts, record.blocks, f"{where}: blocks")
        return record


@dataclass
class TimingRecord(Record):
    """timing.json: the run's moments (epoch seconds) and counts."""
    t_submit: float
    nodes_expected: int = 0
    nodes_joined: int = 0
    nodes_lost: list[str] = field(default_factory=list)
    t_head_start: float | None = None
    t_head_up: float | None = None
    t_all_joined: float | None = None
    t_driver_start: float | None = None
    t_driver_end: float | None = None
    t_teardown_start: float | None = None
    t_teardown_done: float | None = None
    groups: dict[str, dict[str, Any]] | None = None  # per group: `GroupTotals`
    blocks: dict[str, dict[str, Any]] | None = None  # per grown block: `BlockCounts`

    @classmethod
    def from_json(cls, data: Any, where: str) -> TimingRecord:
        record = super().from_json(data, where)
        check_entries(GroupTotals, record.groups, f"{where}: groups")
        check_entries(BlockCounts, record.blocks, f"{where}: blocks")
        return record

    def moment(self, name: str) -> float | None:
        """One of the t_* moments by its name (None: not reached)."""
        value = getattr(self, name)
        return value if isinstance(value, (int, float)) else None


@dataclass(frozen=True)
class Block(Record):
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

    @classmethod
    def from_json(cls, data: Any, where: str) -> Block:
        """Also its values: a name of the form b<N> (its file's), a job id the scheduler's
        command line can take, no count below zero."""
        block = super().from_json(data, where)
        if not BLOCK_NAME.fullmatch(block.name):
            raise RecordError(f"{where}: name: {block.name[:40]!r} is not a block's name "
                              "(b2, b3, ...)")
        if block.job_id and not JOB_ID.fullmatch(block.job_id):
            raise RecordError(f"{where}: job_id: {block.job_id[:40]!r} is not a job id")
        check_not_negative(block, ("nodes", "walltime_s"), where)
        return block

    @property
    def number(self) -> int:
        return int(self.name[1:])


def write_record(path: Path, record: Record | Mapping[str, NodeRecord],
                 root: Path | None = None) -> None:
    """A record into its file, whole or not at all (a {node: NodeRecord} for nodes.json); no
    link followed (``root``: the run directory)."""
    data = record.to_json() if isinstance(record, Record) else \
        {name: node.to_json() for name, node in record.items()}
    write_json(path, data, root)


def read_record(path: Path, cls: type[R], root: Path | None = None) -> R | None:
    """A record from its file; None when the file is missing or not JSON (not written yet),
    RecordError when it is JSON but not this record, a link, or larger than its bound.
    ``root``: the run directory, for a file below one of its directories (nodes/, blocks/)."""
    data = read_json(path, objects_only=False, root=root, limit=cls.max_bytes)
    return None if data is None else cls.from_json(data, str(path))


def read_node_records(path: Path) -> dict[str, NodeRecord]:
    """nodes.json's records ({} : not written yet); RecordError when it is not node records."""
    data = read_json(path, objects_only=False, limit=NODES_RECORD_MAX_BYTES)
    return {} if data is None else node_records(data, str(path))


def read_blocks(paths: RunPaths, problems: list[str] | None = None) -> list[Block]:
    """Every grown block's record, in order (b2, b3, ... b10). A file that is not a block's
    record (a half-made grow; blocks/ is the launcher's, but the containers' user can write
    it) is left out, said in ``problems`` by its file and field."""
    found = []
    try:
        names = list_names(paths.blocks, paths.dir, quiet=False)
    except UnsafeFile as exc:
        names = []
        if problems is not None:
            problems.append(f"{exc}: no block read")
    for name in names:
        if not (name.startswith("b") and name.endswith(".json")):
            continue
        path = paths.blocks / name
        try:
            block = read_record(path, Block, paths.dir)
            if block is not None and block.name != path.stem:
                raise RecordError(f"{path}: name: {block.name!r} is not its file's "
                                  f"({path.stem})")
        except RecordError as exc:
            if problems is not None:
                problems.append(f"{exc}: left out")
            continue
        if block is not None:
            found.append(block)
    return sorted(found, key=lambda b: b.number)
