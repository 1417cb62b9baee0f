"""Real local launches: containers on a real engine, a real Ray cluster, real drivers."""

from __future__ import annotations

import json
import re

import pytest

from rayhpc.launcher.backends.local.compose import RUN_LABEL
from rayhpc.launcher.backends.local.manage import remove_run
from tests.cli import invoke
from tests.launching import assert_clean_run, launch, leftovers

pytestmark = pytest.mark.docker


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
        remove_run(run_id)  # idempotent: whatever the test left
