"""Who is in the cluster while it runs (the head's watch): workers that leave it (a killed
container, a dead host, a block that died), blocks that join and leave (`node.block_keeper`).

A worker's agent closing its connection says it at once; Ray's node list, asked rarely, catches
a node whose Ray died under a living agent. status.json is rewritten on a change, at most once a
second or less often on big clusters (a block of 128 joining is 128 changes, not 128 writes)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from rayhpc.launcher.contract import LEFT
from rayhpc.launcher.node.report import lost_nodes, nodes_poll_s


def in_cluster(records: dict[str, dict]) -> dict[str, str]:
    """ip -> name of the workers in the cluster now (joined, not being released: a released
    node leaves Ray before its agent ends)."""
    return {r["ip"]: name for name, r in records.items()
            if r["ip"] and r["state"] == "joined" and not r["leaving"]}


def watch_nodes(head, running: Callable[[], bool]) -> None:
    """Each wake-up costs the changes, not the cluster: who is gone or left comes from the
    control server's index by state; every record is read only on a loss and at Ray's list."""
    server = head.server
    # Every worker here now is in the cluster (Ray confirmed the join; an agent's own "joined"
    # may still be on its way); a block's nodes count once they say they joined.
    confirmed = set(server.records())
    next_gcs = time.monotonic() + nodes_poll_s(head.spec.nodes, during_driver=True)
    version, shown, pending, lost_by_ray = -1, -2, False, set()
    while running():
        head.blocks.check()  # blocks asked to leave (one listing of blocks/ a second)
        if time.monotonic() >= next_gcs:
            next_gcs = time.monotonic() + nodes_poll_s(head.spec.nodes, True)
            try:
                alive = {n["NodeManagerAddress"] for n in head.alive_nodes()}
                lost_by_ray |= set(lost_nodes(in_cluster(server.records()), alive))
            except Exception as exc:  # noqa: BLE001 (the GCS is the head's own)
                head.say(f"cannot list the nodes: {exc}")
        lost = server.names("gone") | (lost_by_ray - server.names(LEFT))
        newly = sorted(lost - set(head.timing.nodes_lost))
        if newly:
            records = server.records()
            for name in newly:
                block = records[name]["block"] if name in records else ""
                head.note(f"node {name}{f' (block {block})' if block else ''} left the "
                          "cluster; the run goes on without it")
        head.timing.nodes_lost = sorted(lost)
        joined = 1 + len((confirmed | server.names("joined")) - lost - server.names(LEFT))
        if version != shown or pending:
            newly_lost = bool(lost - set(head.status.lost))
            with contextlib.suppress(OSError):
                # At once when a node was lost (the user is told); else at the status rate.
                pending = not head.publish_status(force=newly_lost, joined=joined,
                                                  lost=sorted(lost))
            shown = version
        version = server.wait(version, timeout=1.0)
