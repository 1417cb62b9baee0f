"""Elastic clusters without an engine: block naming, the block's job script and compose file
(golden), refusals before anything is submitted, the head's release (drain before stop, joined
nodes first) and its per-block counts, and `left` versus lost over the real control channel."""

from __future__ import annotations

import dataclasses
import json
import socket
import time
from pathlib import Path

import pytest

from rayhpc.common.user_error import UserError
from rayhpc.launcher.backends.batch.jobscript import render_job_script
from rayhpc.launcher.backends.local.compose import render_block_compose
from rayhpc.launcher.contract import Block, RunPaths, drain_window, read_blocks, write_record
from rayhpc.launcher.node.block_keeper import BlockKeeper, block_counts, idle, release_order
from rayhpc.launcher.node.channel import Channel, ControlServer, secret_of
from rayhpc.launcher.resolve.config import load_site
from rayhpc.launcher.runs.grow_shrink import BlockRequest, claim, next_block_number, resolve_block
from rayhpc.launcher.runs.run import Run
from tests.cli import invoke
from tests.golden import assert_golden
from tests.specs import head_record, make_spec

SHARED = "/lus/proj/shared"


def frontier_spec(**cli):
    return make_spec("frontier", shared=SHARED, account="PROJ", walltime="01:00:00",
                     image="/lus/proj/ray.sif", **cli)


# -- naming

def test_blocks_are_numbered_after_the_launch_and_nodes_named_by_block():
    assert next_block_number([]) == 2  # the launch's own job is block 1
    blocks = [Block(name=n, nodes=1, group="", image="", walltime_s=60, t_submit=0)
              for n in ("b2", "b10", "b3")]
    assert next_block_number(blocks) == 11
    block, _ = resolve_block(make_spec("local"), load_site("local"), blocks,
                             BlockRequest(nodes=2), node_names=True, now=5.0)
    assert block.name == "b11" and block.node_names == ["b11-worker-1", "b11-worker-2"]
    assert block.walltime_s == make_spec("local").walltime_s  # the run's by default


def test_two_grows_at_once_get_two_blocks(tmp_path):
    spec = dataclasses.replace(make_spec("local"), shared=tmp_path)
    run = Run(RunPaths(spec.run_dir), spec)
    run.paths.dir.mkdir(parents=True)
    first, _ = resolve_block(spec, load_site("local"), [], BlockRequest(nodes=1), True, 1.0)
    second, _ = resolve_block(spec, load_site("local"), [], BlockRequest(nodes=1), True, 1.0)
    assert first.name == second.name == "b2"  # both read the same (empty) blocks/
    assert claim(run, first).name == "b2"
    taken = claim(run, second)
    assert taken.name == "b3" and taken.node_names == ["b3-worker-1"]
    assert [b.name for b in read_blocks(run.paths)] == ["b2", "b3"]


# -- rendering (golden)

def test_block_job_script_golden():
    spec = frontier_spec(nodes=4)
    block, block_spec = resolve_block(spec, load_site("frontier"), [],
                                      BlockRequest(nodes=8, walltime="30:00"), False, 1.0)
    script = render_job_script(block_spec, load_site("frontier"), block, "10.1.2.3")
    assert_golden("job.frontier-block.sh", script)
    # A worker-only job of its own: the block's size and walltime, its own output and stop
    # file, the head's address written in; it never writes the run's exit code.
    assert "#SBATCH --nodes=8" in script and "#SBATCH --time=00:30:00" in script
    assert f"#SBATCH --output={SHARED}/runs/{spec.run_id}/blocks/b2.out" in script
    assert "export RAYHPC_HEAD_HOST=10.1.2.3" in script
    assert "blocks/b2.stop" in script and "/exit_code" not in script


@pytest.mark.parametrize("site, image", [("polaris", "/eagle/PROJ/ray.sif"),
                                         ("lsf", "/gpfs/PROJ/ray.sif"),
                                         ("theta", "/lus/theta-fs0/projects/PROJ/ray.sif")])
def test_block_job_scripts_of_the_other_schedulers_golden(site, image):
    """A block's job on each scheduler's own lines (PBS, LSF, Cobalt): worker nodes only, the
    block's size, walltime and output, its stop file; the emulated PBS and LSF sites run
    such a block for real (tests/test_site_emulation.py)."""
    spec = make_spec(site, shared=SHARED, account="PROJ", walltime="01:00:00", image=image,
                     nodes=2)
    block, block_spec = resolve_block(spec, load_site(site), [],
                                      BlockRequest(nodes=3, walltime="30:00"), False, 1.0)
    script = render_job_script(block_spec, load_site(site), block, "10.1.2.3")
    assert_golden(f"job.{site}-block.sh", script)
    assert "export RAYHPC_HEAD_HOST=10.1.2.3" in script
    assert f"{SHARED}/runs/{spec.run_id}/blocks/b2.out" in script
    assert "blocks/b2.stop" in script and "/exit_code" not in script
    assert "--role worker --block b2" in script


def test_block_compose_golden():
    spec = make_spec("local", nodes=2, shared="/data/shared")
    block, block_spec = resolve_block(spec, load_site("local"), [], BlockRequest(nodes=2),
                                      True, 1.0)
    text = render_block_compose(block_spec, block, "172.20.0.2")
    assert_golden("compose.local-block.yaml", text)
    assert f"name: rayhpc-{spec.run_id}\n    external: true" in text  # the run's network


def test_a_block_of_a_new_group_carries_it_in_its_own_spec():
    spec = make_spec("local", nodes=2)
    block, block_spec = resolve_block(spec, load_site("local"), [],
                                      BlockRequest(group="gpuish:3:other:tag,resources.x=1"),
                                      True, 1.0)
    assert (block.group, block.nodes, block.image) == ("gpuish", 3, "other:tag")
    group = block_spec.group("gpuish")
    assert group.resources == {"x": 1.0} and group.labels["rayhpc.io/group"] == "gpuish"
    assert spec.group("gpuish") is None  # the run's own spec is not changed


# -- refusals: one error line, nothing submitted

@pytest.mark.parametrize("request_, message", [
    (BlockRequest(), "--nodes: give the block's node count"),
    (BlockRequest(nodes=2, walltime="00:00:30"), "--walltime: 00:00:30 leaves the block no"),
    (BlockRequest(nodes=2, walltime="soon"), "--walltime: must be a walltime"),
    (BlockRequest(nodes=100, queue="extended"), "--queue: extended (1 to 64 nodes, at most "
                                                "1-00:00:00) takes 1 to 64 nodes, not 100"),
    (BlockRequest(nodes=200, walltime="20:00:00"), "--nodes 200 --walltime 20:00:00: no queue"),
    (BlockRequest(nodes=2, group="nope"), "--group: run 20260101-000000-abcd has no group"),
])
def test_a_block_outside_the_site_or_the_run_is_refused(request_, message):
    with pytest.raises(UserError) as caught:
        resolve_block(frontier_spec(nodes=4), load_site("frontier"), [], request_, False, 1.0)
    assert str(caught.value).startswith(message), caught.value


def test_a_run_with_groups_needs_the_blocks_group():
    spec = make_spec("local", group=["head:1", "cpu:2"])
    with pytest.raises(UserError, match="--group: run .* has node groups"):
        resolve_block(spec, load_site("local"), [], BlockRequest(nodes=1), True, 1.0)
    with pytest.raises(UserError, match="--group: head is the head's group"):
        resolve_block(spec, load_site("local"), [], BlockRequest(nodes=1, group="head"),
                      True, 1.0)
    block, _ = resolve_block(spec, load_site("local"), [], BlockRequest(nodes=1, group="cpu"),
                             True, 1.0)
    assert block.group == "cpu"


def fake_run(shared: Path, *, exit_code: str | None = None, head: bool = True) -> str:
    spec = dataclasses.replace(make_spec("local", nodes=1), shared=shared)
    paths = RunPaths(spec.run_dir)
    paths.dir.mkdir(parents=True)
    paths.spec.write_text(json.dumps(spec.to_json()))
    if head:
        write_record(paths.head, head_record("172.20.0.2", "head"))
    if exit_code is not None:
        paths.exit_code.write_text(exit_code + "\n")
    return spec.run_id


@pytest.mark.parametrize("args, message", [
    (("grow", "--run", "20990101-000000-none", "--nodes", "1"), "--run: no run"),
    (("grow", "--run", "RUN", "--nodes", "0"), "--nodes: '0' is not a node count"),
    (("shrink", "--run", "RUN"), "--block: give the block to release"),
    (("shrink", "--run", "RUN", "--block", "b7"), "--block: run RUN has no block 'b7'"),
    (("autoscale", "--run", "RUN", "--autoscale", "3:1"),
     "--autoscale: MIN 3 is more than MAX 1"),
    (("autoscale", "--run", "RUN", "--autoscale", "0:2", "--walltime", "00:00:10"),
     "--walltime: 00:00:10 leaves the block no time"),
    (("autoscale", "--run", "RUN", "--autoscale", "0:2", "--walltime", "30:00",
      "--block-lifetime", "30:00"),
     "--block-lifetime: 00:30:00 is not before the block's release at 00:29:00"),
    (("autoscale", "--run", "RUN", "--autoscale", "0:2", "--walltime", "30:00",
      "--lifetime-stagger", "30:00"),
     "--lifetime-stagger: 00:30:00 is not shorter than the block lifetime (00:23:00)"),
])
def test_grow_and_shrink_refuse_bad_input_in_one_line(tmp_path, args, message):
    run_id = fake_run(tmp_path)
    result = invoke(*(a.replace("RUN", run_id) for a in args), "--shared", str(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: " + message.replace("RUN", run_id))
    assert not (tmp_path / "runs" / run_id / "blocks").exists()  # nothing submitted


def test_grow_refuses_a_finished_run_and_one_whose_head_is_not_up(tmp_path):
    done = fake_run(tmp_path / "a", exit_code="0")
    result = invoke("grow", "--run", done, "--nodes", "1", "--shared", str(tmp_path / "a"))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: --run: run {done} has finished")
    early = fake_run(tmp_path / "b", head=False)
    result = invoke("grow", "--run", early, "--nodes", "1", "--shared", str(tmp_path / "b"))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: --run: the head of run {early} is not up yet")


def test_grow_on_a_batch_site_without_its_scheduler_here_submits_nothing(tmp_path):
    spec = dataclasses.replace(frontier_spec(nodes=2), shared=tmp_path)
    paths = RunPaths(spec.run_dir)
    paths.dir.mkdir(parents=True)
    paths.spec.write_text(json.dumps(spec.to_json()))
    write_record(paths.head, head_record("10.0.0.1", "frontier0001"))
    result = invoke("grow", "--run", spec.run_id, "--nodes", "2", "--site", "frontier",
                    "--shared", str(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: --run: run 20260101-000000-abcd: sbatch not found")
    assert not paths.blocks.exists()


# -- the head: counts, release order, drain before stop

def test_block_counts_tell_joined_left_and_lost_per_block():
    records = {"node2": {"state": "joined", "block": ""},
               "b2-a": {"state": "left", "block": "b2"}, "b2-b": {"state": "gone", "block": "b2"},
               "b3-a": {"state": "joined", "block": "b3"},
               "b3-b": {"state": "stopped", "block": "b3"}}  # stopped with the cluster: not lost
    assert block_counts(records) == {
        "b2": {"nodes": ["b2-a", "b2-b"], "joined": 0, "left": 1, "lost": 1},
        "b3": {"nodes": ["b3-a", "b3-b"], "joined": 1, "left": 0, "lost": 0}}


def test_release_takes_the_blocks_live_nodes_joined_first():
    records = {"b2-c": {"state": "starting", "block": "b2"},
               "b2-a": {"state": "joined", "block": "b2"},
               "b2-b": {"state": "left", "block": "b2"},
               "b3-a": {"state": "joined", "block": "b3"}}
    assert release_order(records, "b2") == ["b2-a", "b2-c"]


def test_idle_means_every_cpu_and_gpu_free():
    assert idle({"CPU": 2.0, "GPU": 1.0}, {"CPU": 2.0, "GPU": 1.0, "memory": 5})
    assert not idle({"CPU": 1.0}, {"CPU": 2.0})


def test_drain_window_leaves_time_to_stop_and_keep_logs():
    assert drain_window(60) == 30 and drain_window(30) == 15 and drain_window(600) == 30


class FakeDrain:
    def __init__(self, log: list, busy_rounds: int):
        self.log = log
        self.busy_rounds = busy_rounds

    def drain(self, ids, message, window):
        self.log.append(("drain", sorted(ids), window))
        return []

    def busy(self, ids):
        self.log.append(("busy",))
        self.busy_rounds -= 1
        return ids if self.busy_rounds > 0 else []


class FakeServer:
    def __init__(self, records, log):
        self._records = records
        self.log = log

    def records(self):
        return self._records

    def release(self, names, reason):
        self.log.append(("stop", names, reason))


class FakeHead:
    def __init__(self, tmp_path, records, log):
        self.paths = RunPaths(tmp_path)
        self.paths.blocks.mkdir(parents=True)
        self.spec = make_spec("local")
        self.server = FakeServer(records, log)
        self.notes: list[str] = []

    def note(self, text):
        self.notes.append(text)

    def say(self, text):
        self.notes.append(text)


def test_a_released_block_is_drained_until_idle_then_stopped(tmp_path, monkeypatch):
    log: list = []
    records = {"b2-a": {"state": "joined", "block": "b2", "ip": "10.0.0.5"},
               "b2-b": {"state": "starting", "block": "b2", "ip": ""}}
    head = FakeHead(tmp_path, records, log)
    head.paths.request_block_stop("b2", "rayhpc shrink")
    keeper = BlockKeeper(head, FakeDrain(log, busy_rounds=2))
    monkeypatch.setattr(BlockKeeper, "ray_ids", staticmethod(lambda r, n: {"b2-a": "ab12"}))
    keeper.release("b2", sleep=lambda s: None)
    window = drain_window(head.spec.stop_grace)
    assert log == [("drain", ["ab12"], window), ("busy",), ("busy",),
                   ("stop", ["b2-a", "b2-b"], "block b2 released (rayhpc shrink)")]
    assert head.notes == ["block b2: releasing 2 node(s) (rayhpc shrink): draining first"]


def test_the_head_looks_for_released_blocks_with_one_listing(tmp_path):
    paths = RunPaths(tmp_path)
    paths.blocks.mkdir()
    for name in ("b2.json", "b2.pyz", "b3.json"):
        (paths.blocks / name).write_text("")
    assert paths.released_blocks() == set()
    assert paths.request_block_stop("b3", "rayhpc shrink")
    assert not paths.request_block_stop("b3", "the walltime")  # once, by the first to ask
    assert paths.released_blocks() == {"b3"}


# -- left, not lost, over the real control channel

def peer(port: int, token: str, node: str, block: str) -> Channel:
    channel = Channel(socket.create_connection(("127.0.0.1", port), timeout=5))
    channel.send(node=node, secret=secret_of(token), block=block)
    return channel


def wait_for(server: ControlServer, test, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = server.records()
        if test(records):
            return records
        time.sleep(0.02)
    raise AssertionError(server.records())


def test_a_released_node_ends_left_and_a_dying_one_is_lost():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ControlServer(port, secret_of("tok"), ("127.0.0.1",))
    try:
        kept = peer(port, "tok", "b2-a", "b2")
        dying = peer(port, "tok", "b2-b", "b2")
        for channel in (kept, dying):
            channel.send(state="joined", ip="10.0.0.9")
        wait_for(server, lambda r: all(p["state"] == "joined" for p in r.values())
                 and len(r) == 2)
        assert server.records()["b2-a"]["block"] == "b2"
        server.release(["b2-a"], "block b2 released (rayhpc shrink)")
        kept.sock.settimeout(5)
        assert json.loads(kept.sock.recv(4096)) == {"stop": "block b2 released (rayhpc shrink)"}
        kept.send(state="stopped", reason="the head said stop", final={"node": "b2-a"})
        dying.close()  # its host died: no final word
        records = wait_for(server, lambda r: r["b2-a"]["state"] == "left"
                           and r["b2-b"]["state"] == "gone")
        assert block_counts(records)["b2"] == {"nodes": ["b2-a", "b2-b"], "joined": 0,
                                              "left": 1, "lost": 1}
        kept.close()
    finally:
        server.close()
