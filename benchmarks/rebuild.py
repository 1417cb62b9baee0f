"""Rebuild: a cold build of the ray recipe against a rebuild after only its pip dependency
changed (the edit a user makes most). Layers are ordered apt, pip, env, labels, so the
rebuild redoes the pip layer and what follows only. Goal: rebuild <= 15% of the cold build.

Two more ways to add one package, each measured after the recipe's image is there: a recipe
that extends it (`extends:` the same recipe file, `pip: [tabulate]`), and `build --pip
humanize`. Both must reuse every layer of the recipe's image and build one more (the --pip
build also runs pip's resolver check in a throw-away container of the base first; its time is
included).

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
from harness import invoke, machine, median, print_table

from rayhpc import RECIPES_DIR

GOAL = 0.15
TAG = "rayhpc-bench/rebuild:cpu"
BASE_TAG = "rayhpc-bench/rebuild-base:cpu"
CHILD_TAG = "rayhpc-bench/rebuild-child:cpu"
PLUS_TAG = "rayhpc-bench/rebuild-plus:cpu"
# The one package the extending recipe adds, and the one --pip adds: in neither the base nor
# the ray recipe (one pip finds installed makes an empty layer), and not the same one (the
# two layers would be one instruction: the second would come from the engine's cache).
ADDED = "tabulate"
ADDED_BY_FLAG = "humanize"
# Two releases of a small pure-Python package: the "driver's dependency" that changes.
PIP_BEFORE, PIP_AFTER = "tqdm==4.66.5", "tqdm==4.67.1"


def timed_invoke(*args: str) -> float:
    started = time.monotonic()
    result = invoke(*args)
    if result.returncode != 0:
        raise SystemExit(f"invoke {args[0]} failed:\n{result.stdout[-2000:]}"
                         f"{result.stderr[-2000:]}")
    return time.monotonic() - started


def build(recipe: Path, *extra: str, tag: str = TAG) -> float:
    return timed_invoke("build", "--recipe", str(recipe), "--base", BASE_TAG, "--tag", tag,
                        *extra)


def write_recipe(path: Path, pip: str) -> None:
    recipe = yaml.safe_load((RECIPES_DIR / "ray.yaml").read_text())
    recipe["pip"] = [pip]
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))


def write_child(path: Path, parent: Path) -> None:
    """A recipe extending ``parent`` (a path relative to the child's directory) by one package."""
    path.write_text(yaml.safe_dump({"name": "child", "extends": parent.name, "pip": [ADDED]},
                                   sort_keys=False))


def layers(client: docker.DockerClient, tag: str) -> list[str]:
    return client.images.get(tag).attrs["RootFS"]["Layers"]


def check_reuses_every_layer(client: docker.DockerClient, parent: str, tag: str) -> None:
    """The point of both ways: the recipe image's layers, then one layer more."""
    ours, theirs = layers(client, tag), layers(client, parent)
    if ours[:len(theirs)] != theirs or len(ours) != len(theirs) + 1:
        raise SystemExit(f"{tag} does not reuse every layer of {parent} and add one: "
                         f"{len(theirs)} layers there, {len(ours)} here")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1, help="pairs of builds (median shown)")
    args = parser.parse_args()
    client = docker.from_env()
    print(f"machine: {machine()}\nmedian of {args.repeat} run(s)")
    bases, colds, rebuilds, unchanged, children, pluses = [], [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        recipe, child = Path(tmp) / "ray.yaml", Path(tmp) / "child.yaml"
        write_child(child, recipe)
        for _ in range(args.repeat):
            bases.append(timed_invoke("base", "--tag", BASE_TAG, "--no-cache"))
            write_recipe(recipe, PIP_BEFORE)
            colds.append(build(recipe, "--no-cache"))
            write_recipe(recipe, PIP_AFTER)
            rebuilds.append(build(recipe))
            unchanged.append(build(recipe))
            # The recipe's image (PIP_AFTER) is there: each adds one package on top of it.
            children.append(build(child, tag=CHILD_TAG))
            check_reuses_every_layer(client, TAG, CHILD_TAG)
            pluses.append(build(recipe, "--pip", ADDED_BY_FLAG, tag=PLUS_TAG))
            check_reuses_every_layer(client, TAG, PLUS_TAG)
    for tag in (CHILD_TAG, PLUS_TAG, TAG, BASE_TAG):
        client.images.remove(tag, force=True)
    base, cold, rebuild, same = median(bases), median(colds), median(rebuilds), median(unchanged)
    child_build, plus_build = median(children), median(pluses)
    full = base + cold
    print_table("build, seconds", ["build", "seconds", "of cold with base", "of cold recipe"],
                [["cold: Ray base + recipe (--no-cache)", full, 1.0, full / cold],
                 ["cold: recipe alone on its base (--no-cache)", cold, cold / full, 1.0],
                 [f"rebuild: pip {PIP_BEFORE} -> {PIP_AFTER}", rebuild, rebuild / full,
                  rebuild / cold],
                 ["rebuild: nothing changed", same, same / full, same / cold],
                 [f"an extending recipe adding one package ({ADDED})", child_build,
                  child_build / full, child_build / cold],
                 [f"build --pip {ADDED_BY_FLAG} (resolver check included)", plus_build,
                  plus_build / full, plus_build / cold]])
    print()
    for name, reference in (("cold with base", full), ("cold recipe alone", cold)):
        share = rebuild / reference
        print(f"goal rebuild <= {GOAL:.0%} of {name}: {share:.1%} -> "
              f"{'met' if share <= GOAL else 'NOT met'}")


if __name__ == "__main__":
    main()
