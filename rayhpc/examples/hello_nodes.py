"""Hello across nodes: one task on every Ray node, each answering with its host name.

    python examples/hello_nodes.py [--ray-address=HOST:PORT] [--wait-for N]

--wait-for N: first wait (up to 5 minutes) until N nodes are in the cluster, e.g. once a block
grown by `rayhpc grow` is joining.
"""

import argparse
import os
import socket
import time

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@ray.remote
def hello() -> str:
    return socket.gethostname()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS", "auto"))
    parser.add_argument("--wait-for", type=int, default=0, metavar="N",
                        help="wait until N nodes are in the cluster (up to 5 minutes)")
    args = parser.parse_args()
    ray.init(address=args.ray_address)
    deadline = time.monotonic() + 300
    while len(nodes := [n for n in ray.nodes() if n["Alive"]]) < args.wait_for:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(nodes)} of {args.wait_for} nodes joined in 5 minutes")
        time.sleep(1)
    # Pin one task to each node, so every node is proven to run work, not just to be listed.
    pinned = [hello.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        node_id=n["NodeID"], soft=False)).remote() for n in nodes]
    hosts = sorted(ray.get(pinned))
    print(f"hello from {len(set(hosts))} nodes: {', '.join(hosts)}")
    ray.shutdown()


if __name__ == "__main__":
    main()
