"""A launched run as its run directory tells it: what the backends are handed for runs already
launched (`rayhpc status`, `down`, blocks), so that they take it from the contract, not from
the layer above them that finds runs (`launcher.runs.run.Run` adds that layer's questions)."""

from __future__ import annotations

from dataclasses import dataclass

from rayhpc.launcher.contract.atomic_io import atomic_write
from rayhpc.launcher.contract.json_types import RecordError
from rayhpc.launcher.contract.launch_spec import LaunchSpec
from rayhpc.launcher.contract.records import (
    JOB_ID,
    HeadRecord,
    StatusRecord,
    TimingRecord,
    read_record,
    write_record,
)
from rayhpc.launcher.contract.run_paths import RunPaths
from rayhpc.launcher.contract.untrusted_files import read_text_quietly


@dataclass
class LaunchedRun:
    paths: RunPaths
    spec: LaunchSpec

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    @property
    def job_id(self) -> str:
        """The scheduler's id of the run's job ("" : none, or not one: it goes on the
        scheduler's command line)."""
        text = read_text_quietly(self.paths.job_id, self.paths.dir).strip()
        return text if JOB_ID.fullmatch(text) else ""

    @property
    def exit_code(self) -> int | None:
        return self.paths.read_exit_code()

    @property
    def head(self) -> HeadRecord | None:
        """head.json (None: the head is not up yet); RecordError when it is not a head's."""
        return read_record(self.paths.head, HeadRecord)

    @property
    def status(self) -> StatusRecord:
        """status.json (empty before the head wrote one); RecordError when it is not one."""
        return read_record(self.paths.status, StatusRecord) or StatusRecord()


def record_end_for_the_head(paths: RunPaths, spec: LaunchSpec, error: str, code: int) -> None:
    """A run's end written in its head's stead, where no agent could (see `RunPaths`): error,
    timing.json and exit_code (last), each only where the head did not write it."""
    if not paths.exists(paths.timing):
        try:
            joined = (read_record(paths.status, StatusRecord) or StatusRecord()).joined
        except RecordError:
            joined = 0
        write_record(paths.timing, TimingRecord(t_submit=spec.t_submit,
                                                nodes_expected=spec.nodes, nodes_joined=joined),
                     paths.dir)
    for path, text in ((paths.error, error), (paths.exit_code, str(code))):
        if not paths.exists(path):
            atomic_write(path, text + "\n", root=paths.dir)
