"""The head's side of blocks (worker-only jobs that joined the running cluster, `rayhpc grow`):
count each block's nodes, and release a block when asked (its stop file in blocks/: `rayhpc
shrink`, or the block's own job script at its walltime warning).

A release drains the block's nodes first (Ray's DrainNode: no new work lands there; what runs
there may finish within the drain window), then tells their agents to stop over their control
connection; each stops Ray, keeps its logs and sends its final record, and the head records
the node as `left`, not lost. The cluster and its driver go on. The head's periodic cost is one
listing of blocks/ per second, whatever the number of blocks."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from rayhpc.launcher.contract import LEFT, drain_window

IDLE_CHECK_S = 1.0  # how often, during a drain, the drained nodes' free resources are asked
# Ray's DrainNode reason: "the node will be preempted" is accepted whatever runs there (the
# IDLE_TERMINATION reason is refused on a busy node). ray/core/generated/autoscaler_pb2
# DrainNodeReason; `ray drain-node --reason` (ray/scripts/scripts.py, Ray 2.60) takes the same.
DRAIN_REASON = "DRAIN_NODE_REASON_PREEMPTION"
LIVE_STATES = ("waiting", "starting", "joined")
# Ended without being released (a node stopped with the whole cluster is "stopped": not lost).
LOST_STATES = ("gone", "failed", "lost-head")


def block_counts(records: dict[str, dict]) -> dict[str, dict]:
    """Per grown block: its nodes by name and how many are in the cluster now (joined), left
    (released, drained and stopped) and were lost (gone without being released). Pure."""
    blocks: dict[str, dict] = {}
    for name, record in sorted(records.items()):
        block = record.get("block") or ""
        if not block:
            continue
        counts = blocks.setdefault(block, {"nodes": [], "joined": 0, "left": 0, "lost": 0})
        counts["nodes"].append(name)
        state = record.get("state")
        if state == LEFT:
            counts["left"] += 1
        elif state == "joined":
            counts["joined"] += 1
        elif state in LOST_STATES:
            counts["lost"] += 1
    return blocks


def release_order(records: dict[str, dict], block: str) -> list[str]:
    """The nodes to release of ``block``: those still in the cluster (joined ones first: they
    hold work and are drained; the ones still joining are only told to stop). Pure."""
    live = [(name, r) for name, r in sorted(records.items())
            if r.get("block") == block and r.get("state") in LIVE_STATES]
    return [name for name, r in live if r["state"] == "joined"] + \
        [name for name, r in live if r["state"] != "joined"]


def idle(available: dict[str, float], total: dict[str, float]) -> bool:
    """A node runs nothing: every CPU and GPU it has is free."""
    return all(available.get(key, 0.0) >= total.get(key, 0.0) for key in ("CPU", "GPU"))


class RayDrain:
    """Ray's side of a drain, in the head's agent (connected to its own GCS)."""

    def __init__(self, address: str):
        self.address = address

    def drain(self, node_ids: list[str], message: str, window_s: int) -> list[str]:
        """Ask the GCS to drain these nodes (hex ids); the refusals, in words."""
        import ray
        from ray.core.generated import autoscaler_pb2

        gcs = ray._raylet.GcsClient(address=self.address)
        reason = autoscaler_pb2.DrainNodeReason.Value(DRAIN_REASON)
        deadline_ms = int((time.time() + window_s) * 1000)
        refused = []
        for node_id in node_ids:
            accepted, why = gcs.drain_node(node_id, reason, message, deadline_ms)
            if not accepted:
                refused.append(f"{node_id[:8]}: {why}")
        return refused

    def busy(self, node_ids: list[str]) -> list[str]:
        """Which of these nodes still run something (one GCS call for all of them)."""
        from ray._private import state

        available = state.available_resources_per_node()
        total = state.total_resources_per_node()
        return [n for n in node_ids
                if n in total and not idle(available.get(n, {}), total[n])]


class BlockKeeper:
    """Releases blocks for the head: looks at blocks/ once a second (from the head's watch
    loop), drains and stops each released block's nodes in a thread of its own."""

    def __init__(self, head, drain: RayDrain | None = None):
        self.head = head
        self.drain = drain
        self.started: set[str] = set()  # blocks whose release began
        self._checked = 0.0

    def check(self) -> None:
        now = time.monotonic()
        if now - self._checked < 1.0:
            return
        self._checked = now
        for block in sorted(self.head.paths.released_blocks() - self.started):
            self.started.add(block)
            threading.Thread(target=self.release, args=(block,), daemon=True).start()

    def release(self, block: str, sleep: Callable[[float], None] = time.sleep) -> None:
        head = self.head
        try:
            who = head.paths.block_file(block, "stop").read_text().strip()
        except OSError:
            who = "a stop request"
        records = head.server.records()
        names = release_order(records, block)
        if not names:
            head.note(f"block {block}: released ({who}); none of its nodes is in the cluster")
            return
        head.note(f"block {block}: releasing {len(names)} node(s) ({who}): draining first")
        window = drain_window(head.spec.stop_grace)
        ids = self.ray_ids(records, names)
        if self.drain is not None and ids and window:
            try:
                refused = self.drain.drain(list(ids.values()), f"rayhpc: block {block} "
                                           f"released ({who})", window)
                if refused:
                    head.say(f"block {block}: Ray refused to drain: {'; '.join(refused)}")
                deadline = time.monotonic() + window
                while time.monotonic() < deadline and self.drain.busy(list(ids.values())):
                    sleep(IDLE_CHECK_S)
            except Exception as exc:  # noqa: BLE001 (a private Ray API: stop the nodes anyway)
                head.say(f"block {block}: drain failed ({exc}); stopping its nodes")
        head.server.release(names, f"block {block} released ({who})")

    @staticmethod
    def ray_ids(records: dict[str, dict], names: list[str]) -> dict[str, str]:
        """Ray's node id of each named node that joined (by its address)."""
        import ray

        by_ip = {records[name]["ip"]: name for name in names if records[name].get("ip")}
        found = {}
        with contextlib.suppress(Exception):
            for info in ray.nodes():
                name = by_ip.get(info.get("NodeManagerAddress", ""))
                if name and info.get("Alive"):
                    found[name] = info["NodeID"]
        return found
