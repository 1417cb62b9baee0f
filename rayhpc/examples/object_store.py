"""Object store: one large numpy array put once, read zero-copy by a task on every node.

    python examples/object_store.py --ray-address=HOST:PORT [--megabytes 100]
"""

import argparse
import os
import socket

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@ray.remote
def inspect(array: np.ndarray) -> tuple:
    # Arrays from the object store are read-only views of shared memory: no copy was made.
    return socket.gethostname(), float(array.sum()), array.flags.writeable, array.flags.owndata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS", "auto"))
    parser.add_argument("--megabytes", type=int, default=100)
    args = parser.parse_args()
    ray.init(address=args.ray_address)
    count = args.megabytes * 1024 * 1024 // 8
    ref = ray.put(np.arange(count, dtype=np.float64))
    nodes = [n for n in ray.nodes() if n["Alive"]]
    results = ray.get([inspect.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        node_id=n["NodeID"], soft=False)).remote(ref) for n in nodes])
    expected = count * (count - 1) / 2
    hosts = sorted(host for host, *_ in results)
    correct = all(total == expected for _, total, _, _ in results)
    zero_copy = all(not writeable and not owndata for _, _, writeable, owndata in results)
    print(f"object store: {args.megabytes} MB array read on {len(set(hosts))} nodes "
          f"({', '.join(hosts)}); sums correct: {correct}; zero-copy read-only views: {zero_copy}")
    ray.shutdown()
    raise SystemExit(0 if correct and zero_copy else 1)


if __name__ == "__main__":
    main()
