"""Elastic clusters on the real engine: `rayhpc grow` adds blocks (compose projects of their own
on the run's network) to a running interactive cluster, Ray uses their nodes, `rayhpc shrink`
drains and releases one while the cluster goes on, and `rayhpc down` stops the head and every
block the clean way."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli import invoke, invoke_argv
from tests.launching import archived, launch, leftovers

pytestmark = pytest.mark.docker

NODES_JOB = """
import json, socket, time, ray
ray.init()
alive = {n["NodeManagerHostname"]: n.get("Labels", {}) for n in ray.nodes() if n["Alive"]}
@ray.remote(num_cpus=1)
def where():
    time.sleep(0.5)
    return socket.gethostname()
ran = sorted(set(ray.get([where.remote() for _ in range(4 * len(alive))])))
print("RESULT " + json.dumps({"alive": alive, "ran": ran}), flush=True)
"""


def status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def wait_for_block(run_dir: Path, block: str, joined: int, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = (status(run_dir).get("blocks") or {}).get(block) or {}
        if counts.get("joined") == joined:
            return counts
        time.sleep(0.5)
    raise AssertionError(f"block {block}: {joined} nodes never joined: {status(run_dir)}")


def start_autoscaler(run_id: str, shared: str, *flags: str) -> subprocess.Popen:
    """`rayhpc autoscale` of the run in the background, one look a second."""
    return subprocess.Popen(
        invoke_argv("autoscale", "--run", run_id, "--shared", shared, "--block-nodes", "1",
                    "--period", "1", *flags),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_until_left(run_dir: Path, node: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (status(run_dir)["nodes"].get(node) or {}).get("state") != "left":
        assert time.monotonic() < deadline, status(run_dir)
        time.sleep(1)


def nodes_job(shared: Path, run_id: str) -> dict:
    (shared / "nodes_job.py").write_text(NODES_JOB)
    result = invoke("submit", "--run", run_id, "--shared", str(shared), "--", "python",
                    "nodes_job.py", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_grow_use_shrink_and_down(docker_api, built_image, shared_dir):
    image, _ = built_image
    other = "rayhpc-test/ray-block:elastic"  # another image (a block of another group)
    docker_api.tag(image, "rayhpc-test/ray-block", "elastic")
    result, run_dir = launch(image, shared_dir, "--nodes", "1", "--detach")
    assert run_dir is not None and result.returncode == 0, result.stdout + result.stderr
    run_id = run_dir.name
    shared = str(shared_dir)
    try:
        grown = invoke("grow", "--run", run_id, "--nodes", "2", "--shared", shared)
        assert grown.returncode == 0, grown.stdout + grown.stderr
        assert f"block b2: 2 node(s) joining run {run_id}" in grown.stdout
        assert wait_for_block(run_dir, "b2", 2)["nodes"] == ["b2-worker-1", "b2-worker-2"]
        seen = nodes_job(shared_dir, run_id)
        assert sorted(seen["alive"]) == ["b2-worker-1", "b2-worker-2", "head"]
        assert seen["ran"] == ["b2-worker-1", "b2-worker-2", "head"]  # Ray used them

        # A block of a new group, in another image: its nodes carry the group's labels.
        grown = invoke("grow", "--run", run_id, "--group", f"extra:1:{other}",
                       "--shared", shared)
        assert grown.returncode == 0, grown.stdout + grown.stderr
        wait_for_block(run_dir, "b3", 1)
        shown = invoke("status", "--run", run_id, "--shared", shared).stdout
        assert "4/4 nodes joined" in shown, shown
        assert "block b2  local  2/2 nodes joined  running 2/2" in shown, shown
        assert "block b3  local  1/1 nodes joined  running 1/1  group extra" in shown, shown

        # Shrink: drained, stopped, logs kept, recorded `left`; the cluster goes on.
        shrunk = invoke("shrink", "--run", run_id, "--block", "b2", "--shared", shared)
        assert shrunk.returncode == 0, shrunk.stdout + shrunk.stderr
        assert "block b2: 2 of 2 node(s) left the cluster drained" in shrunk.stdout
        nodes = status(run_dir)["nodes"]
        assert {nodes[n]["state"] for n in ("b2-worker-1", "b2-worker-2")} == {"left"}
        assert status(run_dir)["lost"] == []
        assert "raylet.out" in archived(run_dir, "b2-worker-1")
        assert not [c for c in leftovers(docker_api, run_id) if "-b2-" in c]
        seen = nodes_job(shared_dir, run_id)
        assert sorted(seen["alive"]) == ["b3-worker-1", "head"]
        assert seen["alive"]["b3-worker-1"]["rayhpc.io/group"] == "extra"
        head_log = (run_dir / "logs" / "head.log").read_text()
        assert "block b2: releasing 2 node(s) (rayhpc shrink): draining first" in head_log
        assert "left the cluster" not in head_log  # no node was lost

        # A block that dies is a lost set of nodes, named with its block.
        grown = invoke("grow", "--run", run_id, "--nodes", "1", "--shared", shared)
        assert grown.returncode == 0, grown.stdout + grown.stderr
        wait_for_block(run_dir, "b4", 1)
        docker_api.kill(f"rayhpc-{run_id}-b4-worker-1")
        deadline = time.monotonic() + 120
        while status(run_dir)["lost"] != ["b4-worker-1"]:
            assert time.monotonic() < deadline, status(run_dir)
            time.sleep(0.5)
        assert status(run_dir)["blocks"]["b4"]["lost"] == 1
        assert "node b4-worker-1 (block b4) left the cluster; the run goes on without it" in \
            (run_dir / "logs" / "head.log").read_text()

        # A released block cannot be released again; down stops the head and block b3.
        again = invoke("shrink", "--run", run_id, "--block", "b2", "--shared", shared)
        assert again.returncode == 2 and again.stderr.startswith("error: --block: block b2")
        down = invoke("down", "--run", run_id, "--shared", shared)
        assert down.returncode == 0, down.stdout + down.stderr
        assert "(lost: b4-worker-1) (block b2: 2 joined, 2 left; block b3: 1 joined, 0 left; " \
            "block b4: 1 joined, 0 left, 1 lost)" in down.stdout
        final = json.loads((run_dir / "nodes.json").read_text())
        assert final["b3-worker-1"]["state"] == "stopped"
        assert final["b2-worker-1"]["state"] == "left"
        assert leftovers(docker_api, run_id) == []
        finished = invoke("grow", "--run", run_id, "--nodes", "1", "--shared", shared)
        assert finished.returncode == 2
        assert finished.stderr.startswith(f"error: --run: run {run_id} has finished")
        assert not (run_dir / "blocks" / "b5.json").exists()
    finally:
        invoke("down", "--run", run_id, "--shared", shared)
        docker_api.remove_image(other)


BIG_JOB = """
import socket, time, ray
ray.init()
@ray.remote(num_cpus=2)
def work(i):
    time.sleep(15)
    return socket.gethostname()
print("RAN ON", sorted(set(ray.get([work.remote(i) for i in range(4)]))), flush=True)
"""


def test_autoscale_adds_a_block_for_unmet_demand_and_releases_it_once_idle(
        docker_api, built_image, shared_dir):
    """A 1-node cluster (2 CPUs); a job asks for 4 tasks of 2 CPUs: Ray's demand stays unmet,
    `rayhpc autoscale --autoscale 0:1` adds one block, the tasks run on it too and finish;
    once the block is idle it is released (drained, `left`); never more than MAX blocks."""
    image, _ = built_image
    result, run_dir = launch(image, shared_dir, "--nodes", "1", "--detach")
    assert run_dir is not None and result.returncode == 0, result.stdout + result.stderr
    run_id, shared = run_dir.name, str(shared_dir)
    scaler = start_autoscaler(run_id, shared, "--autoscale", "0:1", "--up-after", "4",
                              "--idle-after", "8")
    try:
        (shared_dir / "big_job.py").write_text(BIG_JOB)
        job = invoke("submit", "--run", run_id, "--shared", shared, "--", "python",
                     "big_job.py", timeout=300)
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-2000:]
        assert "RAN ON ['b2-worker-1', 'head']" in job.stdout, job.stdout[-2000:]
        wait_until_left(run_dir, "b2-worker-1", 120)
    finally:
        scaler.send_signal(signal.SIGINT)
        output, _ = scaler.communicate(timeout=60)
        invoke("down", "--run", run_id, "--shared", shared)
    assert "rayhpc: grow: " in output and "requests unmet for" in output, output
    assert "rayhpc: release b2: idle for" in output, output
    assert "block b2: 1 of 1 node(s) left the cluster drained" in output, output
    assert output.count("rayhpc: grow: ") == 1, output  # MAX 1
    assert not (run_dir / "blocks" / "b3.json").exists()
    assert leftovers(docker_api, run_id) == []


def test_block_lifetime_replaces_a_block_ahead_and_releases_it_once_the_new_one_joined(
        docker_api, built_image, shared_dir):
    """`rayhpc autoscale --autoscale 1:1 --block-lifetime 00:00:25`: block b2 is grown to MIN;
    past its lifetime a replacement (b3) is submitted, and only once b3's node joined is b2
    drained and released (`left`): the capacity holds, at most MAX + 1 blocks meanwhile."""
    image, _ = built_image
    result, run_dir = launch(image, shared_dir, "--nodes", "1", "--detach")
    assert run_dir is not None and result.returncode == 0, result.stdout + result.stderr
    run_id, shared = run_dir.name, str(shared_dir)
    scaler = start_autoscaler(run_id, shared, "--autoscale", "1:1", "--block-lifetime",
                              "00:00:25", "--idle-after", "600")
    try:
        wait_until_left(run_dir, "b2-worker-1", 240)
        nodes = status(run_dir)["nodes"]
        assert nodes["b3-worker-1"]["state"] == "joined", nodes  # the capacity held
    finally:
        scaler.send_signal(signal.SIGINT)
        output, _ = scaler.communicate(timeout=60)
        invoke("down", "--run", run_id, "--shared", shared)
    assert "rayhpc: grow: 0 blocks, fewer than MIN 1" in output, output
    assert "rayhpc: replace b2: running " in output, output
    assert "rayhpc: release b2: past its lifetime; every node of its replacement b3 joined" \
        in output, output
    assert output.index("replace b2") < output.index("block b3: 1 node(s) joining") < \
        output.index("release b2"), output
    assert leftovers(docker_api, run_id) == []
