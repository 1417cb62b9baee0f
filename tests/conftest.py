"""Shared fixtures: a real Docker engine (skip visibly, or fail under REQUIRE_DOCKER=1), the
stand-in base and a test build of the cpu image, a SIF of it, a shared directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.cli import invoke

TEST_IMAGE = "rayhpc-test/ray:2.60.0-py311-cpu"


@pytest.fixture(scope="session", autouse=True)
def arm64_standin_build():
    """The arm64 stand-in's build under emulation (tests/emulated_build.py), started as the
    session starts when this session runs it (CI), so that it overlaps the other tests; None
    elsewhere. tests/test_platform_engine.py waits for it."""
    from tests import emulated_build

    if emulated_build.wanted():
        yield None
        return
    build = emulated_build.start()
    yield build
    if build.process is not None and build.process.poll() is None:
        build.process.kill()  # the session ended before its test: nothing left behind
        build.process.wait()
    if build.log:
        Path(build.log).unlink(missing_ok=True)


@pytest.fixture
def shared_dir():
    """A shared directory the containers' user (uid 1000) can enter, as on a cluster file
    system (pytest's own tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="rayhpc-test-"))
    path.chmod(0o755)
    if os.geteuid() == 0:
        os.chown(path, 1000, 100)  # the containers' user writes its results there
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def docker_api():
    import docker

    try:
        api = docker.APIClient(base_url=os.environ.get("DOCKER_HOST") or None, timeout=600)
        api.ping()
    except Exception as exc:  # any failure to reach the engine
        reason = f"no Docker engine reachable ({type(exc).__name__}): real-engine tests skipped"
        if os.environ.get("REQUIRE_DOCKER") == "1":
            pytest.fail(f"REQUIRE_DOCKER=1 but {reason}")
        pytest.skip(reason)
    return api


@pytest.fixture(scope="session")
def standin_base(docker_api) -> str:
    """The base the test build starts from: $RAYHPC_TEST_BASE (e.g. the real rayproject/ray
    where a registry is reachable), else the stand-in (built here when missing)."""
    if os.environ.get("RAYHPC_TEST_BASE"):
        return os.environ["RAYHPC_TEST_BASE"]
    from rayhpc.containers.engine import image_exists
    from rayhpc.containers.images import build_standin_base
    from rayhpc.containers.recipe import load_recipe
    from rayhpc.containers.standin import standin_tag

    tag = standin_tag(load_recipe("ray"))
    if not image_exists(docker_api, tag):
        build_standin_base()
    return tag


@pytest.fixture(scope="session")
def marker_ca_bundle(tmp_path_factory) -> tuple[Path, str]:
    """The host's CA bundle plus a freshly made certificate that no image can hold yet.

    Returns the bundle path and a line of the marker certificate to search images for.
    """
    out = tmp_path_factory.mktemp("ca")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=rayhpc-test-marker", "-keyout", str(out / "marker.key"),
                    "-out", str(out / "marker.pem")], check=True, capture_output=True)
    marker_pem = (out / "marker.pem").read_text()
    host_bundle = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"
    bundle = out / "bundle.pem"
    host = Path(host_bundle).read_text() if Path(host_bundle).exists() else ""
    bundle.write_text(host + marker_pem)
    marker_line = marker_pem.splitlines()[5]  # a base64 line from the middle of the body
    return bundle, marker_line


@pytest.fixture(scope="session")
def built_image(standin_base, marker_ca_bundle) -> tuple[str, subprocess.CompletedProcess]:
    """`rayhpc build` of the cpu variant on the stand-in, with the marker CA bundle."""
    bundle, _ = marker_ca_bundle
    result = invoke("build", "--variant", "cpu", "--base", standin_base, "--tag", TEST_IMAGE,
                    "--ca-bundle", str(bundle))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return TEST_IMAGE, result


@pytest.fixture(scope="session")
def converter(docker_api) -> str:
    from rayhpc.containers.images import ensure_recipe_image
    from rayhpc.containers.sif import CONVERTER_RECIPE, CONVERTER_VARIANT

    return ensure_recipe_image(CONVERTER_RECIPE, CONVERTER_VARIANT)


@pytest.fixture(scope="session")
def converted(built_image, converter, tmp_path_factory):
    image, _ = built_image
    out = Path(tmp_path_factory.mktemp("sif"))
    out.chmod(0o755)  # mounted into containers whose user is uid 1000
    result = invoke("convert", "--image", image, "--out", str(out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    sif = Path(result.stdout.strip().splitlines()[-1])
    return image, sif, result


@pytest.fixture(scope="module")
def testbed(docker_api, converted):
    """The Slurm test bed (tests/testbed/), one per test module, with the run image's SIF in
    its shared directory (ray.sif)."""
    from rayhpc.containers.images import ensure_recipe_image
    from tests import PROJECT_ROOT
    from tests.testbed.harness import RECIPE, SlurmTestbed

    image = ensure_recipe_image(RECIPE, "default")
    shared = Path(tempfile.mkdtemp(prefix="rayhpc-testbed-shared-"))
    shared.chmod(0o777)  # the cluster's users (ray, uid 1000) write here
    _, sif, _ = converted
    shutil.copyfile(sif, shared / "ray.sif")
    (shared / "ray.sif").chmod(0o644)
    with SlurmTestbed(docker_api, image, shared, PROJECT_ROOT).running() as bed:
        yield bed
