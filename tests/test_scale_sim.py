"""The control plane at N = 32 in the scale simulator (benchmarks/scale.py): real node agents as
plain processes, a stand-in for Ray that starts at once. Every node joins and is told to stop,
a killed head is noticed by every worker, a node whose Ray never registers is named, and each
node's work on the run directory stays a handful of operations."""

from __future__ import annotations

import json
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from scale import Simulation  # noqa: E402

NODES = 32


def wait_all_joined(simulation: Simulation, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while simulation.seen_all is None:
        assert time.monotonic() < deadline, "the nodes never all joined"
        time.sleep(0.2)


@pytest.fixture
def sim(tmp_path):
    made = []

    def make(**options) -> Simulation:
        options = {"agent": None, "driver_s": 1, "wait_s": 3, **options}
        made.append(Simulation(NODES, tmp_path, **options))
        return made[-1]

    yield make
    for simulation in made:
        simulation.cleanup()


def test_every_node_joins_runs_and_is_told_to_stop(sim):
    simulation = sim()
    result = simulation.run()
    assert result["exit_code"] == 0 and result["joined"] == NODES, result
    records = json.loads(simulation.paths.nodes_file.read_text())
    assert len(records) == NODES
    workers = {name: r for name, r in records.items() if name != "sim-00000"}
    assert {r["state"] for r in workers.values()} == {"stopped"}
    assert {r["reason"] for r in workers.values()} == {"the head said stop"}
    assert all(r["logs"]["archive"] == f"{name}.tar.gz" for name, r in workers.items())
    # One read of spec and token, one archive, the interpreter's own reads of the script: the
    # rest is the head's (its files, the stop file once a second).
    assert result["one_time_per_node"] <= 10, result
    assert result["delay_s"] is not None and result["delay_s"] <= 1.0, result


def test_a_killed_head_is_noticed_by_every_worker(sim):
    simulation = sim(driver_s=600)
    simulation.bring_up()
    wait_all_joined(simulation)
    simulation.head.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    simulation.wait(timeout=60)
    assert time.monotonic() - killed < 30
    # The head cannot collect their records: each worker writes its own.
    records = [json.loads(p.read_text()) for p in simulation.paths.nodes.glob("*.json")]
    assert len(records) == NODES - 1
    assert {r["state"] for r in records} == {"lost-head"}


def test_a_node_whose_ray_never_registers_is_named(sim):
    simulation = sim(join_timeout=8, hang=frozenset({7}))
    result = simulation.run()
    assert result["exit_code"] == 1
    error = simulation.paths.read_error()
    assert error.startswith(f"timed out after 8 s waiting for {NODES} nodes "
                            f"({NODES - 1} joined); never joined: sim-00007 (ray start did "
                            "not finish)"), error


def test_a_slow_gcs_is_not_taken_for_a_dead_head(sim):
    """Every answer of the GCS takes a second (a head busy with a large cluster): workers do
    not ask it anything, so none of them gives up; the cluster comes up and ends cleanly."""
    simulation = sim(environ={"RAYHPC_SIM_GCS_DELAY_S": "1"})
    result = simulation.run()
    assert result["exit_code"] == 0 and result["joined"] == NODES, result
    records = json.loads(simulation.paths.nodes_file.read_text())
    assert {r["state"] for r in records.values()} == {"stopped"}


def test_a_run_directory_that_cannot_be_written_any_more_ends_every_node(sim):
    """The run directory refuses new files while the driver runs (made immutable: a file
    system gone read-only or over quota does the same): no node can keep its logs or record;
    every agent still ends, nothing is left running."""
    simulation = sim(driver_s=6)
    simulation.bring_up()
    wait_all_joined(simulation)
    locked = [simulation.paths.dir, simulation.paths.logs, simulation.paths.nodes]
    subprocess.run(["chattr", "+i", *map(str, locked)], check=True)
    try:
        simulation.wait(timeout=120)
        assert all(proc.returncode is not None for proc in simulation.procs)
        assert simulation.paths.read_exit_code() is None  # it could not be written
        assert not list(simulation.paths.logs.glob("*.tar.gz"))
        assert not list(simulation.paths.dir.rglob(".*.tmp"))  # no half-written file
    finally:
        subprocess.run(["chattr", "-i", *map(str, locked)], check=False)


def test_a_worker_whose_preflight_fails_ends_the_launch_at_once_by_its_name(sim):
    """One worker sees another Ray version than the head's: its preflight refuses it before it
    joins, and the head ends the launch at once (not at the join timeout), in that worker's
    words; every other node is told to stop."""
    simulation = sim(join_timeout=300, skewed=frozenset({7}))
    started = time.monotonic()
    result = simulation.run()
    took = time.monotonic() - started
    assert result["exit_code"] == 1, result
    error = simulation.paths.read_error()
    assert error == ("preflight on sim-00007: versions: Ray 2.59.0, Python "
                     f"{platform.python_version()} here, Ray 2.60.0, Python "
                     f"{platform.python_version()} on the head; Ray refuses nodes of another "
                     "version: run one image (or images of the same Ray and Python) on every "
                     "node"), error
    assert took < 60, f"the launch took {took:.0f} s to fail"  # the join timeout is 300 s
    records = json.loads(simulation.paths.nodes_file.read_text())
    # A worker still probing when the head's agent closed writes its own (the stop file).
    records.update({p.stem: json.loads(p.read_text())
                    for p in simulation.paths.nodes.glob("*.json")})
    assert len(records) == NODES
    assert records["sim-00007"]["state"] == "failed"
    assert records["sim-00007"]["reason"] == error
    # The others were stopped, none failed: a `ray start` cut short by the head's teardown
    # is not a failure of its node.
    others = {r["state"] for name, r in records.items() if name not in ("sim-00000",
                                                                          "sim-00007")}
    assert others == {"stopped"}, records


def test_late_blocks_join_the_running_head_and_leave_at_a_first_job_nodes_cost(tmp_path):
    """The late-block case at tiny N: two blocks of 4 (one wave each) join a running head of
    8 nodes as `rayhpc grow` makes them, leave by their stop files (drained, `left`), and the
    run ends cleanly; a block's node costs the run directory what a first-job node does."""
    from late_blocks import LateBlocks

    case = LateBlocks(8, tmp_path, blocks=2, block_nodes=4, at_once=1, hold_s=1, wait_s=3)
    try:
        result = case.go()
    finally:
        case.sim.cleanup()
    assert result["exit_code"] == 0, result
    assert result["blocks"] == {
        name: {"nodes": [f"{name}-sim-{i:05d}" for i in indices], "joined": 0, "left": 4,
               "lost": 0}
        for name, indices in (("b2", range(8, 12)), ("b3", range(12, 16)))}, result
    records = json.loads(case.sim.paths.nodes_file.read_text())
    assert {r["state"] for n, r in records.items() if n.startswith("b")} == {"left"}
    block, first = result["per_node"]["block"], result["per_node"]["first job"]
    assert block["nodes"] == 8 and first["nodes"] == 7
    # No more than a first-job node: the block reads its node program's spec, not spec.json,
    # and its job script's head address, not head.json.
    assert block["one_time"] <= first["one_time"], result["per_node"]
    assert all(v["ops_s"] is not None for v in result["phases"].values()), result["phases"]
