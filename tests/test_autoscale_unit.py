"""The autoscaler's decisions (`launcher.autoscale`, pure) on recorded demand sequences: a
simulated cluster where a submitted block waits in the queue, then runs (or fails), and goes
idle when Ray's demand is gone."""

from __future__ import annotations

import pytest

from rayhpc.containers.errors import UserError
from rayhpc.launcher.autoscale import BlockFacts, Memory, Policy, decide, parse_autoscale

QUEUE_S = 20  # a submitted block runs this long after its submission


def simulate(policy: Policy, demand: list[tuple[float, int]], end: float, step: float = 5,
             fails: bool = False) -> list[tuple[float, str, str]]:
    """Run the autoscaler every ``step`` s over a demand sequence [(from time, unmet)]; the
    actions taken, with their times. A block runs QUEUE_S after submission (``fails``: it
    fails then instead) and is idle whenever nothing is unmet."""
    memory, blocks, actions = Memory(), {}, []
    t = 0.0
    while t <= end:
        unmet = [u for since, u in demand if since <= t][-1]
        facts = []
        for name, (submitted, state, idle_since) in sorted(blocks.items()):
            if state == "queued" and t - submitted >= QUEUE_S:
                state = "failed" if fails else "running"
            if state == "running":
                idle_since = (idle_since if idle_since is not None else t) if unmet == 0 \
                    else None
            blocks[name] = (submitted, state, idle_since)
            facts.append(BlockFacts(name, state, idle_since))
        decision, memory = decide(policy, memory, t, unmet, facts)
        if decision.action == "grow":
            blocks[f"b{len(blocks) + 2}"] = (t, "queued", None)
            actions.append((t, "grow", ""))
        elif decision.action == "release":
            submitted, _, _ = blocks[decision.block]
            blocks[decision.block] = (submitted, "released", None)
            actions.append((t, "release", decision.block))
        t += step
    return actions


def test_demand_that_comes_and_goes_quickly_never_grows():
    # Unmet for 10 s, met for 10 s, again and again: never unmet for up_after_s (30 s).
    demand = [(t, 5 if (t // 10) % 2 == 0 else 0) for t in range(0, 600, 10)]
    assert simulate(Policy(0, 4, up_after_s=30), demand, 600) == []


def test_lasting_demand_grows_one_block_at_a_time_up_to_max():
    actions = simulate(Policy(0, 3, up_after_s=30), [(0, 100)], 1000)
    assert [a for _, a, _ in actions] == ["grow"] * 3  # MAX, never more
    times = [t for t, _, _ in actions]
    assert times[0] == 30  # after the demand was unmet 30 s
    # Each next one only once the previous left the queue and demand was unmet 30 s again.
    assert all(later - earlier >= QUEUE_S for earlier, later in zip(times, times[1:]))


def test_idle_blocks_are_released_one_at_a_time_down_to_min():
    actions = simulate(Policy(1, 3, up_after_s=10, idle_after_s=60),
                       [(0, 50), (200, 0)], 600)
    grows = [t for t, a, _ in actions if a == "grow"]
    releases = [(t, b) for t, a, b in actions if a == "release"]
    assert len(grows) == 3
    assert len(releases) == 2  # MIN 1 stays
    assert all(t >= 200 + 60 for t, _ in releases)  # idle 60 s after the demand went
    assert releases[0][0] < releases[1][0]


def test_no_release_while_demand_is_unmet_even_when_idle_long():
    # Demand returns before idle_after_s: the block is kept (no release-then-grow flapping).
    demand = [(0, 10), (100, 0), (150, 10), (250, 0), (300, 10)]
    actions = simulate(Policy(0, 1, up_after_s=10, idle_after_s=60), demand, 400)
    assert [a for _, a, _ in actions] == ["grow"]


def test_blocks_that_fail_to_start_back_off_exponentially():
    policy = Policy(0, 4, up_after_s=10, backoff_s=60, backoff_max_s=200)
    actions = simulate(policy, [(0, 10)], 1000, fails=True)
    times = [t for t, a, _ in actions if a == "grow"]
    gaps = [later - earlier for earlier, later in zip(times, times[1:])]
    # Each failure is seen QUEUE_S after its submission; then 60, 120, 200, 200 s of backoff.
    assert gaps[:4] == [QUEUE_S + 60, QUEUE_S + 120, QUEUE_S + 200, QUEUE_S + 200]
    assert len(times) < 10  # no submission loop


def test_min_blocks_are_kept_without_demand():
    actions = simulate(Policy(2, 4), [(0, 0)], 200)
    assert [(a) for _, a, _ in actions] == ["grow", "grow"]


@pytest.mark.parametrize("text, message", [
    ("3:1", "--autoscale: MIN 3 is more than MAX 1"),
    ("4", "--autoscale: '4': give MIN:MAX"),
    ("0:0", "--autoscale: MAX must be 1 or more"),
])
def test_autoscale_bounds_are_checked(text, message):
    with pytest.raises(UserError, match=message):
        parse_autoscale(text)
    assert parse_autoscale("0:4") == (0, 4)
