"""Test driver: on each node, NCCL_SOCKET_IFNAME, GLOO_SOCKET_IFNAME and the interface that
routes to the head (from /proc/net/route, as launcher/node_fabric.py reads it)."""

import os
import socket
import struct

import ray

ray.init()
nodes = len(ray.nodes())
head_ip = os.environ["RAY_ADDRESS"].split("://")[-1].rsplit(":", 1)[0]


@ray.remote(num_cpus=0.01, scheduling_strategy="SPREAD")
def fabric(head: str) -> tuple[str, str]:
    address = struct.unpack("!I", socket.inet_aton(head))[0]
    best = (-1, "")
    with open("/proc/net/route") as table:
        for row in [line.split() for line in table.read().splitlines()[1:] if line.strip()]:
            dest, mask = (struct.unpack("!I", struct.pack("<I", int(f, 16)))[0]
                          for f in (row[1], row[7]))
            if int(row[3], 16) & 1 and address & mask == dest:
                best = max(best, (bin(mask).count("1"), row[0]))
    return (ray.get_runtime_context().get_node_id(),
            f"{os.environ.get('NCCL_SOCKET_IFNAME', '-')}/"
            f"{os.environ.get('GLOO_SOCKET_IFNAME', '-')}/{best[1]}")


seen: dict[str, str] = {}
while len(seen) < nodes:
    seen.update(ray.get([fabric.remote(head_ip) for _ in range(4 * nodes)]))
print(f"fabric on {nodes} nodes: {', '.join(sorted(seen.values()))}")
