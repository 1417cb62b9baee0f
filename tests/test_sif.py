"""SIF conversion and def files, proven with real Apptainer in the converter container: the SIF
runs Ray as a non-root user, carries the image's labels, is not rebuilt when nothing changed,
and bad input leaves no partial SIF."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from rayhpc.containers.apptainer_def import render_def
from rayhpc.containers.recipe import load_recipe
from rayhpc.containers.sif import record_path
from rayhpc.launcher.runtimes import ExecRequest, runtime
from tests import PROJECT_ROOT
from tests.cli import invoke
from tests.image_scan import save_image, tar_bytes

pytestmark = pytest.mark.docker

# What ENVIRONMENT-like hosts need for unprivileged Apptainer in a container (user namespaces).
UNCONFINED = ["--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
              "--security-opt", "systempaths=unconfined"]
SMALL_IMAGE = "rayhpc-test/small:1"
# Apptainer mounts a SIF with squashfuse when /dev/fuse is usable by the (non-root) user, as on
# most hosts (mode 666); elsewhere it must unpack it (--unsquash, slower).
FUSE = os.path.exists("/dev/fuse") and os.stat("/dev/fuse").st_mode & 0o006 == 0o006
APPTAINER = runtime("apptainer", [] if FUSE else ["--unsquash"])


def apptainer(converter: str, mounts: dict[Path, str], *command: str,
              timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command in the converter image as uid 1000 (non-root), without privileges."""
    volumes = [arg for host, spec in mounts.items() for arg in ("-v", f"{host}:{spec}")]
    fuse = ["--device", "/dev/fuse"] if FUSE else []
    return subprocess.run(["docker", "run", "--rm", "--user", "1000", "--shm-size", "1g",
                           *UNCONFINED, *fuse, *volumes, converter, *command],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def out_dir():
    """A directory uid 1000 (the converter's user) can read, as a shared file system would be."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="rayhpc-sif-test-"))
    path.chmod(0o755)
    yield path
    subprocess.run(["chattr", "-R", "-i", str(path)], capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def def_workspace(docker_api, converter, out_dir) -> Path:
    """out_dir with base.tar: the converter's own (Debian) base, to bootstrap def files from."""
    base = docker_api.inspect_image(converter)["Config"]["Labels"][
        "org.opencontainers.image.base.name"]
    save_image(docker_api, base, out_dir / "base.tar").chmod(0o644)
    return out_dir


def write_mini_def(workspace: Path, name: str, **changes) -> str:
    """Render the mini test recipe (with changes) as /in/<name>.def from /in/base.tar."""
    recipe = load_recipe(str(PROJECT_ROOT / "tests/recipes/mini.yaml"))
    recipe = type(recipe)(**{**recipe.__dict__, **changes})
    (workspace / f"{name}.def").write_text(render_def(recipe, "default", base="/in/base.tar",
                                                      bootstrap="docker-archive"))
    return f"/in/{name}.def"


def small_image(docker_api, marker: str) -> str:
    """A one-file image (quick to convert), tagged SMALL_IMAGE; a new marker is a new image."""
    docker_api.import_image_from_data(tar_bytes({"hello.txt": marker.encode()}),
                                      repository=SMALL_IMAGE.split(":")[0],
                                      tag=SMALL_IMAGE.split(":")[1])
    return docker_api.inspect_image(SMALL_IMAGE)["Id"]


def test_sif_runs_ray_as_non_root(converted, converter):
    _, sif, result = converted
    assert result.stdout.strip().splitlines()[-1] == str(sif) and sif.is_file()
    version = APPTAINER.exec_command(ExecRequest(f"/sif/{sif.name}", ["ray", "--version"],
                                           home="/tmp"))
    done = apptainer(converter, {sif.parent: "/sif:ro"}, *version)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ray, version 2.60.0" in done.stdout
    task = textwrap.dedent("""
        import os, ray
        ray.init(num_cpus=1, include_dashboard=False)
        print("uid", os.getuid(), "answer", ray.get(ray.remote(lambda: 6 * 7).remote()))
    """)
    run = APPTAINER.exec_command(ExecRequest(f"/sif/{sif.name}", ["python", "-c", task],
                                       home="/tmp"))
    done = apptainer(converter, {sif.parent: "/sif:ro"}, *run)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "uid 1000 answer 42" in done.stdout


def test_sif_carries_the_image_labels(converted, converter):
    _, sif, _ = converted
    done = apptainer(converter, {sif.parent: "/sif:ro"}, "apptainer", "inspect", "--json",
                     f"/sif/{sif.name}")
    assert done.returncode == 0, done.stderr
    labels = json.loads(done.stdout)["data"]["attributes"]["labels"]
    assert labels["org.rayhpc.ray-version"] == "2.60.0"
    assert labels["org.rayhpc.recipe"] == "ray"
    assert labels["org.rayhpc.variant"] == "cpu"


def test_unchanged_image_is_not_converted_again(converted, docker_api):
    image, sif, _ = converted
    before = sif.stat()
    again = invoke("convert", "--image", image, "--out", str(sif))
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == str(sif)
    after = sif.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    record = json.loads(record_path(sif).read_text())
    assert record["image_id"] == docker_api.inspect_image(image)["Id"]


def test_changed_image_is_converted_again(docker_api, converter, out_dir):
    first_id = small_image(docker_api, "one")
    first = invoke("convert", "--image", SMALL_IMAGE, "--out", str(out_dir))
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    sif = Path(first.stdout.strip().splitlines()[-1])
    assert json.loads(record_path(sif).read_text())["image_id"] == first_id
    mtime = sif.stat().st_mtime_ns
    second_id = small_image(docker_api, "two")
    assert second_id != first_id
    second = invoke("convert", "--image", SMALL_IMAGE, "--out", str(out_dir))
    assert second.returncode == 0
    assert sif.stat().st_mtime_ns != mtime
    assert json.loads(record_path(sif).read_text())["image_id"] == second_id
    assert sorted(p.name for p in out_dir.iterdir()) == [sif.name, record_path(sif).name]


def test_host_apptainer_is_used_through_spython(docker_api, out_dir, tmp_path):
    """No Apptainer can be installed on this host, so a stand-in executable named apptainer
    records its command line; what spython runs must be exactly the build we expect."""
    small_image(docker_api, "host")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.jsonl"
    fake = bin_dir / "apptainer"
    fake.write_text(textwrap.dedent(f"""\
        #!/usr/bin/env python3
        import json, os, sys
        with open({str(calls)!r}, "a") as log:
            log.write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "\\n")
        if sys.argv[1:2] == ["--version"]:
            print("apptainer version 1.4.5")
        elif sys.argv[1:2] == ["build"]:
            open(sys.argv[-2], "w").write("SIF from " + sys.argv[-1])
        """))
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = invoke("convert", "--image", SMALL_IMAGE, "--out", str(out_dir), env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    sif = Path(result.stdout.strip().splitlines()[-1])
    build = [json.loads(line) for line in calls.read_text().splitlines()][-1]
    work = Path(build[3]).parent
    assert work.parent == out_dir and work.name.startswith(".rayhpc-sif-")
    assert build == ["apptainer", "build", "--force", f"{work}/image.sif",
                     f"docker-archive://{work}/image.tar"]
    assert sif.read_text() == f"SIF from docker-archive://{work}/image.tar"
    assert not work.exists()


@pytest.mark.parametrize("case", ["missing tag", "unwritable out", "no docker, no apptainer"])
def test_bad_input_gives_one_message_and_no_partial_sif(docker_api, out_dir, case):
    env, image = {}, SMALL_IMAGE
    if case == "missing tag":
        image = "rayhpc-test/never-built:0"
        expected = f"error: --image: {image} is not on this Docker engine; build it with " \
                   "`rayhpc build` (see `docker images`)"
    elif case == "unwritable out":
        small_image(docker_api, "unwritable")
        subprocess.run(["chattr", "+i", str(out_dir)], check=True)
        expected = f"error: --out: {out_dir} is not writable; choose another place for the SIF"
    else:
        env = {"DOCKER_HOST": "unix:///nonexistent/docker.sock", "PATH": "/usr/bin:/bin"}
        expected = f"error: cannot convert {image}: no Docker engine is reachable and neither " \
                   "apptainer nor singularity is installed; start Docker, or install Apptainer"
    result = invoke("convert", "--image", image, "--out", str(out_dir), env=env)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(expected), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    subprocess.run(["chattr", "-i", str(out_dir)], capture_output=True)
    assert list(out_dir.iterdir()) == []


def test_def_file_builds_and_runs_with_apptainer(converter, def_workspace):
    """A rendered def file (the same renderer as for the Ray recipes) is built by Apptainer
    itself, unprivileged (--fakeroot without subuid maps), from the converter's own base."""
    def_file = write_mini_def(def_workspace, "mini")
    run = " ".join(APPTAINER.exec_command(ExecRequest("mini.sif", [], home="/tmp")))
    script = (f"cd /tmp && apptainer build --fakeroot --ignore-subuid mini.sif {def_file}"
              f" && {run} sh -c "
              "'command -v ps; id -u mini; echo \"$MINI_GREETING\"'"
              " && apptainer inspect --json mini.sif")
    done = apptainer(converter, {def_workspace: "/in:ro"}, "sh", "-c", script)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "/usr/bin/ps\n1000\nhello from %environment\n" in done.stdout
    labels = json.loads(done.stdout[done.stdout.index("{"):])["data"]["attributes"]["labels"]
    assert labels["org.rayhpc.test"] == "mini def file"
    assert labels["org.rayhpc.recipe"] == "mini"


def test_def_file_build_fails_when_a_package_step_fails(converter, def_workspace):
    """A failing `apt-get ... && ...` chain in %post must fail the Apptainer build, as the RUN
    step fails the Docker build (spython's plain conversion lets it pass)."""
    def_file = write_mini_def(def_workspace, "broken", apt=("rayhpc-no-such-package",))
    done = apptainer(converter, {def_workspace: "/in:ro"}, "sh", "-c",
                     f"cd /tmp && apptainer build --fakeroot --ignore-subuid b.sif {def_file}")
    assert done.returncode != 0
    assert "Unable to locate package rayhpc-no-such-package" in done.stdout + done.stderr
