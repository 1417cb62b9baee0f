"""The run directory's records (contract/records.py): one typed definition each, read strictly
(a container writes them: a wrong type is refused by file and field, not a TypeError deep
inside), and written and read only through it."""

from __future__ import annotations

import ast
import json

import pytest

from rayhpc.launcher.backends.rundir import prepare_run_dir
from rayhpc.launcher.contract import (
    HeadRecord,
    NodeRecord,
    RecordError,
    RunPaths,
    StatusRecord,
    TimingRecord,
    read_node_records,
    read_record,
    write_record,
)
from tests import PROJECT_ROOT
from tests.cli import invoke
from tests.specs import head_record, make_spec

# RunPaths attributes of the records that have a typed definition.
RECORD_FILES = {"head", "status", "timing", "nodes_file", "node_record"}
RAW_IO = {"read_json", "write_json", "loads", "read_text", "write_text", "load", "dump"}


def test_each_record_reads_back_what_was_written(tmp_path):
    head = head_record("10.0.0.1", "n1", up_since=5.0)
    status = StatusRecord(joined=1, expected=2, lost=["n3"], notes=["hi"],
                          nodes={"n1": NodeRecord(state="joined", ip="10.0.0.1",
                                                  resources={"cpus": 4.0})},
                          blocks={"b2": {"nodes": ["b2-x"], "joined": 1, "left": 0, "lost": 0}})
    timing = TimingRecord(t_submit=1.0, nodes_expected=2, t_head_up=2.5,
                          groups={"": {"nodes": 2, "cpus": 8.0}})
    for name, record in (("head.json", head), ("status.json", status), ("timing.json", timing)):
        write_record(tmp_path / name, record)
        assert read_record(tmp_path / name, type(record)) == record
    write_record(tmp_path / "nodes.json", {"n1": NodeRecord(state="stopped", pid=7)})
    assert read_node_records(tmp_path / "nodes.json") == {"n1": NodeRecord(state="stopped",
                                                                           pid=7)}
    # None is left out of the file: the files keep the shape they had as plain dicts.
    assert json.loads((tmp_path / "timing.json").read_text()) == {
        "t_submit": 1.0, "nodes_expected": 2, "nodes_joined": 0, "nodes_lost": [],
        "t_head_up": 2.5, "groups": {"": {"nodes": 2, "cpus": 8.0}}}


@pytest.mark.parametrize("cls, data, message", [
    (StatusRecord, {"joined": "3"}, "status.json: joined: str is not int"),
    (StatusRecord, {"nodes": {"n1": {"state": 1}}}, "nodes: n1: state: int is not str"),
    (StatusRecord, {"lost": "n1"}, "status.json: lost: str is not list[str]"),
    (StatusRecord, [], "status.json: a StatusRecord is not a JSON object"),
    (HeadRecord, {"ip": "1.2.3.4"}, "head.json: missing fields: address, node, gcs_port"),
    (HeadRecord, {**head_record().to_json(), "gcs_port": True}, "gcs_port: bool is not int"),
    (TimingRecord, {"t_submit": None}, "timing.json: t_submit: NoneType is not float"),
    (TimingRecord, {"t_submit": 1, "nodes_joined": 1.5}, "nodes_joined: float is not int"),
])
def test_a_record_of_the_wrong_shape_is_refused_by_its_file_and_field(tmp_path, cls, data,
                                                                       message):
    path = tmp_path / {StatusRecord: "status.json", HeadRecord: "head.json",
                       TimingRecord: "timing.json"}[cls]
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError) as caught:
        read_record(path, cls)
    assert message in str(caught.value)


def test_a_record_from_a_newer_writer_keeps_what_this_one_knows(tmp_path):
    (tmp_path / "status.json").write_text(json.dumps({"joined": 2, "future": {"x": 1}}))
    assert read_record(tmp_path / "status.json", StatusRecord) == StatusRecord(joined=2)
    assert read_record(tmp_path / "missing.json", StatusRecord) is None


def test_a_hostile_status_json_is_one_warning_line_not_a_traceback(tmp_path):
    """Said once by its file and field; the run is listed as if the head had written none."""
    spec = make_spec("slurm", shared=str(tmp_path), image="/x.sif")
    paths = RunPaths(prepare_run_dir(spec))
    paths.status.write_text(json.dumps({"joined": "all of them", "expected": 3}))
    result = invoke("status", "--site", "slurm", "--shared", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{spec.run_id}  slurm  starting  0/")
    assert result.stderr == (f"rayhpc: warning: {paths.status}: joined: str is not int: "
                             "ignored\n")


def raw_record_io() -> list[str]:
    """Calls outside the contract that read or write a record's file by hand (``read_json(
    paths.status)``, ``paths.timing.read_text()``, ...)."""
    found = []
    for path in sorted((PROJECT_ROOT / "rayhpc").rglob("*.py")):
        if "contract" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name not in RAW_IO:
                continue
            touched = [*node.args, *([func.value] if isinstance(func, ast.Attribute) else [])]
            for arg in touched:
                target = arg.func if isinstance(arg, ast.Call) else arg
                if isinstance(target, ast.Attribute) and target.attr in RECORD_FILES:
                    found.append(f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}")
    return found


def test_records_are_read_and_written_only_through_their_definitions():
    assert raw_record_io() == []


def test_the_rule_finds_a_record_read_by_hand(tmp_path, monkeypatch):
    planted = tmp_path / "rayhpc" / "planted.py"
    planted.parent.mkdir()
    planted.write_text("def f(run):\n    return read_json(run.paths.status)['joined']\n")
    monkeypatch.setattr("tests.test_records_unit.PROJECT_ROOT", tmp_path)
    assert raw_record_io() == ["rayhpc/planted.py:2"]
