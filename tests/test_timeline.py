"""<run>/timeline.svg: golden pictures of recorded runs (a real local launch of 3 nodes, the
scale simulator's 1024 nodes: only the records the renderer reads are kept), and what the
picture must tell: phases per node, milestones, stragglers named, bins above 40 nodes."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from rayhpc.launcher.backends.rundir import prepare_run_dir
from rayhpc.launcher.contract import (
    NodeRecord,
    RunPaths,
    TimingRecord,
    read_node_records,
    read_record,
    write_record,
)
from rayhpc.launcher.timeline import BINS, MAX_STRAGGLERS, render_timeline, write_timeline
from tests.cli import invoke
from tests.golden import GOLDEN_DIR, assert_golden
from tests.specs import make_spec

RECORDED = GOLDEN_DIR / "timeline"
SVG = "{http://www.w3.org/2000/svg}"


def recorded(name: str) -> tuple[TimingRecord, dict[str, NodeRecord]]:
    return (read_record(RECORDED / name / "timing.json", TimingRecord),
            read_node_records(RECORDED / name / "nodes.json"))


def row_labels(svg: str) -> list[str]:
    """The row labels (the texts right-aligned left of the plot), top to bottom."""
    root = ElementTree.fromstring(svg)
    return ["".join(t.itertext()).replace("".join(t.find(f"{SVG}title").itertext()), "")
            for t in root.iter(f"{SVG}text") if t.get("text-anchor") == "end"]


def bar_phases(svg: str) -> list[str]:
    return re.findall(r"<title>(waiting|starting|joined|up|stopping) ", svg)


@pytest.mark.parametrize("name", ["local-3", "sim-1024"])
def test_the_timeline_of_a_recorded_run_matches_its_golden_picture(name):
    timing, records = recorded(name)
    svg = render_timeline(f"recorded-{name}", timing, records)
    ElementTree.fromstring(svg)  # well-formed
    assert_golden(f"timeline/{name}.svg", svg)


def test_a_small_run_has_a_row_per_node_with_every_phase_and_milestone():
    timing, records = recorded("local-3")
    svg = render_timeline("r", timing, records)
    assert row_labels(svg) == ["head", "worker-1", "worker-2"]
    # The head: ray start, its GCS up (joined) until the driver, the driver, stopping; each
    # worker waits for the head first.
    assert bar_phases(svg) == ["starting", "joined", "up", "stopping",
                               *["waiting", "starting", "up", "stopping"] * 2]
    for label in ("submit 0.0 s", "head up 11.9 s", "all joined 17.5 s", "driver 17.5 s",
                  "driver end 21.8 s", "down 23.1 s"):
        assert f">{label}</text>" in svg, label
    assert "3/3 nodes joined, bring-up 17.5 s" in svg
    assert ">none</text>" in svg  # no straggler among three that joined together


def test_a_late_node_and_one_that_never_joined_are_named():
    timing, records = recorded("local-3")
    up = timing.t_head_up
    records = {**records, **{f"worker-{i}": NodeRecord(state="stopped", times={
        "connected": up - 5, "starting": up, "joined": up + 2 + i * 0.1,
        "stopped": timing.t_teardown_done}) for i in range(3, 9)}}
    records["worker-9"] = NodeRecord(state="stopped", times={
        "connected": up - 5, "starting": up, "joined": up + 30, "stopped": up + 40})
    records["worker-10"] = NodeRecord(state="failed", time=up + 3,
                                      times={"connected": up - 5, "starting": up,
                                             "failed": up + 3})
    svg = render_timeline("r", timing, records)
    assert ">worker-10: never joined (failed)</text>" in svg
    assert re.search(r">worker-9: joined 2\d\.\d s after the median node</text>", svg)
    assert 'fill="#b3261e"><title>stopped</title>worker-9</text>' in svg  # its label in red
    assert "worker-3:" not in svg  # on time: not named


def test_a_1024_node_run_is_binned_with_the_head_and_the_stragglers_apart():
    timing, records = recorded("sim-1024")
    assert len(records) == 1024
    svg = render_timeline("r", timing, records)
    labels = row_labels(svg)
    head = [n for n, r in records.items() if r.role == "head"]
    assert labels[0] == head[0]
    bins = [label for label in labels if label.startswith("#")]
    assert len(bins) <= BINS and bins[0].startswith("#1-") and bins[-1].endswith("(31)")
    assert sum(int(re.search(r"\((\d+)\)", b).group(1)) for b in bins) == 1023
    assert len(labels) <= 1 + BINS + MAX_STRAGGLERS
    assert len(svg) < 60_000  # a picture, not a thousand rows


def test_report_writes_the_timeline_of_a_finished_run_and_refuses_an_unfinished_one(tmp_path):
    spec = make_spec("local", shared=str(tmp_path), nodes=3)
    paths = RunPaths(prepare_run_dir(spec))
    early = invoke("report", "--run", spec.run_id, "--shared", str(tmp_path))
    assert early.returncode == 2
    assert early.stderr.startswith(f"error: --run: run {spec.run_id} has no timing.json yet")
    for name in ("timing.json", "nodes.json"):
        (paths.dir / name).write_text((RECORDED / "local-3" / name).read_text())
    result = invoke("report", "--run", spec.run_id, "--shared", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{paths.timeline}\n"
    assert paths.timeline.read_text() == render_timeline(spec.run_id, *recorded("local-3"))
    assert sorted(p.name for p in paths.dir.iterdir() if p.name.startswith(".")) == []


def test_a_node_that_wrote_its_own_record_is_drawn_too(tmp_path):
    paths = RunPaths(tmp_path / "run")
    paths.nodes.mkdir(parents=True)
    timing, records = recorded("local-3")
    write_record(paths.timing, timing)
    write_record(paths.nodes_file, records)
    paths.node_record("worker-3").write_text(json.dumps(
        {"state": "failed", "time": timing.t_head_up + 1, "reason": "no head"}))
    svg = Path(write_timeline(paths)).read_text()
    assert row_labels(svg) == ["head", "worker-1", "worker-2", "worker-3"]
    assert ">worker-3: never joined (failed)</text>" in svg


def test_a_run_whose_head_died_early_still_gets_a_picture():
    """The launcher's own timing.json (the head never wrote one) and no node records: the
    milestones it has, nothing invented."""
    svg = render_timeline("r", TimingRecord(t_submit=100.0, nodes_expected=3), {})
    ElementTree.fromstring(svg)
    assert "0/3 nodes joined</text>" in svg and ">submit 0.0 s</text>" in svg
    assert row_labels(svg) == [] and bar_phases(svg) == []
