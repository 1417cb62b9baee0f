"""Hello across node groups: what each node brought, then work placed by group.

    python examples/hello_groups.py --ray-address=HOST:PORT [--resource trainer]

Every node of a launch with groups carries the Ray labels rayhpc.io/group and rayhpc.io/image
(Ray 2.49+) and its group's custom resources. This lists the nodes by group, runs one task
that needs ``--resource`` (placed by Ray on a node of the group that has it) and one task per
group chosen by its label.
"""

import argparse
import os
import socket
from collections import defaultdict

import ray

GROUP_LABEL = "rayhpc.io/group"
IMAGE_LABEL = "rayhpc.io/image"


@ray.remote(num_cpus=0)
def where() -> str:
    return socket.gethostname()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS", "auto"))
    parser.add_argument("--resource", help="a custom resource some group has, e.g. trainer")
    args = parser.parse_args()
    ray.init(address=args.ray_address)
    groups = defaultdict(list)
    for node in (n for n in ray.nodes() if n["Alive"]):
        labels = node.get("Labels") or {}
        group = labels.get(GROUP_LABEL, "-")
        groups[group].append(node)
        resources = node["Resources"]
        print(f"group {group} node {node['NodeManagerHostname']}: image "
              f"{labels.get(IMAGE_LABEL, '-')}, {resources.get('CPU', 0):g} CPUs, "
              f"{resources.get('GPU', 0):g} GPUs")
    if args.resource:
        host = ray.get(where.options(resources={args.resource: 1}).remote())
        print(f"{args.resource} task ran on {host}")
    for group in sorted(g for g in groups if g != "-"):
        host = ray.get(where.options(label_selector={GROUP_LABEL: group}).remote())
        print(f"group {group} task ran on {host}")
    ray.shutdown()


if __name__ == "__main__":
    main()
