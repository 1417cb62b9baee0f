"""Autoscaling decisions for elastic clusters (pure: facts in, one decision out; no I/O).

Where it runs: a small process on the login node (`rayhpc autoscale --run ID`), not the head's
agent. Most sites do not let compute nodes submit jobs (no sbatch/qsub there, or no
credentials), and the login node is where `rayhpc grow` already runs; it reads Ray's own demand
signal through the dashboard with the run's token, and submits and releases blocks the way
`rayhpc grow` and `rayhpc shrink` do. Each period it asks `decide` what to do.

The rules, so that it neither flaps nor loops:
- between MIN and MAX blocks (live ones: queued or running, not released or failed);
- grow by one block when Ray's demand (tasks, actors, placement groups no node can fit) has
  been unmet for `up_after_s`, and no block is still waiting in the queue (it would bring the
  capacity already asked for);
- release one block at a time, the one idle longest, once it has been idle `idle_after_s`,
  and never while there is unmet demand;
- a block that failed to start counts against a backoff: no submission before
  `backoff_s * 2**(failures-1)` (at most `backoff_max_s`) has passed; a block that then
  runs resets it;
- lifetime (dask-jobqueue's `--lifetime`/`--lifetime-stagger`): a running block older than its
  lifetime (`lifetime_s` less its share of `stagger_s`, spread by its number so that blocks
  started together are replaced apart) gets a replacement submitted ahead; once every node of
  the replacement joined, the old block is released (drained). One replacement at a time, and the
  block being replaced does not count towards MAX: at most MAX+1 blocks are live during a
  replacement, never more. A replacement that fails counts against the backoff like any block;
  the old block is replaced again only after it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from rayhpc.common.user_error import UserError
from rayhpc.launcher.times import format_walltime, parse_walltime


@dataclass(frozen=True)
class Policy:
    min_blocks: int
    max_blocks: int
    up_after_s: float = 30.0  # demand unmet this long: grow
    idle_after_s: float = 120.0  # a block idle this long: release it
    backoff_s: float = 60.0  # after a block that failed to start
    backoff_max_s: float = 900.0
    lifetime_s: float = 0.0  # a block running this long gets a replacement (0: never)
    stagger_s: float = 0.0  # replacements come up to this much earlier, spread per block

    def lifetime(self, block: str) -> float:
        """The block's own lifetime: `lifetime_s` less a share of `stagger_s` that differs
        from block to block (the golden-ratio sequence over its number: consecutive blocks,
        the ones started together, land far apart in the stagger)."""
        digits = block[1:]
        number = int(digits) if digits.isdigit() else sum(map(ord, block))
        return self.lifetime_s - self.stagger_s * ((number * GOLDEN) % 1.0)


GOLDEN = 0.6180339887498949


@dataclass(frozen=True)
class BlockFacts:
    """One block as the autoscaler sees it now."""
    name: str
    state: str  # queued, running, failed (never ran, or died), released
    idle_since: float | None = None  # running and idle since (None: busy, or not running)
    started: float | None = None  # running since (None: not running)
    complete: bool = False  # every node of it joined


@dataclass(frozen=True)
class Memory:
    """What the autoscaler keeps between periods."""
    unmet_since: float | None = None
    failures: int = 0
    backoff_until: float = 0.0
    failed_seen: frozenset[str] = frozenset()
    running_seen: frozenset[str] = frozenset()
    replacing: tuple[str, str] | None = None  # (old block, its replacement) in flight


def replacement_submitted(memory: Memory, old: str, new: str) -> Memory:
    """What to remember once the replacement ``new`` of block ``old`` is submitted."""
    return replace(memory, replacing=(old, new))


@dataclass(frozen=True)
class Decision:
    action: str  # "grow", "replace" (grow for `block`), "release" or "wait"
    block: str = ""  # the block to release, or to replace
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


def lifetimes(lifetime: str, stagger: str, walltime_s: int, stop_grace: int
              ) -> tuple[float, float]:
    """`--block-lifetime` and `--lifetime-stagger` in seconds, for blocks of ``walltime_s``.

    The lifetime defaults ("auto") to the walltime less the block's own release time
    (stop_grace) and a margin for the replacement's queue wait and start (a fifth of the
    walltime, at most 15 minutes); "off" never replaces. It must end before the block's
    walltime warning, and the stagger must be shorter than it. UserError naming the flag."""
    warning = walltime_s - stop_grace
    text = str(lifetime).strip().lower()
    if text == "off":
        seconds = 0.0
    elif text == "auto":
        seconds = float(warning - min(900, walltime_s // 5))
        if seconds <= 0:
            raise UserError(f"--block-lifetime: auto leaves blocks of walltime "
                            f"{format_walltime(walltime_s)} no lifetime (stop_grace {stop_grace}"
                            " s and a fifth of it for the replacement); give a longer "
                            "--walltime, a lifetime, or off")
    else:
        try:
            seconds = float(parse_walltime(text))
        except ValueError as exc:
            raise UserError(f"--block-lifetime: {lifetime!r} {exc}; or auto, or off") from None
        if seconds >= warning:
            raise UserError(f"--block-lifetime: {format_walltime(int(seconds))} is not before "
                            f"the block's release at {format_walltime(warning)} (its walltime "
                            f"{format_walltime(walltime_s)} less stop_grace {stop_grace} s); "
                            "give a shorter lifetime, or a longer --walltime")
    try:
        spread = 0.0 if str(stagger).strip() == "0" else float(parse_walltime(stagger))
    except ValueError as exc:
        raise UserError(f"--lifetime-stagger: {stagger!r} {exc}; or 0") from None
    if seconds and spread >= seconds:
        raise UserError(f"--lifetime-stagger: {format_walltime(int(spread))} is not shorter "
                        f"than the block lifetime ({format_walltime(max(0, int(seconds)))}); "
                        "give a shorter stagger or a longer --walltime")
    return seconds, spread


def decide(policy: Policy, memory: Memory, now: float, unmet: int,
           blocks: list[BlockFacts]) -> tuple[Decision, Memory]:
    """The one thing to do now, given Ray's unmet demand (how many requests no node can fit)
    and the blocks; and what to remember for the next period."""
    memory = note_failures(policy, memory, now, blocks)
    live = [b for b in blocks if b.state in ("queued", "running")]
    decision, memory = replacement_step(memory, {b.name: b for b in blocks})
    if decision is not None:
        return decision, memory
    leaving = {memory.replacing[0]} if memory.replacing else set()
    counted = [b for b in live if b.name not in leaving]  # the one being replaced: not
    queued = [b for b in live if b.state == "queued"]
    if unmet > 0:
        memory = replace(memory, unmet_since=memory.unmet_since if memory.unmet_since
                         is not None else now)
    else:
        memory = replace(memory, unmet_since=None)
    backing_off = now < memory.backoff_until
    can_grow = len(counted) < policy.max_blocks and not queued and not backing_off
    if len(counted) < policy.min_blocks and can_grow:
        return Decision("grow", why=f"{len(counted)} blocks, fewer than MIN "
                        f"{policy.min_blocks}"), memory
    due = sorted((b for b in live if b.state == "running" and b.started is not None
                  and policy.lifetime_s > 0 and now - b.started >= policy.lifetime(b.name)),
                 key=lambda b: (b.started, b.name))
    if due and not memory.replacing and not backing_off:
        return Decision("replace", due[0].name, f"running {now - due[0].started:.0f} s, past "
                        f"its lifetime {policy.lifetime(due[0].name):.0f} s"), memory
    if unmet > 0:
        waited = now - memory.unmet_since
        if waited >= policy.up_after_s and can_grow:
            return (Decision("grow", why=f"{unmet} requests unmet for {waited:.0f} s"),
                    replace(memory, unmet_since=None))
        why = ("MAX blocks reached" if len(counted) >= policy.max_blocks else
               "a block is still queued" if queued else
               "backing off after a failed block" if backing_off else
               "demand not unmet long enough yet")
        return Decision("wait", why=why), memory
    idle = sorted((b for b in counted if b.state == "running" and b.idle_since is not None
                   and now - b.idle_since >= policy.idle_after_s),
                  key=lambda b: (b.idle_since, b.name))
    if idle and len(counted) > policy.min_blocks:
        return Decision("release", idle[0].name,
                        f"idle for {now - idle[0].idle_since:.0f} s"), memory
    return Decision("wait", why="nothing to do"), memory


def replacement_step(memory: Memory, blocks: dict[str, BlockFacts]
                     ) -> tuple[Decision | None, Memory]:
    """The replacement in flight: release the old block once every node of its replacement
    joined (one that never completes leaves the old one to its walltime warning); forget it
    when the old block is gone anyway (the replacement is then an ordinary block) or the
    replacement failed or was released (the backoff holds the next try)."""
    if not memory.replacing:
        return None, memory
    old, new = memory.replacing
    old_block, new_block = blocks.get(old), blocks.get(new)
    if old_block is None or old_block.state not in ("queued", "running"):
        return None, replace(memory, replacing=None)
    if new_block is None or new_block.state in ("failed", "released"):
        return None, replace(memory, replacing=None)
    if new_block.state == "running" and new_block.complete:
        return (Decision("release", old, f"past its lifetime; every node of its replacement "
                         f"{new} joined"), replace(memory, replacing=None))
    return None, memory


def note_failures(policy: Policy, memory: Memory, now: float,
                  blocks: list[BlockFacts]) -> Memory:
    """Count blocks newly seen failed (and set the backoff); a block newly seen running resets
    the count (one that ran all along does not: a block being replaced keeps running while its
    replacements fail)."""
    new = [b.name for b in blocks if b.state == "failed" and b.name not in memory.failed_seen]
    running = frozenset(b.name for b in blocks if b.state == "running")
    started = running - memory.running_seen
    memory = replace(memory, running_seen=memory.running_seen | running)
    if new:
        failures = memory.failures + len(new)
        wait = min(policy.backoff_max_s, policy.backoff_s * 2 ** (failures - 1))
        return replace(memory, failures=failures, backoff_until=now + wait,
                       failed_seen=memory.failed_seen | set(new))
    if memory.failures and started:
        return replace(memory, failures=0)
    return memory
