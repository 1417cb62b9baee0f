"""NCCL's and Gloo's interface in a real local launch's containers (issue 21, item 4)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.cli import invoke_argv
from tests.launching import assert_clean_run, run_dir_of
from tests.test_faults import with_driver

pytestmark = pytest.mark.docker


def fabric_launch(image: str, shared: Path, site_text: str) -> tuple:
    site = shared / "fabric-site.yaml"
    site.write_text(site_text)
    driver = with_driver(shared, "fabric_on_nodes.py")
    result = subprocess.run(invoke_argv("launch", "--site", str(site), "--image", image,
                                        "--shared", str(shared), "--nodes", "2",
                                        "--driver", driver),
                            capture_output=True, text=True, timeout=600)
    match = re.search(r"fabric on 2 nodes: (\S+), (\S+)\n", result.stdout)
    return result, run_dir_of(result.stdout, shared), match


def test_the_users_own_fabric_values_reach_every_container(docker_api, built_image,
                                                           shared_dir):
    image, _ = built_image
    result, run_dir, match = fabric_launch(
        image, shared_dir, "scheduler: local\nruntime: docker\nenvironment:\n"
        "  NCCL_SOCKET_IFNAME: lo\n  GLOO_SOCKET_IFNAME: lo\n")
    assert_clean_run(docker_api, result, run_dir, nodes=2)
    assert match, result.stdout[-2000:]
    for node in match.groups():
        nccl, gloo, route = node.split("/")
        assert (nccl, gloo) == ("lo", "lo") and route  # the user's value, not the route's


def test_every_container_uses_the_interface_that_reaches_the_head(docker_api, built_image,
                                                                  shared_dir):
    image, _ = built_image
    result, run_dir, match = fabric_launch(image, shared_dir,
                                           "scheduler: local\nruntime: docker\n")
    assert_clean_run(docker_api, result, run_dir, nodes=2)
    assert match, result.stdout[-2000:]
    for node in match.groups():
        nccl, gloo, route = node.split("/")
        assert nccl == gloo == route != "", node
