"""Whether this machine can hold a local launch (pure: facts in, a refusal or a warning out).

Every local node is a container on the Docker engine's machine: its shared memory (--shm-size,
which Ray's object store fills) and Ray's own processes must fit in that machine's memory,
else the engine itself goes down (5,000 nodes were tried once: the engine died). A node count
that does not fit is refused before anything is created, naming the largest that does."""

from __future__ import annotations

from dataclasses import dataclass

from rayhpc.common.user_error import UserError

GIB = 1 << 30
MIB = 1 << 20
# A Ray node's own processes (raylet, its dashboard and runtime-env agents, the node agent),
# and what the head adds (GCS, dashboard); measured idle here at about 0.3 and 0.6 GiB.
NODE_PROCESS_MEMORY = 512 * MIB
HEAD_EXTRA_MEMORY = 512 * MIB
MACHINE_RESERVE = 1 * GIB  # kept for the engine and the machine itself


@dataclass(frozen=True)
class MachineFacts:
    """What the Docker engine says of its machine (`docker info`)."""
    memory_bytes: int
    cpus: int


def node_memory(shm_bytes: int) -> int:
    """What one node may take of the machine's memory: its shm and its Ray processes."""
    return shm_bytes + NODE_PROCESS_MEMORY


def nodes_that_fit(machine: MachineFacts, shm_bytes: int) -> int:
    """The largest node count the machine's memory holds (0: not even one node)."""
    room = machine.memory_bytes - MACHINE_RESERVE - HEAD_EXTRA_MEMORY
    return max(0, room // node_memory(shm_bytes))


def check_capacity(nodes: int, shm_size: str, shm_bytes: int, machine: MachineFacts,
                   running: int = 0) -> None:
    """UserError naming --nodes (or --shm-size, when not even one node fits) unless the
    machine holds ``nodes`` more nodes beside the run's ``running`` ones (a grown block).
    (More nodes than its CPUs start well is a warning at the start:
    `launcher.backends.local.compose_run`.)"""
    fits = nodes_that_fit(machine, shm_bytes)
    per_node = f"{node_memory(shm_bytes) / GIB:.1f} GiB"
    have = (f"the Docker engine's machine has {machine.memory_bytes / GIB:.1f} GiB of memory "
            f"({MACHINE_RESERVE // GIB} GiB kept for itself, "
            f"{HEAD_EXTRA_MEMORY // MIB} MiB more for the head)")
    if fits == 0:
        raise UserError(f"--shm-size: {shm_size} per node does not fit even one node here: "
                        f"each node takes its shm and {NODE_PROCESS_MEMORY // MIB} MiB for Ray "
                        f"({per_node}) and {have}; give a smaller --shm-size")
    if running and running + nodes > fits:
        raise UserError(f"--nodes: a block of {nodes} more local node(s) does not fit on this "
                        f"machine beside the run's {running}: each takes {per_node} and "
                        f"{have}; it holds {fits} in all: give --nodes {max(fits - running, 0)} "
                        "or fewer, or shrink a block first")
    if nodes > fits:
        raise UserError(f"--nodes: {nodes} local nodes do not fit on this machine: each takes "
                        f"{per_node} (--shm-size {shm_size} and {NODE_PROCESS_MEMORY // MIB} "
                        f"MiB for Ray) and {have}; use --nodes {fits} or fewer (or a smaller "
                        "--shm-size), or an HPC site for a larger cluster")
