"""Teardown: from the driver's end to no container of the run left, for several cluster sizes.

Two figures: the head's record (timing.json: t_driver_end -> t_teardown_done, every node's Ray
stopped and its logs kept) and `invoke launch` exiting (after `docker compose down`), checked
against the engine: right after it exits, nothing of the run may be left (containers, network).
Goal: invoke exited <= 5 s after the driver's end, zero leftovers.

    .venv/bin/python benchmarks/teardown.py [--nodes 2 4 6] [--repeat 1] [--image TAG]
"""

from __future__ import annotations

import argparse
import time

import docker
from harness import ensure_image, launch, machine, median, print_table, shared_dir

from rayhpc.launcher.backends.local.compose import RUN_LABEL

GOAL_S = 5.0


def leftovers(client: docker.DockerClient, run_id: str) -> int:
    containers = client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_id}"})
    networks = client.networks.list(filters={"label": f"{RUN_LABEL}={run_id}"})
    return len(containers) + len(networks)


def one(image: str, nodes: int, client: docker.DockerClient) -> tuple[float, float, int]:
    with shared_dir() as shared:
        _, run_dir, timing = launch(image, shared, nodes, "python first_task.py")
        exited = time.time()
        left = leftovers(client, run_dir.name)
        return (timing["t_teardown_done"] - timing["t_driver_end"],
                exited - timing["t_driver_end"], left)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, nargs="+", default=[2, 4, 6])
    parser.add_argument("--repeat", type=int, default=1, help="runs per size (median shown)")
    parser.add_argument("--image", help="image to run (default: the ray recipe's cpu image)")
    args = parser.parse_args()
    image = ensure_image(args.image)
    client = docker.from_env()
    print(f"machine: {machine()}\nimage: {image}; median of {args.repeat} run(s) per size")
    rows = []
    for nodes in args.nodes:
        runs = [one(image, nodes, client) for _ in range(args.repeat)]
        down = median([r[0] for r in runs])
        exit_ = median([r[1] for r in runs])
        left = max(r[2] for r in runs)
        rows.append([nodes, down, exit_, exit_ / GOAL_S, left])
    print_table("teardown, seconds after the driver ended",
                ["N", "nodes stopped", "invoke exited", "exited / 5 s goal", "leftovers"],
                rows)
    worst = max(row[2] for row in rows)
    left = max(row[4] for row in rows)
    print(f"\ngoal <= {GOAL_S:.0f} s and zero leftovers: worst {worst:.2f} s, {left} left -> "
          f"{'met' if worst <= GOAL_S and left == 0 else 'NOT met'}")


if __name__ == "__main__":
    main()
