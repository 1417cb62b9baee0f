"""The distribution as people install it: a wheel built from this checkout, installed into a
fresh virtual environment outside the checkout, its `rayhpc` command run from an empty
directory (one wheel and one environment for the whole module)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests import PROJECT_ROOT
from tests.conftest import TEST_IMAGE

# What the wheel is built from: the project's metadata and its one package (copied, so that
# the build leaves nothing in the checkout).
SOURCES = ("pyproject.toml", "README.md", "rayhpc")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin directory of a fresh venv with the wheel installed in it."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        if (PROJECT_ROOT / name).is_dir():
            shutil.copytree(PROJECT_ROOT / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(PROJECT_ROOT / name, source / name)
    wheels = root / "wheels"
    # No build isolation: the build backend (setuptools) of this environment, no index needed.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(wheels), str(source)],
                   check=True, capture_output=True, text=True, timeout=300)
    wheel = next(wheels.glob("rayhpc-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    "--no-deps", str(wheel)], check=True, capture_output=True, text=True,
                   timeout=300)
    # The dependencies (docker, pyyaml, invoke, spython) come from this environment's
    # site-packages, placed after the venv's own: the venv's rayhpc is the wheel's, and this
    # environment's editable rayhpc (a .pth there, not processed from here) stays out of reach.
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


def run(bin_dir: Path, *args: str, cwd: Path, timeout: float = 120,
        env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("PYTHONPATH", "VIRTUAL_ENV", "RAYHPC_SHARED")}
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**environment, **(env or {})})


@pytest.fixture
def empty_dir(tmp_path) -> Path:
    path = tmp_path / "empty"
    path.mkdir()
    return path


def test_the_wheel_installs_one_package_and_its_data(installed, empty_dir):
    code = ("import importlib.metadata as m, rayhpc\n"
            "files = m.files('rayhpc')\n"
            "print(rayhpc.PACKAGE_DIR)\n"
            "print(sorted(str(f) for f in files if f.parts[0] == 'rayhpc'"
            " and f.suffix != '.pyc'))\n"
            "print(sorted({f.parts[0] for f in files if not f.parts[0].endswith('.dist-info')"
            " and not f.parts[0].startswith('..')}))\n"
            "print((rayhpc.RECIPES_DIR / 'ray.yaml').is_file(),"
            " (rayhpc.EXAMPLES_DIR / 'hello_nodes.py').is_file())\n")
    result = run(installed, "python", "-c", code, cwd=empty_dir)
    assert result.returncode == 0, result.stderr
    package_dir, installed_files, top_level, data = result.stdout.splitlines()
    # Every file of the package in the checkout (modules, recipes, examples, site profiles).
    checkout = sorted(str(p.relative_to(PROJECT_ROOT)) for p in (PROJECT_ROOT / "rayhpc").rglob("*")
                      if p.is_file() and "__pycache__" not in p.parts)
    assert installed_files == repr(checkout)
    assert Path(package_dir).is_relative_to(installed.parent), package_dir  # not the checkout
    assert top_level == "['rayhpc']"  # no generic top-level names in site-packages
    assert data == "True True"
    # The wheel's declared dependencies are what the environment provides.
    check = run(installed, "python", "-m", "pip", "check", cwd=empty_dir)
    assert check.returncode == 0, check.stdout + check.stderr


def test_rayhpc_version_and_sites_from_an_empty_directory(installed, empty_dir):
    from rayhpc import __version__

    version = run(installed, "rayhpc", "--version", cwd=empty_dir)
    assert (version.returncode, version.stdout) == (0, f"rayhpc {__version__}\n"), version.stderr
    sites = run(installed, "rayhpc", "sites", cwd=empty_dir)
    assert sites.returncode == 0, sites.stderr
    names = [line.split()[0] for line in sites.stdout.splitlines()[1:]
             if not line.startswith(" ")]
    assert {"local", "slurm", "polaris", "frontier", "perlmutter"} <= set(names), names
    assert list(empty_dir.iterdir()) == []  # listing sites writes nothing


def test_rayhpc_dry_run_of_an_hpc_site_and_the_bundled_recipes(installed, empty_dir, tmp_path):
    shared = tmp_path / "shared"
    result = run(installed, "rayhpc", "launch", "--site", "polaris", "--nodes", "4",
                 "--image", "/x/ray.sif", "--account", "proj", "--shared", str(shared),
                 "--dry-run", cwd=empty_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("#!/bin/bash\n#PBS "), result.stdout[:200]
    assert "mpiexec" in result.stdout
    # The bundled recipes render (Apptainer def files): no checkout needed; vllm extends ray,
    # found among the installed recipes.
    defs = run(installed, "rayhpc", "defs", "--out", "defs", cwd=empty_dir)
    assert defs.returncode == 0, defs.stderr
    assert sorted(p.name for p in (empty_dir / "defs").iterdir()) == [
        "ray-cpu.def", "ray-gpu.def", "vllm-gpu.def"]
    # Bad input: one error line, exit 2, as with invoke.
    bad = run(installed, "rayhpc", "launch", "--site", "nowhere", cwd=empty_dir)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: unknown site 'nowhere' (--site)"), bad.stderr


def test_rayhpc_prints_a_shell_completion_script(installed, empty_dir):
    result = run(installed, "rayhpc", "--print-completion-script", "bash", cwd=empty_dir)
    assert result.returncode == 0, result.stderr
    assert "complete -F _complete_rayhpc" in result.stdout and " rayhpc" in result.stdout


@pytest.mark.docker
def test_rayhpc_runs_the_bundled_hello_example_locally(installed, empty_dir, docker_api,
                                                       built_image, shared_dir):
    image, _ = built_image
    assert image == TEST_IMAGE
    result = run(installed, "rayhpc", "launch", "--site", "local", "--nodes", "2", "--image",
                 image, "--shared", str(shared_dir), "--driver",
                 "python examples/hello_nodes.py --ray-address={address}", cwd=empty_dir,
                 timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "hello from 2 nodes: head, worker-1" in result.stdout
    # The examples were staged into the shared dir from the installed package.
    assert (shared_dir / "examples" / "hello_nodes.py").read_bytes() == \
        (PROJECT_ROOT / "rayhpc/examples/hello_nodes.py").read_bytes()


def test_rayhpc_has_the_tasks_flags_and_help_of_invoke_in_the_checkout(installed, empty_dir):
    from tests.cli import invoke

    listed = run(installed, "rayhpc", "--list", cwd=empty_dir).stdout
    tasks = [line.split()[0] for line in listed.splitlines() if line.startswith("  ")
             and not line.startswith("   ")]
    # All of the checkout's but `test`, which needs the checkout's tests and test tools.
    assert tasks == [line.split()[0] for line in invoke("--list").stdout.splitlines()
                     if line.startswith("  ") and not line.startswith("   ")
                     and line.split()[0] != "test"]
    refused = run(installed, "rayhpc", "test", "--unit", cwd=empty_dir)
    assert (refused.returncode, refused.stderr) == (1, "No idea what 'test' is!\n")
    for task in ("launch", "submit", "report"):
        mine = run(installed, "rayhpc", "--help", task, cwd=empty_dir).stdout
        theirs = invoke("--help", task).stdout
        assert mine.split("\n", 1)[1] == theirs.split("\n", 1)[1], task  # after "Usage:"
