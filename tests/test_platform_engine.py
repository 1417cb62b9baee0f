"""The arm64 stand-in base built for real on an x86_64 engine, under emulation (qemu-user
registered with binfmt_misc, Debian bookworm's qemu-user-static and binfmt-support): its image
says Architecture arm64 and runs `import ray` (under emulation). The unit side of platforms is
tests/test_platforms_unit.py.

CI only: it runs with RAYHPC_TEST_EMULATION=1 (.ci/run sets it), as root on a machine whose
kernel takes binfmt_misc registrations (a VM, not an unprivileged container); elsewhere it
skips, saying so. The build itself (tests/emulated_build.py: it installs qemu-user-static and
binfmt-support and registers the handler where missing) starts in the background as the test
session starts: debootstrap's second stage, apt and pip run emulated (about 5 minutes of one
core, 2026-12-07), beside the rest of the suite."""

from __future__ import annotations

import contextlib
from pathlib import Path

import docker.errors
import pytest

from rayhpc.containers.emulation import BINFMT_DIR
from tests import emulated_build

pytestmark = [pytest.mark.docker, pytest.mark.emulation]

ARM64 = emulated_build.ARM64
STANDIN = "rayhpc/ray-standin:2.60.0-py311-cpu-aarch64"
DEBIAN = "rayhpc/debian:bookworm-aarch64"


@pytest.fixture(scope="module")
def arm64_standin(request, arm64_standin_build):
    """The stand-in the session's background build made (tests/emulated_build.py)."""
    if arm64_standin_build is None:
        pytest.skip(emulated_build.wanted())
    docker_api = request.getfixturevalue("docker_api")
    code, output = arm64_standin_build.wait()
    assert code == 0, output[-4000:]
    assert output.strip().splitlines()[-1] == STANDIN
    yield STANDIN
    # The arm64 images are this test's alone: give their disk back.
    for image in (STANDIN, DEBIAN):
        with contextlib.suppress(docker.errors.APIError):
            docker_api.remove_image(image)


def test_the_arm64_standin_is_an_arm64_image_with_its_label(arm64_standin, docker_api):
    for image in (arm64_standin, DEBIAN):
        info = docker_api.inspect_image(image)
        assert (info["Os"], info["Architecture"]) == ("linux", "arm64"), image
    labels = docker_api.inspect_image(arm64_standin)["Config"]["Labels"]
    assert labels["org.rayhpc.platform"] == ARM64
    assert labels["org.rayhpc.standin"] == "true"


def test_ray_imports_in_the_arm64_standin_under_emulation(arm64_standin, docker_api):
    container = docker_api.create_container(
        arm64_standin, command=["python", "-c", "import platform, ray; "
                                "print(platform.machine(), ray.__version__)"])
    try:
        docker_api.start(container)
        code = docker_api.wait(container, timeout=600)["StatusCode"]
        output = docker_api.logs(container).decode(errors="replace")
    finally:
        docker_api.remove_container(container, force=True)
    assert code == 0, output[-3000:]
    assert output.strip().splitlines()[-1] == "aarch64 2.60.0"


def test_the_engine_says_the_host_is_x86_64_so_this_ran_emulated(arm64_standin, docker_api):
    assert docker_api.info()["Architecture"] == "x86_64"
    assert Path(BINFMT_DIR / "qemu-aarch64").read_text().startswith("enabled")
