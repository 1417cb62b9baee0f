"""The node's preflight on the real engine: a small /dev/shm is said once per node and the driver
still runs; a worker whose own Python sees another Ray than the head's is refused by its name,
at once (not at the join timeout), with exit 1 and nothing left on the engine."""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from rayhpc.launcher.backends.local.compose import RUN_LABEL
from tests.cli import invoke_argv
from tests.launching import assert_clean_run, launch, leftovers, run_dir_of
from tests.test_groups import derived_image

pytestmark = pytest.mark.docker

# A Ray of another version on a path the site puts on PYTHONPATH, in the workers' image only: what
# `pip install --target /opt/site-python ray==2.59.0` leaves (its package metadata, which is what
# both the launcher's probe and the node's preflight read). The launcher probes each image as it
# is, without the site's environment: both say Ray 2.60.0.
SITE_PYTHON_IMAGE = "rayhpc-test/ray-site-python:preflight"
SITE_PYTHON = "/opt/site-python"


def test_a_small_shm_is_said_once_per_node_and_the_driver_runs(docker_api, built_image,
                                                               shared_dir):
    image, _ = built_image
    result, run_dir = launch(image, shared_dir, "--nodes", "2", "--shm-size", "96m",
                             "--driver", "python examples/hello_nodes.py")
    assert_clean_run(docker_api, result, run_dir, nodes=2)
    assert "hello from 2 nodes: head, worker-1" in result.stdout, result.stdout[-2000:]
    for node in ("head", "worker-1"):
        log = (run_dir / "logs" / f"{node}.log").read_text()
        shm = [line for line in log.splitlines() if "preflight shm:" in line]
        assert len(shm) == 1, log
        assert shm[0].endswith("preflight shm: ok: /dev/shm 96 MiB: too small for an object "
                               "store of its own; Ray's default (it may fall back to /tmp, "
                               "slow)"), shm


def test_a_worker_seeing_another_ray_is_refused_by_name_at_once(docker_api, built_image,
                                                                shared_dir):
    image, _ = built_image
    skewed = derived_image(
        docker_api, image, SITE_PYTHON_IMAGE, "USER root",
        f"RUN mkdir -p {SITE_PYTHON}/ray-2.59.0.dist-info && printf 'Metadata-Version: "
        f"2.1\\nName: ray\\nVersion: 2.59.0\\n' > {SITE_PYTHON}/ray-2.59.0.dist-info/METADATA",
        "USER ray")
    site = shared_dir / "site-python.yaml"
    site.write_text(f"scheduler: local\nruntime: docker\nenvironment:\n  PYTHONPATH: "
                    f"{SITE_PYTHON}\n")
    started = time.monotonic()
    result = subprocess.run(invoke_argv(
        "launch", "--site", str(site), "--image", image, "--shared", str(shared_dir),
        "--group", f"head:1:{image}", "--group", f"worker:1:{skewed}", "--join-timeout", "600",
        "--driver", "python examples/hello_nodes.py"), capture_output=True, text=True,
        timeout=600)
    took = time.monotonic() - started
    run_dir = run_dir_of(result.stdout, shared_dir)
    assert run_dir is not None, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]
    head_log = (run_dir / "logs" / "head.log").read_text()
    python = re.search(r"preflight versions: ok: Ray 2\.60\.0, Python (\S+) \(the head's\)",
                       head_log).group(1)
    error = (f"preflight on worker-1: versions: Ray 2.59.0, Python {python} here, Ray 2.60.0, "
             f"Python {python} on the head; Ray refuses nodes of another version: run one image "
             "(or images of the same Ray and Python) on every node")
    assert f"rayhpc: error: {error}\n" in result.stdout, result.stdout[-3000:]
    assert (run_dir / "error").read_text().strip() == error
    assert (run_dir / "exit_code").read_text().strip() == "1"
    assert not (run_dir / "driver.log").exists()
    worker_log = (run_dir / "logs" / "worker-1.log").read_text()
    assert re.search(r"preflight versions: FAILED: Ray 2\.59\.0, .* here", worker_log)
    assert took < 300, f"the refusal took {took:.0f} s"  # well before the 600 s join timeout
    assert leftovers(docker_api, run_dir.name) == []
    assert not docker_api.containers(all=True, filters={"label": f"{RUN_LABEL}={run_dir.name}"})
