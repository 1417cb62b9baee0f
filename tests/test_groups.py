"""Node groups on the real engine: a head of one image, workers of another, work placed by the
workers' resource and label; images whose Ray or Python differ are refused before any start."""

from __future__ import annotations

import io
import json
import re

import pytest
import yaml

from rayhpc.launcher.backends.local.compose import RUN_LABEL
from rayhpc.launcher.resolve.groups import image_label
from tests.launching import assert_clean_run, launch

pytestmark = pytest.mark.docker
WORKER_IMAGE = "rayhpc-test/ray-worker:groups"
SKEWED_IMAGE = "rayhpc-test/ray-skewed:groups"


def derived_image(api, base: str, tag: str, *lines: str) -> str:
    """An image of its own (another id, another tag) made from ``base`` with a few lines."""
    dockerfile = "\n".join([f"FROM {base}", *lines]) + "\n"
    for _ in api.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True,
                       decode=True):
        pass
    assert api.inspect_image(tag)["Id"] != api.inspect_image(base)["Id"]
    return tag


def test_head_and_workers_of_different_images_place_work_by_group(docker_api, built_image,
                                                                  shared_dir):
    image, _ = built_image
    worker_image = derived_image(docker_api, image, WORKER_IMAGE,
                                 "LABEL org.rayhpc.test-role=worker")
    result, run_dir = launch(
        image, shared_dir, "--group", f"head:1:{image}",
        "--group", f"worker:2:{worker_image},resources.trainer=1,labels.tier=cpu",
        "--driver", "python examples/hello_groups.py --ray-address={address} "
                    "--resource trainer")
    groups = r"head: 1 node, [\d.]+ CPUs, 0 GPUs; worker: 2 nodes, [\d.]+ CPUs, 0 GPUs"
    assert_clean_run(docker_api, result, run_dir, nodes=3, groups=groups)
    out = result.stdout
    # Each node runs its group's image, and Ray sees it: the image label of each node.
    compose = yaml.safe_load((run_dir / "compose.yaml").read_text())["services"]
    assert [compose[n]["image"] for n in ("head", "worker-1", "worker-2")] == \
        [image, worker_image, worker_image]
    assert f"group head node head: image {image_label(image)}, " in out
    for node in ("worker-1", "worker-2"):
        assert f"group worker node {node}: image {image_label(worker_image)}, " in out
    # Placed by the workers' resource, and by each group's label.
    assert re.search(r"^trainer task ran on worker-[12]$", out, re.M), out[-2000:]
    assert "group head task ran on head" in out
    assert re.search(r"^group worker task ran on worker-[12]$", out, re.M)
    # What each group brought, on the console at the join, per node in status.json.
    assert re.search(rf"rayhpc: group head: 1 node of {re.escape(image)}: [\d.]+ CPUs, 0 GPUs, "
                     r"[\d.]+ GiB memory, [\d.]+ [GM]iB object store\n", out), out[-3000:]
    assert re.search(rf"rayhpc: group worker: 2 nodes of {re.escape(worker_image)}: [\d.]+ "
                     r"CPUs, 0 GPUs, .* object store, trainer 2\n", out)
    status = json.loads((run_dir / "status.json").read_text())
    for node, group in (("head", "head"), ("worker-1", "worker"), ("worker-2", "worker")):
        record = status["nodes"][node]
        assert record["group"] == group
        assert record["resources"]["cpus"] > 0 and record["resources"]["memory"] > 0
        assert record["resources"]["object_store"] > 0
        assert record["resources"]["custom"] == ({"trainer": 1} if group == "worker" else {})
    timing = json.loads((run_dir / "timing.json").read_text())
    assert {name: total["nodes"] for name, total in timing["groups"].items()} == \
        {"head": 1, "worker": 2}


def test_images_with_another_python_are_refused_before_any_start(docker_api, built_image,
                                                                 shared_dir):
    image, _ = built_image
    # What the launcher's probe reads: a `python` first on PATH that says other versions.
    skewed = derived_image(
        docker_api, image, SKEWED_IMAGE,
        "RUN mkdir -p /tmp/shim && printf '#!/bin/sh\\necho python 3.10.4\\necho ray "
        "2.60.0\\n' > /tmp/shim/python && chmod +x /tmp/shim/python",
        "ENV PATH=/tmp/shim:$PATH")
    before = docker_api.containers(all=True, filters={"label": RUN_LABEL})
    result, run_dir = launch(image, shared_dir, "--group", f"head:1:{image}",
                             "--group", f"worker:1:{skewed}", "--driver",
                             "python examples/hello_nodes.py")
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stderr.strip() == (
        f"error: groups: Python 3.11 in {image} but Python 3.10 in {skewed}: every group's "
        "image needs the same Python version (Ray refuses nodes of another version); rebuild "
        "one of them")
    assert run_dir is None and not (shared_dir / "runs").exists()
    assert docker_api.containers(all=True, filters={"label": RUN_LABEL}) == before
