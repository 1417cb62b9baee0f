"""The arm64 stand-in base built for real on an x86_64 engine, under emulation (qemu-user
registered with binfmt_misc, Debian bookworm's qemu-user-static and binfmt-support): its image
says Architecture arm64 and runs `import ray` (under emulation). The unit side of platforms is
tests/test_platforms_unit.py.

CI only: it runs with RAYHPC_TEST_EMULATION=1 (.ci/run sets it), as root on a machine whose
kernel takes binfmt_misc registrations (a VM, not an unprivileged container); elsewhere it
skips, saying so. It installs the two packages and registers the handlers itself when they
are missing. Everything in it runs emulated but the downloads: debootstrap's second stage, apt
and pip in the stand-in's Dockerfile (minutes, not seconds: set aside ~15 minutes on a 2-core
machine)."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path

import docker.errors
import pytest

from rayhpc.containers.emulation import BINFMT_DIR, EMULATION_PACKAGES, emulation_problem
from tests.cli import invoke

pytestmark = [pytest.mark.docker, pytest.mark.emulation]

ARM64 = "linux/arm64"
STANDIN = "rayhpc/ray-standin:2.60.0-py311-cpu-aarch64"
DEBIAN = "rayhpc/debian:bookworm-aarch64"


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=900)


def mount_binfmt_misc() -> None:
    """binfmt_misc's file system at its place, where the kernel has it (a failure is said by
    the caller's check)."""
    for argv in (("modprobe", "binfmt_misc"),
                 ("mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR))):
        if (BINFMT_DIR / "register").exists():
            return
        with contextlib.suppress(OSError):  # no modprobe: the module may be built in
            run(*argv)


def register_emulation() -> None:
    """qemu-user for aarch64, registered with binfmt_misc (its handlers carry the F flag, so
    they serve containers too): installed with apt and enabled where missing."""
    if not emulation_problem(ARM64):
        return
    if os.geteuid() != 0:
        pytest.fail(f"emulation: {emulation_problem(ARM64)} (and not root to install it)")
    # No systemd here to mount binfmt_misc: mount it first, so that the packages' own
    # scripts (update-binfmts --import) register the handler as they install it.
    mount_binfmt_misc()
    apt = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"],
                 ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                  *EMULATION_PACKAGES]):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=apt)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    mount_binfmt_misc()
    assert (BINFMT_DIR / "register").exists(), f"binfmt_misc is not mounted at {BINFMT_DIR}"
    enabled = run("update-binfmts", "--enable", "qemu-aarch64")
    problem = emulation_problem(ARM64)
    assert not problem, f"{problem}\nupdate-binfmts: {enabled.stdout}{enabled.stderr}"


@pytest.fixture(scope="module")
def arm64_standin(request):
    # Decided before the engine is even asked for: elsewhere this skips without touching it.
    if os.environ.get("RAYHPC_TEST_EMULATION") != "1":
        pytest.skip("the arm64 build under emulation runs in CI only (RAYHPC_TEST_EMULATION=1, "
                    "root, ~15 minutes)")
    if platform.machine() != "x86_64":
        pytest.skip(f"an x86_64 host emulates arm64 here; this one is {platform.machine()}")
    docker_api = request.getfixturevalue("docker_api")
    register_emulation()
    result = invoke("base", "--platform", ARM64, timeout=2400)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert result.stdout.strip().splitlines()[-1] == STANDIN
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
