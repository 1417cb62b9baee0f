"""Actors: one actor on every node; the driver pings each and expects a pong back.

    python examples/actors.py --ray-address=HOST:PORT [--rounds 10]
"""

import argparse
import os
import socket

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@ray.remote
class Pinger:
    def __init__(self) -> None:
        self.pings = 0

    def ping(self, n: int) -> tuple:
        self.pings += 1
        return "pong", n, socket.gethostname(), self.pings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS", "auto"))
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    ray.init(address=args.ray_address)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    actors = [Pinger.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        node_id=n["NodeID"], soft=False)).remote() for n in nodes]
    for n in range(args.rounds):
        replies = ray.get([actor.ping.remote(n) for actor in actors])
        assert all(reply[:2] == ("pong", n) for reply in replies), replies
    hosts = sorted(reply[2] for reply in replies)
    counts = {reply[3] for reply in replies}
    print(f"actors: {len(actors)} actors on {len(set(hosts))} nodes ({', '.join(hosts)}) "
          f"answered {args.rounds} rounds of ping with pong; pings per actor: {sorted(counts)}")
    ray.shutdown()


if __name__ == "__main__":
    main()
