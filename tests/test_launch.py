"""Real local launches: containers on a real engine, a real Ray cluster, real drivers."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from launcher.compose import RUN_LABEL
from launcher.manage import remove_run
from tests.conftest import PROJECT_ROOT, invoke

pytestmark = pytest.mark.docker

TIMING_FIELDS = ("t_submit", "t_head_up", "t_all_joined", "t_driver_start", "t_driver_end",
                 "t_teardown_done")


def launch(image: str, shared: Path, *args: str) -> tuple:
    result = invoke("launch", "--site", "local", "--image", image, "--shared", str(shared),
                    *args, timeout=600)
    match = re.search(r"rayhpc: run (\S+): ", result.stdout)
    run_dir = shared / "runs" / match.group(1) if match else None
    return result, run_dir


def leftovers(api, run_id: str) -> list[str]:
    """Containers, networks and volumes of the run still on the engine."""
    project = f"rayhpc-{run_id}"
    found = [c["Names"][0] for c in api.containers(all=True, filters={"label": RUN_LABEL})
             if c["Labels"][RUN_LABEL] == run_id]
    found += [c["Names"][0] for c in api.containers(
        all=True, filters={"label": f"com.docker.compose.project={project}"})]
    found += [n["Name"] for n in api.networks() if n["Name"].startswith(project)]
    found += [v["Name"] for v in api.volumes(
        filters={"label": f"com.docker.compose.project={project}"}).get("Volumes") or []]
    return found


def assert_clean_run(api, result, run_dir: Path, nodes: int, code: int = 0) -> dict:
    """What every finished run must leave: exit code, timing, harvested logs, nothing running."""
    assert run_dir is not None, result.stdout + result.stderr
    assert result.returncode == code, result.stdout[-3000:] + result.stderr[-3000:]
    assert (run_dir / "exit_code").read_text().strip() == str(code)
    timing = json.loads((run_dir / "timing.json").read_text())
    times = [timing[name] for name in TIMING_FIELDS]
    assert all(isinstance(t, float) for t in times), timing
    assert times == sorted(times), f"timing out of order: {timing}"
    assert timing["nodes_expected"] == timing["nodes_joined"] == nodes
    names = ["head"] + [f"worker-{i}" for i in range(1, nodes)]
    for node in names:
        assert (run_dir / "logs" / node / "raylet.out").is_file(), f"no raylet log of {node}"
    assert (run_dir / "logs" / "head" / "gcs_server.out").is_file()
    head = json.loads((run_dir / "head.json").read_text())
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+:\d+", head["address"])
    assert oct((run_dir / "auth_token").stat().st_mode & 0o777) == "0o600"
    assert leftovers(api, run_dir.name) == []
    summary = result.stdout.strip().splitlines()[-1]
    assert re.match(rf"rayhpc: run {run_dir.name}: {nodes}/{nodes} nodes, bring-up [\d.]+ s, "
                    rf"driver [\d.]+ s, teardown [\d.]+ s, exit code {code}$", summary), summary
    return timing


@pytest.mark.parametrize("example, expected", [
    ("hello_nodes.py", r"hello from 3 nodes: head, worker-1, worker-2"),
    ("object_store.py",
     r"object store: 100 MB array read on 3 nodes \(head, worker-1, worker-2\); "
     r"sums correct: True; zero-copy read-only views: True"),
    ("actors.py", r"actors: 3 actors on 3 nodes \(head, worker-1, worker-2\) answered 10 rounds "
                  r"of ping with pong; pings per actor: \[10\]"),
])
def test_examples_on_three_nodes(docker_api, built_image, shared_dir, example, expected):
    image, _ = built_image
    result, run_dir = launch(image, shared_dir, "--nodes", "3", "--driver",
                             f"python examples/{example} --ray-address={{address}}")
    assert_clean_run(docker_api, result, run_dir, nodes=3)
    assert re.search(expected, result.stdout), result.stdout[-2000:]
    assert re.search(expected, (run_dir / "driver.log").read_text())
    progress = re.findall(r"rayhpc: (\d)/3 nodes joined", result.stdout)
    assert progress and progress[-1] == "3" and progress == sorted(progress)


def test_driver_exit_code_is_the_launch_exit_code(docker_api, built_image, shared_dir):
    image, _ = built_image
    driver = "python -c 'import os, sys; print(\"address\", os.environ[\"RAY_ADDRESS\"]); " \
             "sys.exit(3)'"
    result, run_dir = launch(image, shared_dir, "--nodes", "2", "--driver", driver)
    assert_clean_run(docker_api, result, run_dir, nodes=2, code=3)
    head = json.loads((run_dir / "head.json").read_text())
    assert f"address {head['address']}" in result.stdout


def test_missing_driver_fails_before_any_container(docker_api, built_image, shared_dir):
    image, _ = built_image
    before = docker_api.containers(all=True, filters={"label": RUN_LABEL})
    result, run_dir = launch(image, shared_dir, "--driver", "python nope.py")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: --driver: nope.py not found in the shared directory {shared_dir} (the driver "
        "runs there, on the head node): put the script there or fix --driver")
    assert run_dir is None and not (shared_dir / "runs").exists()
    assert docker_api.containers(all=True, filters={"label": RUN_LABEL}) == before


def test_missing_image_is_named(docker_api, shared_dir):
    result, _ = launch("rayhpc-test/absent:0", shared_dir)
    assert result.returncode == 2
    assert "--image: rayhpc-test/absent:0 is not on this Docker engine" in result.stderr
    assert not (shared_dir / "runs").exists()


def test_two_launches_at_once_both_succeed(docker_api, built_image, shared_dir):
    image, _ = built_image
    results = {}

    def one(name: str) -> None:
        results[name] = launch(image, shared_dir, "--nodes", "2", "--driver",
                               "python examples/hello_nodes.py --ray-address={address}")

    threads = [threading.Thread(target=one, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run_dirs = {results[n][1] for n in results}
    assert len(run_dirs) == 2
    for result, run_dir in results.values():
        assert_clean_run(docker_api, result, run_dir, nodes=2)
        assert "hello from 2 nodes: head, worker-1" in result.stdout


def test_down_and_status_find_leftovers_by_run(docker_api, built_image):
    """A run whose launcher died leaves containers: status shows them, down removes them."""
    image, _ = built_image
    run_id = "20000101-000000-dead"
    docker_api.create_network(f"rayhpc-{run_id}", labels={RUN_LABEL: run_id})
    container = docker_api.create_container(
        image, command=["sleep", "300"], name=f"rayhpc-{run_id}-head",
        labels={RUN_LABEL: run_id, "org.rayhpc.node": "head"},
        host_config=docker_api.create_host_config(network_mode=f"rayhpc-{run_id}"))
    docker_api.start(container)
    try:
        status = invoke("status")
        assert status.returncode == 0
        assert re.search(rf"^{run_id}  1 node\(s\)  head: running$", status.stdout, re.M)
        down = invoke("down", "--run", run_id)
        assert down.returncode == 0
        assert f"removed run {run_id}: 1 container(s), 1 network(s)" in down.stdout
        assert leftovers(docker_api, run_id) == []
        again = invoke("down", "--run", run_id)
        assert again.returncode == 2 and f"no containers or networks of run '{run_id}'" in \
            again.stderr
    finally:
        remove_run(docker_api, run_id)  # idempotent: whatever the test left


def test_join_timeout_names_the_nodes_that_never_joined(docker_api, built_image, shared_dir):
    """Workers need seconds to join; a 1 s join timeout cannot be met."""
    image, _ = built_image
    result, run_dir = launch(image, shared_dir, "--nodes", "3", "--join-timeout", "1")
    assert result.returncode == 1, result.stdout[-2000:]
    message = re.search(r"rayhpc: error: (.*)", result.stdout).group(1)
    assert re.fullmatch(r"timed out after 1 s waiting for 3 nodes \([12] joined\); never "
                        r"joined: worker-\d \(.+\)", message), message
    assert (run_dir / "error").read_text().strip() == message
    assert (run_dir / "exit_code").read_text().strip() == "1"
    assert not (run_dir / "driver.log").exists()
    assert leftovers(docker_api, run_dir.name) == []


def test_ctrl_c_stops_gracefully_even_a_driver_that_ignores_sigterm(docker_api, built_image,
                                                                    shared_dir):
    image, _ = built_image
    driver = ("python -c 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              "print(\"ready\", flush=True); time.sleep(600)'")
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", "-r", str(PROJECT_ROOT), "launch", "--image", image,
         "--shared", str(shared_dir), "--nodes", "2", "--driver", driver],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.strip() == "ready":
            break
    assert lines and lines[-1].strip() == "ready", "".join(lines)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    took = time.monotonic() - started
    output = "".join(lines) + rest
    assert proc.returncode == 130, output[-3000:]
    run_dir = shared_dir / "runs" / re.search(r"rayhpc: run (\S+):", output).group(1)
    assert (run_dir / "exit_code").read_text().strip() == "130"
    for node in ("head", "worker-1"):
        assert (run_dir / "logs" / node / "raylet.out").is_file()
    assert leftovers(docker_api, run_dir.name) == []
    assert took < 60, f"stopping took {took:.0f} s"
