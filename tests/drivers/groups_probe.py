"""Test driver for a launch with node groups: where each group runs, and where a task that
needs the `trainer` resource lands.

Prints one line per alive node, `group <group> on <host>: image <image label>` (the Ray labels
rayhpc.io/group and rayhpc.io/image the agent gives every node of a group; `-` where a node has
none), then `trainer task ran on <host>`.
"""

import socket

import ray

GROUP_LABEL = "rayhpc.io/group"
IMAGE_LABEL = "rayhpc.io/image"


@ray.remote(num_cpus=0, resources={"trainer": 1})
def trainer() -> str:
    return socket.gethostname()


ray.init()
for node in sorted((n for n in ray.nodes() if n["Alive"]),
                   key=lambda n: n["NodeManagerHostname"]):
    labels = node.get("Labels") or {}
    print(f"group {labels.get(GROUP_LABEL, '-')} on {node['NodeManagerHostname']}: image "
          f"{labels.get(IMAGE_LABEL, '-')}", flush=True)
print(f"trainer task ran on {ray.get(trainer.remote())}", flush=True)
ray.shutdown()
