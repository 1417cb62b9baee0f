"""Rebuild: a cold build of the ray recipe against a rebuild after only its pip dependency
changed (the edit a user makes most). Layers are ordered apt, pip, env, labels, so the
rebuild redoes the pip layer and what follows only. Goal: rebuild <= 15% of the cold build.

Both builds go through `invoke build` from a copy of recipes/ray.yaml; the cold one with
--no-cache (the base image is there already in both).

    .venv/bin/python benchmarks/rebuild.py [--base IMAGE] [--repeat 1]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
import yaml
from common import ROOT, machine, median, print_table

from containers.base import standin_tag
from containers.recipe import load_recipe

GOAL = 0.15
TAG = "rayhpc-bench/rebuild:cpu"
# Two releases of a small pure-Python package: the "driver's dependency" that changes.
PIP_BEFORE, PIP_AFTER = "tqdm==4.66.5", "tqdm==4.67.1"


def build(recipe: Path, base: str, *extra: str) -> float:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), "build",
                             "--recipe", str(recipe), "--base", base, "--tag", TAG, *extra],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"build failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return time.monotonic() - started


def write_recipe(path: Path, pip: str) -> None:
    recipe = yaml.safe_load((ROOT / "recipes" / "ray.yaml").read_text())
    recipe["pip"] = [pip]
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))


def default_base(client: docker.DockerClient) -> str:
    recipe = load_recipe("ray")
    real = recipe.variant("cpu").base
    try:
        client.images.get(real)
        return real
    except docker.errors.ImageNotFound:
        return standin_tag(recipe)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", help="base image (default: rayproject/ray if here, else the "
                                       "`invoke base` stand-in)")
    parser.add_argument("--repeat", type=int, default=1, help="pairs of builds (median shown)")
    args = parser.parse_args()
    client = docker.from_env()
    base = args.base or default_base(client)
    print(f"machine: {machine()}\nbase: {base}; median of {args.repeat} pair(s)")
    colds, rebuilds, unchanged = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "ray.yaml"
        for _ in range(args.repeat):
            write_recipe(recipe, PIP_BEFORE)
            colds.append(build(recipe, base, "--no-cache"))
            write_recipe(recipe, PIP_AFTER)
            rebuilds.append(build(recipe, base))
            unchanged.append(build(recipe, base))
    client.images.remove(TAG, force=True)
    cold, rebuild, same = median(colds), median(rebuilds), median(unchanged)
    print_table("build, seconds", ["build", "seconds", "of cold"], [
        ["cold (--no-cache)", cold, 1.0],
        [f"pip {PIP_BEFORE} -> {PIP_AFTER}", rebuild, rebuild / cold],
        ["nothing changed", same, same / cold]])
    print(f"\ngoal rebuild <= {GOAL:.0%} of cold: {rebuild / cold:.1%} -> "
          f"{'met' if rebuild / cold <= GOAL else 'NOT met'}")


if __name__ == "__main__":
    main()
