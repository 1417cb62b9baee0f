"""What the benchmarks share: the machine they ran on, tables, launches and plain containers.

Run from the repository root, e.g. `.venv/bin/python benchmarks/bringup.py`.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parent.parent
IN_NODE = Path(__file__).resolve().parent / "in_node"
sys.path.insert(0, str(ROOT))  # the benchmarks import the project's packages after this module

BENCH_LABEL = "org.rayhpc.benchmark"


def machine() -> str:
    """One line on where the figures come from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    try:
        engine = f"Docker {docker.from_env().version()['Version']}"
    except docker.errors.DockerException:  # the benchmarks that run no container
        engine = "no Docker engine"
    return (f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB, Linux {platform.release()}, "
            f"{engine}, Python {platform.python_version()}")


def print_table(title: str, headers: list[str], rows: list[list[object]]) -> None:
    cells = [[str(c) for c in headers]] + [[fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    print(f"\n{title}")
    for index, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if index == 0:
            print("  ".join("-" * w for w in widths))


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return "-" if value is None else str(value)


def median(values: list[float]) -> float:
    return statistics.median(values)


def ensure_image(image: str | None) -> str:
    """The image to run: the given one, else the default (built on first use)."""
    if image:
        return image
    from rayhpc.containers.images import ensure_recipe_image

    return ensure_recipe_image()


@contextmanager
def shared_dir() -> Iterator[Path]:
    """A shared directory the containers' user (uid 1000) can enter and write in."""
    path = Path(tempfile.mkdtemp(prefix="rayhpc-bench-"))
    path.chmod(0o755)
    for script in IN_NODE.glob("*.py"):
        shutil.copy(script, path / script.name)
    if os.geteuid() == 0:
        for item in [path, *path.iterdir()]:
            os.chown(item, 1000, 100)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def invoke(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`invoke ARGS` from this checkout, output captured; ``env``: added to ours."""
    return subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), *args],
                          capture_output=True, text=True, env={**os.environ, **(env or {})})


def launch(image: str, shared: Path, nodes: int, driver: str, *extra: str,
           settings: dict[str, str] | None = None
           ) -> tuple[subprocess.CompletedProcess, Path, dict]:
    """`invoke launch --site local` to the end: the result, its run dir and timing.json.
    ``settings``: more settings, as their RAYHPC_* environment variables."""
    result = invoke("launch", "--site", "local", "--image", image, "--shared", str(shared),
                    "--nodes", str(nodes), "--driver", driver, *extra, env=settings)
    match = re.search(r"rayhpc: run (\S+): ", result.stdout)
    if result.returncode != 0 or not match:
        raise SystemExit(f"launch failed ({result.returncode}):\n{result.stdout[-2000:]}"
                         f"{result.stderr[-2000:]}")
    run_dir = shared / "runs" / match.group(1)
    return result, run_dir, json.loads((run_dir / "timing.json").read_text())


def stamp(output: str, name: str) -> float:
    """The epoch seconds a node script printed as ``name=...``."""
    match = re.search(rf"^{name}=([\d.]+)$", output, re.M)
    if not match:
        raise SystemExit(f"no {name}= in:\n{output[-2000:]}")
    return float(match.group(1))


class PlainCluster:
    """Ray nodes in plain containers on a network of their own, with no launcher logic: the
    baselines the launcher is compared with. Removes everything it made on exit."""

    def __init__(self, image: str, name: str):
        self.client = docker.from_env()
        self.image = image
        self.name = name
        self.network = self.client.networks.create(name, labels={BENCH_LABEL: name})
        self.containers: list = []

    def start(self, node: str, command: str):
        container = self.client.containers.run(
            self.image, ["sh", "-c", command], name=f"{self.name}-{node}", hostname=node,
            network=self.name, detach=True, shm_size="2g", init=True,
            labels={BENCH_LABEL: self.name},
            volumes={str(IN_NODE): {"bind": "/bench", "mode": "ro"}},
            environment={"RAY_USAGE_STATS_ENABLED": "0"})
        self.containers.append(container)
        return container

    def wait_for_line(self, container, name: str, timeout: float = 300) -> float:
        deadline = time.time() + timeout
        while time.time() < deadline:
            logs = container.logs().decode(errors="replace")
            if re.search(rf"^{name}=", logs, re.M):
                return stamp(logs, name)
            time.sleep(0.05)
        raise SystemExit(f"{container.name}: no {name}= within {timeout} s:\n{logs[-2000:]}")

    def remove(self) -> None:
        for container in self.containers:
            container.remove(force=True)
        self.network.remove()

    def __enter__(self) -> PlainCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
