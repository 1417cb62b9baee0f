"""Autoscaling decisions for elastic clusters (pure: facts in, one decision out; no I/O).

Where it runs: a small process on the login node (`invoke autoscale --run ID`), not the head's
agent. Most sites do not let compute nodes submit jobs (no sbatch/qsub there, or no
credentials), and the login node is where `invoke grow` already runs; it reads Ray's own demand
signal through the dashboard with the run's token, and submits and releases blocks the way
`invoke grow` and `invoke shrink` do. Each period it asks `decide` what to do.

The rules, so that it neither flaps nor loops:
- between MIN and MAX blocks (live ones: queued or running, not released or failed);
- grow by one block when Ray's demand (tasks, actors, placement groups no node can fit) has
  been unmet for `up_after_s`, and no block is still waiting in the queue (it would bring the
  capacity already asked for);
- release one block at a time, the one idle longest, once it has been idle `idle_after_s`,
  and never while there is unmet demand;
- a block that failed to start counts against a backoff: no submission before
  `backoff_s * 2**(failures-1)` (at most `backoff_max_s`) has passed; one that runs resets it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from rayhpc.containers.errors import UserError


@dataclass(frozen=True)
class Policy:
    min_blocks: int
    max_blocks: int
    up_after_s: float = 30.0  # demand unmet this long: grow
    idle_after_s: float = 120.0  # a block idle this long: release it
    backoff_s: float = 60.0  # after a block that failed to start
    backoff_max_s: float = 900.0


@dataclass(frozen=True)
class BlockFacts:
    """One block as the autoscaler sees it now."""
    name: str
    state: str  # queued, running, failed (never ran, or died), released
    idle_since: float | None = None  # running and idle since (None: busy, or not running)


@dataclass(frozen=True)
class Memory:
    """What the autoscaler keeps between periods."""
    unmet_since: float | None = None
    failures: int = 0
    backoff_until: float = 0.0
    failed_seen: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Decision:
    action: str  # "grow", "release" or "wait"
    block: str = ""  # the block to release
    why: str = ""


def parse_autoscale(text: str) -> tuple[int, int]:
    """MIN:MAX blocks; UserError naming --autoscale otherwise."""
    low, sep, high = str(text).partition(":")
    if not sep or not low.strip().isdigit() or not high.strip().isdigit():
        raise UserError(f"--autoscale: {text!r}: give MIN:MAX blocks, e.g. 0:4")
    least, most = int(low), int(high)
    if least > most:
        raise UserError(f"--autoscale: MIN {least} is more than MAX {most}; give MIN <= MAX")
    if most < 1:
        raise UserError("--autoscale: MAX must be 1 or more")
    return least, most


def decide(policy: Policy, memory: Memory, now: float, unmet: int,
           blocks: list[BlockFacts]) -> tuple[Decision, Memory]:
    """The one thing to do now, given Ray's unmet demand (how many requests no node can fit)
    and the blocks; and what to remember for the next period."""
    memory = note_failures(policy, memory, now, blocks)
    live = [b for b in blocks if b.state in ("queued", "running")]
    queued = [b for b in live if b.state == "queued"]
    if unmet > 0:
        memory = replace(memory, unmet_since=memory.unmet_since if memory.unmet_since
                         is not None else now)
    else:
        memory = replace(memory, unmet_since=None)
    can_grow = len(live) < policy.max_blocks and not queued and now >= memory.backoff_until
    if len(live) < policy.min_blocks and can_grow:
        return Decision("grow", why=f"{len(live)} blocks, fewer than MIN "
                        f"{policy.min_blocks}"), memory
    if unmet > 0:
        waited = now - memory.unmet_since
        if waited >= policy.up_after_s and can_grow:
            return (Decision("grow", why=f"{unmet} requests unmet for {waited:.0f} s"),
                    replace(memory, unmet_since=None))
        why = ("MAX blocks reached" if len(live) >= policy.max_blocks else
               "a block is still queued" if queued else
               "backing off after a failed block" if now < memory.backoff_until else
               "demand not unmet long enough yet")
        return Decision("wait", why=why), memory
    idle = sorted((b for b in live if b.state == "running" and b.idle_since is not None
                   and now - b.idle_since >= policy.idle_after_s),
                  key=lambda b: (b.idle_since, b.name))
    if idle and len(live) > policy.min_blocks:
        return Decision("release", idle[0].name,
                        f"idle for {now - idle[0].idle_since:.0f} s"), memory
    return Decision("wait", why="nothing to do"), memory


def note_failures(policy: Policy, memory: Memory, now: float,
                  blocks: list[BlockFacts]) -> Memory:
    """Count blocks newly seen failed (and set the backoff); a running one resets the count."""
    new = [b.name for b in blocks if b.state == "failed" and b.name not in memory.failed_seen]
    if new:
        failures = memory.failures + len(new)
        wait = min(policy.backoff_max_s, policy.backoff_s * 2 ** (failures - 1))
        return replace(memory, failures=failures, backoff_until=now + wait,
                       failed_seen=memory.failed_seen | set(new))
    if memory.failures and any(b.state == "running" for b in blocks):
        return replace(memory, failures=0)
    return memory
