"""A launch's run id, its block of ports and its node-local temp dir (the spec itself, as the
nodes read it, is `launcher.contract.LaunchSpec`)."""

from __future__ import annotations

import secrets
import time
import zlib

# Fixed-port Ray components, offsets in a per-run block so that two runs sharing a node (or a
# host network) do not collide; worker processes take free ports from Ray's own range.
PORT_OFFSETS = {"gcs": 0, "dashboard": 1, "client": 2, "node_manager": 3, "object_manager": 4,
                "metrics_export": 5, "dashboard_agent_grpc": 6, "dashboard_agent_listen": 7,
                "runtime_env_agent": 8, "agent": 9}
PORT_BLOCKS = (20000, 30000, 10)  # first port, end, block size


def new_run_id(now: float | None = None) -> str:
    """Unique and sortable: 20261123-190512-a3f9 (time, then 16 random bits)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return f"{stamp}-{secrets.token_hex(2)}"


def unused_run_id(busy_gcs_ports: set[int], first: str = "", tries: int = 100) -> str:
    """``first`` (else a new run id) unless an unfinished run holds its port block (runs may
    share a node): then a new one that no such run holds."""
    run_id = first or new_run_id()
    for _ in range(tries):
        if ports_for(run_id)["gcs"] not in busy_gcs_ports:
            break
        run_id = new_run_id()
    return run_id


def ports_for(run_id: str) -> dict[str, int]:
    first, end, step = PORT_BLOCKS
    base = first + (zlib.crc32(run_id.encode()) % ((end - first) // step)) * step
    return {name: base + offset for name, offset in PORT_OFFSETS.items()}


def default_temp_dir(run_id: str) -> str:
    """Short and node-local: Ray's socket paths under it must fit AF_UNIX's 107 bytes."""
    return f"/tmp/rh-{run_id[-4:]}{ports_for(run_id)['gcs'] % 1000}"
