"""Overhead: the same Ray workload on N Ray nodes in containers (`invoke launch --site local`)
and on N Ray nodes as bare processes on this host (ray.cluster_utils.Cluster), side by side:
throughput of many small tasks, and a large object moved between nodes. Each node gets the
same CPUs and object store either way. Goal: containers >= 0.9x of bare processes.

Needs Ray on the host, the same version as the image: `pip install -e .[bench]`.

    .venv/bin/python benchmarks/overhead.py [--nodes 2] [--repeat 3] [--image TAG]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

from harness import IN_NODE, ensure_image, launch, machine, median, print_table, shared_dir

GOAL = 0.9
CPUS_PER_NODE = 2
OBJECT_STORE = 1 * 2**30


def result_of(output: str) -> dict:
    match = re.search(r"^overhead=(\{.*\})$", output, re.M)
    if not match:
        raise SystemExit(f"the workload printed no result:\n{output[-3000:]}")
    return json.loads(match.group(1))


def in_containers(image: str, nodes: int, workload: list[str]) -> dict:
    with shared_dir() as shared:
        result, _, _ = launch(image, shared, nodes, " ".join(["python", *workload]),
                              "--num-cpus", str(CPUS_PER_NODE),
                              settings={"RAYHPC_OBJECT_STORE_MEMORY": str(OBJECT_STORE)})
        return result_of(result.stdout)


def bare(nodes: int, workload: list[str]) -> dict:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": CPUS_PER_NODE, "object_store_memory": OBJECT_STORE})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=CPUS_PER_NODE, object_store_memory=OBJECT_STORE)
        cluster.wait_for_nodes()
        env = dict(os.environ, RAY_ADDRESS=cluster.address)
        workload[0] = str(IN_NODE / workload[0])
        result = subprocess.run([sys.executable, *workload], capture_output=True, text=True,
                                env=env)
        return result_of(result.stdout + result.stderr)
    finally:
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="runs each way (median shown)")
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--object-mb", type=int, default=256)
    parser.add_argument("--image", help="image to run (default: the ray recipe's cpu image)")
    args = parser.parse_args()
    image = ensure_image(args.image)
    workload = ["overhead_driver.py", "--tasks", str(args.tasks), "--object-mb",
                str(args.object_mb)]
    print(f"machine: {machine()}\nimage: {image}; {args.nodes} nodes of {CPUS_PER_NODE} CPUs; "
          f"median of {args.repeat} run(s) each way, alternating")
    containers, processes = [], []
    for _ in range(args.repeat):
        containers.append(in_containers(image, args.nodes, list(workload)))
        processes.append(bare(args.nodes, list(workload)))
    rows = []
    for key, label in (("tasks_per_s", f"small tasks ({args.tasks}), tasks/s"),
                       ("transfer_mb_per_s", f"object of {args.object_mb} MB between nodes, "
                                             "MB/s")):
        c = median([r[key] for r in containers])
        p = median([r[key] for r in processes])
        rows.append([label, c, p, c / p])
    print_table("overhead of containers", ["workload", "containers", "bare processes",
                                           "containers / bare"], rows)
    worst = min(row[3] for row in rows)
    print(f"\ngoal containers >= {GOAL}x of bare: worst {worst:.2f}x -> "
          f"{'met' if worst >= GOAL else 'NOT met'}")


if __name__ == "__main__":
    main()
