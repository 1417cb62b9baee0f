"""--restarts on the local site, on the real engine: the head's container killed mid-run, the
launcher starts the cluster again in the same run directory, the driver resumes from its
checkpoint, every step counted once, and nothing is left."""

from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest

from tests.cli import invoke
from tests.launching import Background, archived, launch, leftovers

pytestmark = pytest.mark.docker


def echo(endpoint: str, text: str) -> str:
    """What examples/serve_echo.py answers at ``endpoint`` (no proxy: it is this host's)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{endpoint}/?text={text}", timeout=30) as response:
        return json.loads(response.read())["echo"]


def test_the_head_killed_the_launcher_starts_the_run_again_and_the_driver_resumes(
        docker_api, built_image, shared_dir):
    image, _ = built_image
    steps = 30
    run = Background(image, shared_dir, "--nodes", "2", "--restarts", "1", "--driver",
                     f"python examples/resume_steps.py --steps {steps} --step-seconds 1")
    run.wait_for_line("step 4/30 done (attempt 1)")
    run_dir = run.run_dir
    docker_api.kill(f"rayhpc-{run_dir.name}-head")
    killed = time.monotonic()
    run.wait_for_line(re.compile(r"step \d+/30 done \(attempt 2\)"))
    print(f"\nfrom the head's loss to the resumed driver's first step: "
          f"{time.monotonic() - killed:.1f} s")
    output = run.finish()
    assert run.proc.returncode == 0, output[-3000:]
    said = re.search(r"rayhpc: attempt 1 ended: the head was lost \(its container exited "
                     r"\(status 137\)\); attempt 2 of 2 follows\n", output)
    assert said, output[-3000:]
    assert "rayhpc: attempt 2 of 2: starting the cluster again" in output
    first = (run_dir / "attempts" / "1" / "driver.log").read_text()
    k = len(re.findall(r"^step \d+/30 done \(attempt 1\)", first, re.M))
    assert f"attempt 2: resuming at step {k} of {steps}" in output
    state = json.loads((shared_dir / "checkpoints" / run_dir.name
                        / "resume_steps.json").read_text())
    assert state["total"] == sum(i * i for i in range(steps))
    assert state["done_by"] == [1] * k + [2] * (steps - k)
    # The attempts apart: attempt 1's head record and the logs copied out of its killed head;
    # the run's files at the top are attempt 2's, which ended with the driver's 0.
    kept = run_dir / "attempts" / "1"
    assert json.loads((kept / "head.json").read_text())["node"] == "head"
    assert "raylet.out" in archived(kept, "head")
    assert "attempt 1 ended: the head was lost" in (kept / "restarting").read_text()
    assert (run_dir / "exit_code").read_text().strip() == "0"
    assert not (run_dir / "restarting").exists()
    assert "attempt 1 of 2: " in (run_dir / "timeline.svg").read_text()
    summary = output.strip().splitlines()[-1]
    assert re.match(rf"rayhpc: run {run_dir.name}: 2/2 nodes, .*exit code 0$", summary), summary
    assert leftovers(docker_api, run_dir.name) == []


def test_an_interactive_cluster_comes_back_and_a_submit_waits_for_it(docker_api, built_image,
                                                                     shared_dir):
    """An interactive cluster whose head is lost starts again: connect.txt is written anew by
    the new head, a `rayhpc submit` sent meanwhile waits for it (saying so) and runs on the
    new cluster, its Serve application is deployed again and answers at the same URL
    (docs/serving.md), and `rayhpc down` ends the run with nothing left."""
    image, _ = built_image
    run = Background(image, shared_dir, "--nodes", "2", "--restarts", "1", "--interactive",
                     "--serve", "examples.serve_echo:app")
    run.wait_for_line(re.compile(r"rayhpc: cluster up; "))
    run_dir = run.run_dir
    endpoint = re.search(r"^export RAYHPC_ENDPOINT=(\S+)$",
                         (run_dir / "connect.txt").read_text(), re.M).group(1)
    assert echo(endpoint, "first") == "first"
    docker_api.kill(f"rayhpc-{run_dir.name}-head")
    deadline = time.monotonic() + 60
    while not (run_dir / "attempts" / "2").is_dir():
        assert time.monotonic() < deadline, run.output[-3000:]
        time.sleep(0.2)
    flags = ("--run", run_dir.name, "--shared", str(shared_dir))
    job = invoke("submit", *flags, "--", "python", "-c",
                 "import ray; ray.init(); print('alive', sum(n['Alive'] for n in ray.nodes()))",
                 timeout=300)
    assert job.returncode == 0, job.stdout + job.stderr
    assert f"run {run_dir.name} is starting again (attempt 2 of 2): waiting for its cluster" \
        in job.stdout + job.stderr
    assert "alive 2" in job.stdout
    run.wait_for_line(re.compile(r"rayhpc: cluster up; "))  # said again, for attempt 2
    assert f"export RAYHPC_ENDPOINT={endpoint}\n" in (run_dir / "connect.txt").read_text()
    assert echo(endpoint, "again") == "again"
    assert (run_dir / "attempts" / "1" / "connect.txt").is_file()
    assert (run_dir / "connect.txt").stat().st_mtime > \
        (run_dir / "attempts" / "1" / "connect.txt").stat().st_mtime
    down = invoke("down", *flags, timeout=300)
    assert down.returncode == 0 and "exit code 143" in down.stdout, down.stdout + down.stderr
    output = run.finish()
    assert run.proc.returncode == 143, output[-3000:]
    assert leftovers(docker_api, run_dir.name) == []


def test_restart_on_failure_starts_a_failed_driver_again(built_image, shared_dir):
    """--restart-on-failure: a driver that exits 3 in its first attempt runs again (with
    RAYHPC_ATTEMPT=2 and RAYHPC_RESUME=1) and its exit code then is the run's."""
    image, _ = built_image
    driver = ("python -c \"import os, sys; print('attempt', os.environ['RAYHPC_ATTEMPT'], "
              "os.environ.get('RAYHPC_RESUME')); sys.exit(0 if os.environ['RAYHPC_ATTEMPT'] == "
              "'2' else 3)\"")
    result, run_dir = launch(image, shared_dir, "--nodes", "1", "--restarts", "1",
                             "--restart-on-failure", "--driver", driver)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "attempt 1 None" in result.stdout and "attempt 2 1" in result.stdout
    assert "rayhpc: attempt 1 ended: the driver exited with 3; attempt 2 of 2 follows" \
        in result.stdout
    assert (run_dir / "attempts" / "1" / "exit_code").read_text().strip() == "3"
    assert (run_dir / "exit_code").read_text().strip() == "0"
