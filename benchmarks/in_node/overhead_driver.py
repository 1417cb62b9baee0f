"""The overhead workload, the same for Ray nodes in containers and as bare processes.

  small tasks: many no-op tasks spread over every node, tasks per second;
  large object: an array made on one node and read on another, MB per second.

Prints one line `overhead={json}`.

    python overhead_driver.py [--tasks 2000] [--object-mb 256] [--rounds 3]
"""

import argparse
import json
import statistics
import time

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@ray.remote(scheduling_strategy="SPREAD")
def noop() -> None:
    return None


@ray.remote
def make(megabytes: int) -> np.ndarray:
    return np.ones(megabytes * 2**20, dtype=np.uint8)


@ray.remote
def consume(array: np.ndarray) -> int:
    return int(array[::4096].sum())


def on(node_id: str):
    return NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--object-mb", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ray.init()
    nodes = sorted((n for n in ray.nodes() if n["Alive"]), key=lambda n: n["NodeID"])
    head_id = ray.get_runtime_context().get_node_id()
    source = next(n["NodeID"] for n in nodes if n["NodeID"] != head_id)
    ray.get([noop.remote() for _ in range(200)])  # warm: worker processes on every node
    rates, transfers = [], []
    for _ in range(args.rounds):
        started = time.perf_counter()
        ray.get([noop.remote() for _ in range(args.tasks)])
        rates.append(args.tasks / (time.perf_counter() - started))
        # Made on a worker node, read by a task on the head: one transfer between nodes.
        array = make.options(scheduling_strategy=on(source)).remote(args.object_mb)
        ray.wait([array], fetch_local=False)
        started = time.perf_counter()
        ray.get(consume.options(scheduling_strategy=on(head_id)).remote(array))
        transfers.append(args.object_mb / (time.perf_counter() - started))
        del array
    print("overhead=" + json.dumps({
        "nodes": len(nodes), "tasks_per_s": statistics.median(rates),
        "transfer_mb_per_s": statistics.median(transfers)}), flush=True)


if __name__ == "__main__":
    main()
