"""The environment the job script (or compose file) hands the node program, what the driver
finds in its own, the Ray node labels every node carries, and the socket-path limit both sides
check. Standard library only."""

from __future__ import annotations

from collections.abc import Mapping

# The launcher's rank variable(s), comma-separated, in the order trusted (each scheduler module
# declares its own `rank_vars`); rank 0 is the head. Not needed where `--role` is given.
RANK_VARS_ENV = "RAYHPC_RANK_VARS"
HEAD_HOST_ENV = "RAYHPC_HEAD_HOST"  # the head's host, where the job script knows it
NODE_IP_ENV = "RAYHPC_NODE_IP"  # this node's address for Ray, where the host cannot tell it
# A node-local temp dir of its own (several agents of one run on one host: the simulator).
NODE_TEMP_DIR_ENV = "RAYHPC_NODE_TEMP_DIR"
# The interface NCCL and Gloo use: set in every container, to the site's `interface` by the
# job script, else by the node to the one that routes to the head; the user's value wins.
# NCCL: "NCCL_SOCKET_IFNAME ... Specifies which IP interfaces to use for communication" (NVIDIA
# NCCL docs, Environment Variables); Gloo: GLOO_SOCKET_IFNAME (PyTorch torch.distributed docs,
# "Common environment variables: Choosing the network interface to use").
FABRIC_VARS = ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME")


def fabric_environment(interface: str | None, environ: Mapping[str, object]) -> dict[str, str]:
    """The fabric variables set to ``interface`` ({} without one), leaving out those
    ``environ`` sets (the user's, or the site's)."""
    if not interface:
        return {}
    return {name: interface for name in FABRIC_VARS if not environ.get(name)}


# What the driver (and every Ray job) finds in its environment.
RUN_DIR_ENV = "RAYHPC_RUN_DIR"
NODES_ENV = "RAYHPC_NODES"

# Ray node labels every node carries (a driver can target a group, or see a node's image)

RAY_NODE_LABEL = "rayhpc.io/node"  # which node this is (set by the node program)
RAY_GROUP_LABEL = "rayhpc.io/group"  # its node group (set by the launcher in the spec)
RAY_IMAGE_LABEL = "rayhpc.io/image"  # its group's image (likewise)


def label_value(text: str) -> str:
    """``text`` as a Ray label value (Kubernetes' syntax: at most 63 of [-_.A-Za-z0-9],
    alphanumeric at both ends): other characters become `_`, and the end (a tag, a file name,
    a host's number) is kept when it is too long."""
    value = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in text)
    return value[-63:].strip("-_.")


# Ray's socket paths: the launcher refuses a temp dir that cannot hold them, the node checks

AF_UNIX_MAX = 107
# The longest tail Ray appends to its temp dir for a socket path (session name, sockets/...).
RAY_SOCKET_SUFFIX = len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")


def temp_dir_fits(temp_dir: str) -> bool:
    """Ray's AF_UNIX socket paths under temp_dir must fit in 107 bytes."""
    return len(temp_dir) + RAY_SOCKET_SUFFIX <= AF_UNIX_MAX
