"""The network that NCCL and Gloo use, set from the node's interface (launcher side; pure).

Ray takes the node's address from the site's `interface` (the high-speed network). NCCL and
Gloo pick their own interface unless told, and on Slingshot machines they may take the
management network or a NIC that cannot reach the other nodes (vllm-project/vllm#5094,
#7074; ray-project/ray#22732). So every node gets `NCCL_SOCKET_IFNAME` and
`GLOO_SOCKET_IFNAME` set to the same interface, unless the site file's `environment` sets
them (a site may document its own value, e.g. several NICs for NCCL) or the job's own
environment does (the job script only fills in what is unset).

Without an `interface` the node has to find the one that routes to the head at run time:
`launcher.node.head_route`.
"""

from __future__ import annotations

import re

# An interface name as the kernel allows it (IFNAMSIZ: 15 characters, no slash or space):
# safe in a shell word and a compose value.
INTERFACE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,15}")


def check_interface(name: str) -> str:
    """``name`` if it can be a network interface's name; ValueError ("must ...") if not."""
    if not INTERFACE_RE.fullmatch(name):  # not match: its $ takes a trailing line break
        raise ValueError("must be a network interface name (letters, digits, _ . : -; at "
                         "most 15 characters), e.g. hsn0")
    return name


def export_unless_set(name: str, value: str) -> str:
    """A job script line that sets ``name`` only where the job's environment has not."""
    return f'export {name}="${{{name}:-{value}}}"'
