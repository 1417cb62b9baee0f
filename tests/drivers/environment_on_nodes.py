"""Test driver: what RAYHPC_TEST_VALUE is on each node (one task per node)."""

import os

import ray

ray.init()
nodes = len(ray.nodes())


@ray.remote(num_cpus=0.01, scheduling_strategy="SPREAD")
def value() -> tuple[str, str]:
    return ray.get_runtime_context().get_node_id(), os.environ.get("RAYHPC_TEST_VALUE", "")


seen: dict[str, str] = {}
while len(seen) < nodes:
    seen.update(ray.get([value.remote() for _ in range(4 * nodes)]))
print(f"RAYHPC_TEST_VALUE on {nodes} nodes: {', '.join(sorted(seen.values()))}")
