"""Changing a running cluster from several terminals at once, on the real engine: grow, shrink,
autoscale and down of one run take its lock and check its state (issue 29: two shrinks of one
block, two autoscalers, a grow during a down, a block the machine cannot hold), the walltime
ends local clusters and blocks, `down` without --run touches only dead runs, and a run whose
directory is removed stops instead of running on unrecorded."""

from __future__ import annotations

import grp
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rayhpc.launcher.backends.local.compose import RUN_LABEL
from tests import PROJECT_ROOT
from tests.cli import invoke, invoke_argv
from tests.launching import Background, launch, leftovers
from tests.test_elastic import start_autoscaler, status, wait_for_block

pytestmark = pytest.mark.docker


def running_containers(api, run_id: str) -> list[str]:
    return [c["Names"][0] for c in api.containers(filters={"label": f"{RUN_LABEL}={run_id}"})]


def wait_for(what: str, check, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.5)
    return found


def read_line(proc: subprocess.Popen, text: str) -> str:
    """Lines of ``proc`` up to the first that holds ``text``."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"no line with {text!r}: {''.join(seen)[-2000:]}")


def assert_only_root_and_the_containers_reach(run_dir: Path) -> None:
    """Launched by root: the containers run as uid 1000, somebody's account on a shared host;
    the run directory and token are root's and a group no one has, not uid 1000's."""
    run, token = run_dir.stat(), (run_dir / "auth_token").stat()
    assert (run.st_uid, stat.S_IMODE(run.st_mode)) == (0, 0o2770)
    assert (token.st_uid, token.st_gid, stat.S_IMODE(token.st_mode)) == (0, run.st_gid, 0o640)
    with pytest.raises(KeyError):
        grp.getgrgid(run.st_gid)
    as_uid_1000 = subprocess.run(["cat", str(run_dir / "auth_token")], capture_output=True,
                                 text=True, user=1000, group=100, extra_groups=[])
    assert as_uid_1000.returncode != 0 and "Permission denied" in as_uid_1000.stderr
    assert subprocess.run(["touch", str(run_dir / "stop")], capture_output=True, user=1000,
                          group=100, extra_groups=[]).returncode != 0


def test_changes_of_one_run_take_turns_and_check_its_state(docker_api, built_image, shared_dir):
    image, _ = built_image
    result, run_dir = launch(image, shared_dir, "--nodes", "1", "--detach")
    assert run_dir is not None and result.returncode == 0, result.stdout + result.stderr
    run_id, shared = run_dir.name, str(shared_dir)
    try:
        if os.geteuid() == 0:
            assert_only_root_and_the_containers_reach(run_dir)
        # A block the machine cannot hold is refused before anything starts (the launch's
        # own capacity check, beside the run's running node).
        big = invoke("grow", "--run", run_id, "--nodes", "500", "--shared", shared)
        assert big.returncode == 2, big.stdout + big.stderr
        assert big.stderr.startswith("error: --nodes: a block of 500 more local node(s) does "
                                     "not fit on this machine beside the run's 1"), big.stderr
        assert not list((run_dir / "blocks").glob("*")), "a refused block left files"
        assert running_containers(docker_api, run_id) == [f"/rayhpc-{run_id}-head"]
        queued = invoke("grow", "--run", run_id, "--nodes", "1", "--queue", "bogus",
                        "--shared", shared)
        assert queued.returncode == 2
        assert queued.stderr.startswith("error: --queue: site local has no queues")

        # Two shrinks of one block at once: one releases it, the other says so; no traceback.
        grown = invoke("grow", "--run", run_id, "--nodes", "1", "--shared", shared)
        assert grown.returncode == 0, grown.stdout + grown.stderr
        wait_for_block(run_dir, "b2", 1)
        shrinks = [subprocess.Popen(invoke_argv("shrink", "--run", run_id, "--block", "b2",
                                                "--shared", shared),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for _ in range(2)]
        outputs = [proc.communicate(timeout=300) for proc in shrinks]
        codes = sorted(proc.returncode for proc in shrinks)
        assert codes == [0, 2], outputs
        assert not any("Traceback" in out + err for out, err in outputs), outputs
        refused = next(err for (out, err), proc in zip(outputs, shrinks) if proc.returncode)
        assert refused.startswith("error: --block: block b2 of run"), refused
        assert "released already" in refused, refused
        assert not [c for c in leftovers(docker_api, run_id) if "-b2-" in c]

        # One autoscaler per run; a signalled one says the run stays up (it does).
        first = start_autoscaler(run_id, shared, "--autoscale", "0:1", "--idle-after", "600")
        try:
            read_line(first, f"autoscaling run {run_id}")
            second = invoke("autoscale", "--run", run_id, "--shared", shared, "--autoscale",
                            "0:1", "--period", "1", timeout=120)
            assert second.returncode == 2, second.stdout + second.stderr
            assert second.stderr.startswith(f"error: --run: run {run_id} is autoscaled already "
                                             f"by rayhpc autoscale (pid {first.pid} on "), \
                second.stderr
            first.send_signal(signal.SIGTERM)
            said = first.communicate(timeout=120)[0]
        finally:
            first.kill()
        assert f"autoscaling of run {run_id} stops (asked); the run stays up" in said, said
        assert "has ended" not in said, said
        shown = invoke("status", "--run", run_id, "--shared", shared)
        assert "up (interactive)" in shown.stdout, shown.stdout + shown.stderr

        # A grow while `down` runs is refused, and `down` leaves nothing of the run.
        down = subprocess.Popen(invoke_argv("down", "--run", run_id, "--shared", shared),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_for("the stop file", (run_dir / "stop").exists, timeout=60)
        late = invoke("grow", "--run", run_id, "--nodes", "1", "--shared", shared)
        stopped = down.communicate(timeout=300)[0]
        assert down.returncode == 0, stopped
        assert late.returncode == 2, late.stdout + late.stderr
        assert late.stderr.startswith(f"error: --run: run {run_id} is stopping (rayhpc down)") \
            or late.stderr.startswith(f"error: --run: run {run_id} has finished"), late.stderr
        assert not (run_dir / "blocks" / "b3.json").exists()
        assert leftovers(docker_api, run_id) == []
    finally:
        invoke("down", "--run", run_id, "--shared", shared)


def test_the_walltime_ends_a_local_cluster_and_its_blocks(docker_api, built_image, shared_dir):
    """No job script tells a local run its walltime is over: the head (and a block's nodes)
    keep it, stop_grace before the end, as a job script's warning would."""
    image, _ = built_image
    # A short stop_grace keeps the test short: the run stops 90 s after its submission, its
    # block 20 s after its own.
    result, run_dir = launch(image, shared_dir, "--nodes", "1", "--detach",
                             "--walltime", "1:40", env={"RAYHPC_STOP_GRACE": "10"})
    assert run_dir is not None and result.returncode == 0, result.stdout + result.stderr
    run_id, shared = run_dir.name, str(shared_dir)
    try:
        grown = invoke("grow", "--run", run_id, "--nodes", "1", "--walltime", "0:30",
                       "--shared", shared)
        assert grown.returncode == 0, grown.stdout + grown.stderr
        block = json.loads((run_dir / "blocks" / "b2.json").read_text())
        wait_for("block b2 released at its walltime",
                 lambda: status(run_dir)["nodes"].get("b2-worker-1", {}).get("state") == "left",
                 timeout=block["t_submit"] + 20 + 60 - time.time())
        assert (run_dir / "blocks" / "b2.stop").read_text().strip() == "walltime of block b2"
        assert not (run_dir / "exit_code").exists()  # the run goes on to its own walltime
        spec = json.loads((run_dir / "spec.json").read_text())
        wait_for("the run's end at its walltime", (run_dir / "exit_code").exists,
                 timeout=spec["t_submit"] + 90 + 60 - time.time())
        assert (run_dir / "exit_code").read_text().strip() == "143"
        assert (run_dir / "stop").read_text().strip() == "walltime: 100 s less stop_grace 10 s"
        assert "stopping the cluster (walltime: 100 s" in (run_dir / "logs" / "head.log") \
            .read_text()
        # Every node stopped with it; what they left goes with `down` (nothing to stop).
        wait_for("the nodes' containers to end",
                 lambda: not running_containers(docker_api, run_id))
        swept = invoke("down", "--run", run_id, "--shared", shared)
        assert f"removed what run {run_id} left" in swept.stdout, swept.stdout + swept.stderr
        assert leftovers(docker_api, run_id) == []
    finally:
        invoke("down", "--run", run_id, "--shared", shared)


def test_down_without_a_run_keeps_live_runs_and_a_removed_run_dir_stops_its_cluster(
        docker_api, built_image, shared_dir):
    image, _ = built_image
    other = shared_dir / "other-shared"  # a healthy run of another shared dir
    result, run_dir = launch(image, other, "--nodes", "1", "--detach")
    assert run_dir is not None and result.returncode == 0, result.stdout + result.stderr
    run_id = run_dir.name
    try:
        autoscaler = start_autoscaler(run_id, str(other), "--autoscale", "0:1")
        read_line(autoscaler, f"autoscaling run {run_id}")
        swept = invoke("down")
        assert swept.returncode == 0, swept.stdout + swept.stderr
        assert f"kept run {run_id}: it may be alive" in swept.stdout, swept.stdout
        assert f"`rayhpc down --run {run_id} --shared {other}`" in swept.stdout
        assert running_containers(docker_api, run_id), "a live run was removed"
        assert "up (interactive)" in invoke("status", "--run", run_id, "--shared",
                                            str(other)).stdout

        # Its run directory removed: the autoscaler ends with an error, the head stops its
        # cluster, and what is left is then dead, for `down` to remove.
        wait_for("the run directory removed", lambda: shutil.rmtree(
            run_dir, ignore_errors=True) or not run_dir.exists(), timeout=30)
        said = autoscaler.communicate(timeout=120)[0]
        assert autoscaler.returncode == 1, said
        assert f"the run directory {run_dir} is gone: autoscaling stops" in said, said
        wait_for("the head to stop its cluster",
                 lambda: not running_containers(docker_api, run_id), timeout=120)
        swept = invoke("down")
        assert f"removed run {run_id}" in swept.stdout, swept.stdout + swept.stderr
        assert leftovers(docker_api, run_id) == []
    finally:
        autoscaler.kill()
        invoke("down", "--run", run_id, "--shared", str(other))
        invoke("down")


def test_two_ctrl_c_during_the_start_record_the_runs_end(docker_api, built_image, shared_dir):
    """The second Ctrl-C removes the containers before the head could record anything: the
    launcher records the end in its stead, and the run is no longer shown as starting."""
    image, _ = built_image
    run = Background(image, shared_dir, "--nodes", "2", "--driver", "sleep 60", own_group=True)
    run.wait_for_line(re.compile(r"rayhpc: \d/2 nodes joined"))
    run.proc.send_signal(signal.SIGINT)
    run.proc.send_signal(signal.SIGINT)
    output = run.finish(timeout=120)
    assert run.proc.returncode == 130, output
    run_dir = run.run_dir
    assert run_dir is not None, output
    assert (run_dir / "exit_code").read_text().strip() == "130"
    # Recorded by the head if it had the time, else by the launcher in its stead.
    assert (run_dir / "error").read_text().startswith(("stopped by SIGINT",
                                                       "stopped before the driver ran"))
    shown = invoke("status", "--shared", str(shared_dir))
    assert run_dir.name not in shown.stdout, shown.stdout
    assert leftovers(docker_api, run_dir.name) == []


def test_a_child_forked_inside_a_with_cluster_block_leaves_the_cluster_up(
        docker_api, built_image, shared_dir):
    image, _ = built_image
    script = f"""import os, sys
sys.path.insert(0, {str(PROJECT_ROOT)!r})
from rayhpc import Cluster
with Cluster.launch(site="local", nodes=1, shared={str(shared_dir)!r}, image={image!r},
                    verbose=False) as c:
    print("RUN", c.run_id, flush=True)
    child = os.fork()
    if child == 0:
        sys.exit(0)  # leaves the `with` block too, in the child
    os.waitpid(child, 0)
    print("AFTER THE CHILD:", c.run.phase(), flush=True)
print("AFTER THE BLOCK:", c.run.phase(), flush=True)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=600)
    match = re.search(r"^RUN (\S+)$", result.stdout, re.M)
    assert match, result.stdout[-3000:] + result.stderr[-3000:]
    run_id = match.group(1)
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "AFTER THE CHILD: up (interactive)" in result.stdout, result.stdout
        assert "AFTER THE BLOCK: finished (exit code 143)" in result.stdout, result.stdout
        assert leftovers(docker_api, run_id) == []
    finally:
        invoke("down", "--run", run_id, "--shared", str(shared_dir))
