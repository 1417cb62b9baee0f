"""Rebuild: a cold build of the ray recipe against a rebuild after only its pip dependency
changed (the edit a user makes most). Layers are ordered apt, pip, env, labels, so the
rebuild redoes the pip layer and what follows only. Goal: rebuild <= 15% of the cold build.

Cold is measured two ways, both with --no-cache: the Ray base built too (`invoke base`: Ray
and its dependencies installed on the OS image, which stands in for pulling rayproject/ray
where no registry is reachable), and the recipe alone on a base that is there. Every build
goes through `invoke`, from a copy of recipes/ray.yaml.

    .venv/bin/python benchmarks/rebuild.py [--repeat 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import docker
import yaml
from harness import ROOT, invoke, machine, median, print_table

GOAL = 0.15
TAG = "rayhpc-bench/rebuild:cpu"
BASE_TAG = "rayhpc-bench/rebuild-base:cpu"
# Two releases of a small pure-Python package: the "driver's dependency" that changes.
PIP_BEFORE, PIP_AFTER = "tqdm==4.66.5", "tqdm==4.67.1"


def timed_invoke(*args: str) -> float:
    started = time.monotonic()
    result = invoke(*args)
    if result.returncode != 0:
        raise SystemExit(f"invoke {args[0]} failed:\n{result.stdout[-2000:]}"
                         f"{result.stderr[-2000:]}")
    return time.monotonic() - started


def build(recipe: Path, *extra: str) -> float:
    return timed_invoke("build", "--recipe", str(recipe), "--base", BASE_TAG, "--tag", TAG,
                        *extra)


def write_recipe(path: Path, pip: str) -> None:
    recipe = yaml.safe_load((ROOT / "recipes" / "ray.yaml").read_text())
    recipe["pip"] = [pip]
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1, help="pairs of builds (median shown)")
    args = parser.parse_args()
    client = docker.from_env()
    print(f"machine: {machine()}\nmedian of {args.repeat} run(s)")
    bases, colds, rebuilds, unchanged = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "ray.yaml"
        for _ in range(args.repeat):
            bases.append(timed_invoke("base", "--tag", BASE_TAG, "--no-cache"))
            write_recipe(recipe, PIP_BEFORE)
            colds.append(build(recipe, "--no-cache"))
            write_recipe(recipe, PIP_AFTER)
            rebuilds.append(build(recipe))
            unchanged.append(build(recipe))
    for tag in (TAG, BASE_TAG):
        client.images.remove(tag, force=True)
    base, cold, rebuild, same = median(bases), median(colds), median(rebuilds), median(unchanged)
    full = base + cold
    print_table("build, seconds", ["build", "seconds", "of cold with base", "of cold recipe"],
                [["cold: Ray base + recipe (--no-cache)", full, 1.0, full / cold],
                 ["cold: recipe alone on its base (--no-cache)", cold, cold / full, 1.0],
                 [f"rebuild: pip {PIP_BEFORE} -> {PIP_AFTER}", rebuild, rebuild / full,
                  rebuild / cold],
                 ["rebuild: nothing changed", same, same / full, same / cold]])
    print()
    for name, reference in (("cold with base", full), ("cold recipe alone", cold)):
        share = rebuild / reference
        print(f"goal rebuild <= {GOAL:.0%} of {name}: {share:.1%} -> "
              f"{'met' if share <= GOAL else 'NOT met'}")


if __name__ == "__main__":
    main()
