"""Hello across nodes: one task on every Ray node, each answering with its host name.

    python examples/hello_nodes.py --ray-address=HOST:PORT
"""

import argparse
import os
import socket

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@ray.remote
def hello() -> str:
    return socket.gethostname()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS", "auto"))
    args = parser.parse_args()
    ray.init(address=args.ray_address)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    # Pin one task to each node, so every node is proven to run work, not just to be listed.
    pinned = [hello.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        node_id=n["NodeID"], soft=False)).remote() for n in nodes]
    hosts = sorted(ray.get(pinned))
    print(f"hello from {len(set(hosts))} nodes: {', '.join(hosts)}")
    ray.shutdown()


if __name__ == "__main__":
    main()
