"""Every fenced block of the docs is run by the docs test or says why it cannot be here; the
comparison of a sample with what a command printed fails on drift (tests/docs_blocks.py)."""

from __future__ import annotations

from pathlib import Path

from tests import PROJECT_ROOT
from tests.docs_blocks import Block, blocks_of, match_sample, pages, steps_of


def test_every_block_of_every_page_is_run_or_says_why_not():
    unmarked = [b.where for page in pages(PROJECT_ROOT) for b in blocks_of(page) if not b.marker]
    assert unmarked == [], ("blocks without a `<!-- docs-test: run -->` or `<!-- docs-test: "
                            f"skip: REASON -->` line before them: {unmarked}")


def test_a_block_without_a_marker_is_found(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text("<!-- docs-test: skip: a real HPC site -->\n```bash\nqsub x\n```\n\n"
                    "text\n```\nrayhpc sites\n```\n")
    found = blocks_of(page)
    assert [(b.line, b.marker) for b in found] == [(2, "skip: a real HPC site"), (7, "")]


def test_commands_and_their_samples_are_split():
    page_lines = ["$ rayhpc down --run 20261124-051130-4383", "rayhpc: run stopped",
                  "$ rayhpc launch --nodes 2 \\", "    --detach", "..."]
    steps = steps_of(Block(Path("page.md"), 1, "", page_lines, "run"))
    assert [s.command for s in steps] == ["rayhpc down --run 20261124-051130-4383",
                                          "rayhpc launch --nodes 2      --detach"]
    assert steps[0].sample == ["rayhpc: run stopped"] and steps[1].sample == ["..."]


def test_a_sample_matches_in_order_and_maps_the_ids_it_names():
    sample = ["rayhpc: run 20261124-051130-4383: 3 nodes of img; run dir /tmp/demo/shared/runs/"
              "20261124-051130-4383", "...", "rayhpc: job raysubmit_abc succeeded, exit code 0"]
    output = ["rayhpc: run 20261207-000016-1a3c: 3 nodes of img; run dir /tmp/x/y/shared/runs/"
              "20261207-000016-1a3c", "2026-12-07 INFO worker.py -- Connecting",
              "rayhpc: job raysubmit_XyZ1 succeeded, exit code 0"]
    problem, ids = match_sample(sample, output)
    assert problem == ""
    assert ids == {"20261124-051130-4383": "20261207-000016-1a3c", "raysubmit_abc":
                   "raysubmit_XyZ1"}


def test_a_sample_that_drifted_does_not_match():
    sample = ["hello from 3 nodes: head, worker-1, worker-2"]
    assert match_sample(sample, ["hello from 3 nodes: head, worker-1"])[0].startswith(
        "sample line not printed (in order): 'hello from 3 nodes")
    assert match_sample(["b", "a"], ["a", "b"])[0] != ""  # out of order
    assert match_sample(["exit code 0"], ["exit code 1"])[0] != ""  # an exit code is itself
    assert match_sample(["up 0:00:05, 6 CPUs, 65.2 GiB"], ["up 1:02:03, 2 CPUs, 7.0 GiB"]) \
        == ("", {})  # what differs between runs and machines
