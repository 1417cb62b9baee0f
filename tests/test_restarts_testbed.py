"""`--restarts N` on the Slurm test bed, for real: a run whose allocation ends before its driver
(the walltime warning, the head's node lost) is requeued by its own job script or by Slurm, and
its resuming driver (examples/resume_steps.py) goes on from its last checkpoint; the attempts
are kept apart in the run directory and shown by `rayhpc status` and the timeline."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from rayhpc.launcher.contract import RunPaths
from tests import PROJECT_ROOT
from tests.test_slurm_testbed import (
    SITE,
    _job_out,
    _read,
    assert_nothing_left,
    launch,
)
from tests.testbed.harness import SlurmTestbed

pytestmark = pytest.mark.docker


def resume_driver(steps: int) -> str:
    return f"python examples/resume_steps.py --steps {steps} --step-seconds 1"


def job_id_of(result: subprocess.CompletedProcess) -> str:
    match = re.search(r"submitted job (\d+) to slurm", result.stdout)
    assert match, result.stdout + result.stderr
    return match.group(1)


def wait_until(predicate, timeout: float, what: str, run_dir: Path | None = None) -> float:
    """Poll until ``predicate()``; the moment (monotonic) it held."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s" + _job_out(run_dir)
        time.sleep(0.5)
    return time.monotonic()


def steps_done(run_dir: Path) -> int:
    return len(re.findall(r"^step \d+/\d+ done", _read(run_dir / "driver.log"), re.M))


def warn_like_the_walltime(bed: SlurmTestbed, job_id: str) -> None:
    """What Slurm does at the walltime warning of a job submitted with --signal=B:TERM@30:
    SIGTERM to the batch shell alone (sbatch(1) --signal "B:"; scancel(1) --batch)."""
    sent = bed.exec("controller", "scancel", "--batch", "--signal=TERM", job_id, user="ray")
    assert sent.returncode == 0, sent.stderr


def ended(run_dir: Path) -> bool:
    return RunPaths(run_dir).read_exit_code() is not None


def status_of(bed: SlurmTestbed, run_dir: Path) -> str:
    result = bed.exec("controller", "python3", "-m", "invoke", "-r", str(PROJECT_ROOT), "status",
                      "--run", run_dir.name, "--shared", str(bed.shared), user="ray")
    return result.stdout + result.stderr


def checkpoint(run_dir: Path) -> dict:
    return json.loads((run_dir.parent.parent / "checkpoints" / run_dir.name
                       / "resume_steps.json").read_text())


def test_the_walltime_warning_requeues_the_job_and_the_driver_resumes_until_none_are_left(
        testbed):
    """(a) The walltime warning at step k: the agents stop, the head writes `restarting`, the
    job script requeues its job (`scontrol requeue`), attempt 2 starts in the same run
    directory and the driver resumes at step k, each step counted once. (c) With --restarts 1
    the warning in attempt 2 ends the run: said in one line, with the exit code of a stopped
    run (143); `rayhpc launch --wait` follows both attempts. (A run that resumes and finishes
    is (b)'s.)"""
    runs = testbed.shared / "runs"
    before = set(runs.iterdir()) if runs.is_dir() else set()
    launcher = subprocess.Popen(
        ["docker", "exec", "-u", "ray", "-w", str(testbed.shared), f"{testbed.name}-controller",
         "python3", "-m", "invoke", "-r", str(PROJECT_ROOT), "launch", "--site", str(SITE),
         "--shared", str(testbed.shared), "--image", f"{testbed.shared}/ray.sif", "--wait",
         "--nodes", "2", "--restarts", "1", "--driver", resume_driver(200)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def made() -> bool:
        assert launcher.poll() is None, f"the launch ended: {launcher.communicate()[0][-3000:]}"
        return runs.is_dir() and bool(set(runs.iterdir()) - before)

    wait_until(made, 180, "no run directory")
    run_dir = (set(runs.iterdir()) - before).pop()
    job_id = wait_until(lambda: RunPaths(run_dir).job_id.exists(), 60, "no job id") and \
        RunPaths(run_dir).job_id.read_text().strip()
    wait_until(lambda: steps_done(run_dir) >= 5, 180, "the driver never did 5 steps", run_dir)
    warned = time.monotonic()
    warn_like_the_walltime(testbed, job_id)
    wait_until(lambda: (run_dir / "attempts" / "2").is_dir(), 120, "no second attempt", run_dir)
    resumed = wait_until(lambda: "(attempt 2)" in _read(run_dir / "driver.log"), 180,
                         "the driver never resumed", run_dir)
    print(f"\nfrom the walltime warning to the resumed driver's first step: "
          f"{resumed - warned:.1f} s")
    status = status_of(testbed, run_dir)
    assert "attempt 2 of 2" in status, status
    assert re.search(r"attempt 1 of 2: .*ended: its allocation ended \(job script: walltime",
                     status), status
    first = _read(run_dir / "attempts" / "1" / "driver.log")
    k = len(re.findall(r"^step \d+/\d+ done \(attempt 1\)", first, re.M))
    assert k >= 5 and f"resuming at step {k} of 200" in _read(run_dir / "driver.log")
    wait_until(lambda: steps_done(run_dir) >= 2, 60, "attempt 2 did no step", run_dir)
    warn_like_the_walltime(testbed, job_id)
    output, _ = launcher.communicate(timeout=240)
    assert launcher.returncode == 143, output[-3000:] + _job_out(run_dir)
    assert "attempt 1 ended: its allocation ended (job script: walltime or cancel); " \
           "attempt 2 of 2 follows" in output
    last = [line for line in output.splitlines() if "no restarts left" in line]
    assert last == ["rayhpc: error: attempt 2 of 2 ended before the driver: its allocation "
                    "ended (job script: walltime or cancel); no restarts left (--restarts 1)"]
    assert output.rstrip().endswith("exit code 143")
    assert not (run_dir / "attempts" / "3").exists()
    # Each step once, in order: attempt 1's, then attempt 2's from step k on.
    done_by = checkpoint(run_dir)["done_by"]
    assert done_by[:k] == [1] * k and set(done_by[k:]) == {2} and len(done_by) > k
    # Each attempt's files apart; Slurm kept one job (the same id) and appended its output.
    assert (run_dir / "attempts" / "1" / "restarting").is_file()
    assert json.loads((run_dir / "attempts" / "1" / "head.json").read_text())["node"]
    assert (run_dir / "job_id").read_text().strip() == job_id
    assert re.findall(r"^rayhpc: attempt (\d) of 2 \(job (\d+)\)$", _read(run_dir / "job.out"),
                      re.M) == [("1", job_id), ("2", job_id)]
    assert "attempt 1 of 2" in _read(run_dir / "timeline.svg")
    assert_nothing_left(testbed)


def test_the_heads_node_lost_leads_to_a_restart_that_finishes(testbed):
    """(b) The container of the head's node is killed mid-run: Slurm finds the node not
    responding (SlurmdTimeout), marks it down and requeues the job (--requeue); attempt 2
    runs on the nodes left and the driver resumes."""
    steps = 20
    submitted, run_dir = launch(testbed, "--nodes", "2", "--restarts", "1", "--driver",
                                resume_driver(steps), wait=False)
    wait_until(lambda: steps_done(run_dir) >= 3, 180, "the driver never did 3 steps", run_dir)
    head_node = json.loads((run_dir / "head.json").read_text())["node"]
    killed = time.monotonic()
    testbed.api.kill(testbed.containers[head_node])
    try:
        resumed = wait_until(lambda: "(attempt 2)" in _read(run_dir / "driver.log"), 240,
                             "the driver never resumed after the node's loss", run_dir)
        print(f"\nfrom the head's node lost to the resumed driver's first step: "
              f"{resumed - killed:.1f} s")
        wait_until(lambda: ended(run_dir), 180, "the run did not end", run_dir)
    finally:
        testbed.api.start(testbed.containers[head_node])  # back for the tests after this one
    assert RunPaths(run_dir).read_exit_code() == 0, _job_out(run_dir)
    state = checkpoint(run_dir)
    assert state["total"] == sum(i * i for i in range(steps))
    assert len(state["done_by"]) == steps and set(state["done_by"]) == {1, 2}
    # No head wrote why attempt 1 ended: the launcher says what it can.
    assert not (run_dir / "attempts" / "1" / "restarting").exists()
    assert "attempt 1 of 2" in _read(run_dir / "timeline.svg")
    assert json.loads((run_dir / "head.json").read_text())["node"] != head_node
    wait_until(lambda: "idle" in testbed.exec("controller", "sinfo", "--noheader", "-n",
                                              head_node, "--format=%T").stdout,
               120, f"{head_node} did not come back")
    assert_nothing_left(testbed, wait_s=60)


def test_a_driver_that_fails_is_not_restarted_unless_asked(testbed):
    """(d) A driver that exits 3 with --restarts 1: the run ends with 3 in its first attempt
    (a bug should not burn the allocation twice)."""
    result, run_dir = launch(testbed, "--restarts", "1", "--driver",
                             "python -c 'import sys; sys.exit(3)'")
    assert result.returncode == 3, result.stdout[-3000:] + _job_out(run_dir)
    assert sorted(p.name for p in (run_dir / "attempts").iterdir()) == ["1"]
    assert not (run_dir / "restarting").exists()
    assert_nothing_left(testbed)
