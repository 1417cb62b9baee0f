"""The autoscaler's decisions (`launcher.autoscale_policy`, pure) on recorded demand sequences: a
simulated cluster where a submitted block waits in the queue, then runs (or fails), and goes
idle when Ray's demand is gone."""

from __future__ import annotations

import dataclasses

import pytest

from rayhpc.common.user_error import UserError
from rayhpc.launcher.autoscale_policy import (
    BlockFacts,
    Memory,
    Policy,
    decide,
    lifetimes,
    parse_autoscale,
    replacement_submitted,
)
from rayhpc.launcher.contract import Block, RunPaths, write_json
from rayhpc.launcher.runs.autoscale_loop import block_facts
from rayhpc.launcher.runs.grow_shrink import claim
from rayhpc.launcher.runs.run import Run
from tests.specs import make_spec

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


# Lifetime: blocks with a walltime, replaced ahead of it.

WALLTIME_S = 600  # each simulated block runs this long, then leaves by its walltime


def simulate_lifetimes(policy: Policy, end: float, unmet: int = 0, step: float = 5,
                       fails_after: int | None = None, queue_s: float = QUEUE_S,
                       complete_s: float = 0, never_complete: bool = False):
    """Run the autoscaler over blocks that queue ``queue_s``, run, and leave at their
    walltime (WALLTIME_S after they started) unless released first; blocks submitted after
    the first ``fails_after`` fail instead of running; every node of a block has joined
    ``complete_s`` after it started (``never_complete``: replacements never complete). Per
    step: (time, the decision, the
    live blocks (queued or running), the running ones); and each block's life."""
    memory, blocks, trace, count = Memory(), {}, [], 0
    t = 0.0
    while t <= end:
        facts = []
        for name, block in sorted(blocks.items(), key=lambda kv: int(kv[0][1:])):
            if block["state"] == "queued" and t - block["submitted"] >= queue_s:
                block["state"] = "failed" if block["fails"] else "running"
                block["started"] = t
            if block["state"] == "running" and t - block["started"] >= WALLTIME_S:
                block["state"], block["ended"] = "released", t
            running = block["state"] == "running"
            facts.append(BlockFacts(name, block["state"], None,
                                    block.get("started") if running else None,
                                    running and t - block["started"] >= block["complete_s"]))
        decision, memory = decide(policy, memory, t, unmet, facts)
        if decision.action in ("grow", "replace"):
            count += 1
            name = f"b{count + 1}"
            blocks[name] = {"submitted": t, "state": "queued", "fails":
                            fails_after is not None and count > fails_after,
                            "complete_s": complete_s}
            if decision.action == "replace":
                if never_complete:
                    blocks[name]["complete_s"] = float("inf")
                memory = replacement_submitted(memory, decision.block, name)
                blocks[name]["replaces"] = decision.block
        elif decision.action == "release":
            blocks[decision.block]["state"] = "released"
            blocks[decision.block]["released"] = t
        trace.append((t, decision, [n for n, b in blocks.items()
                                    if b["state"] in ("queued", "running")],
                      [n for n, b in blocks.items() if b["state"] == "running"]))
        t += step
    return trace, blocks


def test_a_block_past_its_lifetime_is_replaced_before_it_leaves_and_capacity_holds():
    policy = Policy(2, 2, lifetime_s=400)
    trace, blocks = simulate_lifetimes(policy, 3 * WALLTIME_S)
    replacements = [b for b in blocks.values() if "replaces" in b]
    assert len(replacements) >= 4  # each of the two first blocks, and theirs, over 3 walltimes
    for new in replacements:
        old = blocks[new["replaces"]]
        # Submitted at the old block's lifetime; the old one released once the new one runs,
        # never by its own walltime while it had a replacement coming.
        assert new["submitted"] - old["started"] >= 400
        if "started" in new and new["started"] <= 3 * WALLTIME_S - 5:
            assert old["released"] >= new["started"]
            assert "ended" not in old
    # Capacity holds: once the first two blocks ran, two blocks run at every step after.
    first_full = next(t for t, _, _, running in trace if len(running) == 2)
    assert all(len(running) >= 2 for t, _, _, running in trace if t >= first_full)
    # The bound: MAX+1 live blocks during a replacement, never more.
    assert max(len(live) for _, _, live, _ in trace) == policy.max_blocks + 1


def test_the_old_block_waits_for_every_node_of_its_replacement():
    # The replacement's nodes take 30 s to all join: the old block is released then, not at
    # the first; a replacement that never completes leaves the old block to its walltime.
    trace, blocks = simulate_lifetimes(Policy(1, 1, lifetime_s=300), 500, complete_s=30)
    new = next(b for b in blocks.values() if "replaces" in b)
    assert blocks[new["replaces"]]["released"] == new["started"] + 30
    trace, blocks = simulate_lifetimes(Policy(1, 1, lifetime_s=300), 700,
                                       never_complete=True)
    assert blocks["b2"]["ended"] == blocks["b2"]["started"] + WALLTIME_S
    # b2 got one replacement, no second; b3 (once b2 ended, an ordinary block) gets its own
    # past its lifetime.
    assert [b["replaces"] for b in blocks.values() if "replaces" in b] == ["b2", "b3"]


def test_live_blocks_stay_within_max_plus_one_under_demand_during_replacements():
    policy = Policy(0, 3, up_after_s=10, lifetime_s=300, stagger_s=100)
    trace, blocks = simulate_lifetimes(policy, 4 * WALLTIME_S, unmet=50)
    assert max(len(live) for _, _, live, _ in trace) <= policy.max_blocks + 1
    assert sum("replaces" in b for b in blocks.values()) >= 6


def test_the_stagger_spreads_the_replacements_of_blocks_started_together():
    # Three blocks started at the same moment (MIN 3); a quick queue so only the stagger
    # separates the replacements.
    together = simulate_lifetimes(Policy(3, 3, lifetime_s=400), 500, queue_s=0)[1]
    spread = simulate_lifetimes(Policy(3, 3, lifetime_s=400, stagger_s=150), 500,
                                queue_s=0)[1]
    def replaced_at(blocks):
        return sorted(b["submitted"] for b in blocks.values() if "replaces" in b)
    # Without a stagger they are due at once and go one after the other: submitted, joined
    # and the old one released (a step each), the next submitted.
    assert [later - earlier for earlier, later in zip(replaced_at(together),
                                                      replaced_at(together)[1:])] == [10, 10]
    gaps = [later - earlier for earlier, later in zip(replaced_at(spread),
                                                      replaced_at(spread)[1:])]
    # Spread over the stagger: the golden-ratio shares of b2, b3, b4 are 0.24, 0.85 and 0.47
    # of it (the blocks started 10 s apart, a step to submit and one to join).
    assert len(gaps) == 2 and min(gaps) >= 20 and sum(gaps) >= 80
    assert all(400 - 150 <= t <= 400 for t in replaced_at(spread))


def test_a_replacement_that_fails_backs_off_and_does_not_loop():
    policy = Policy(1, 1, lifetime_s=300, backoff_s=60, backoff_max_s=240)
    trace, blocks = simulate_lifetimes(policy, 1200, fails_after=1)
    tries = sorted(b["submitted"] for b in blocks.values() if "replaces" in b)
    gaps = [later - earlier for earlier, later in zip(tries, tries[1:])]
    # Each failed try is seen QUEUE_S after it; then 60, 120 s of backoff before the next.
    assert gaps[:2] == [QUEUE_S + 60, QUEUE_S + 120]
    assert len(tries) <= 6
    assert max(len(live) for _, _, live, _ in trace) <= 2
    # The old block is never released for a replacement that did not come: it runs to its
    # walltime.
    assert blocks["b2"]["ended"] == blocks["b2"]["started"] + WALLTIME_S


@pytest.mark.parametrize("lifetime, stagger, message", [
    ("1:00:00", "0", "--block-lifetime: 01:00:00 is not before the block's release"),
    ("50:00", "50:00", "--lifetime-stagger: 00:50:00 is not shorter than the block lifetime"),
    ("soon", "0", "--block-lifetime: 'soon' must be a walltime"),
    ("auto", "often", "--lifetime-stagger: 'often' must be a walltime"),
])
def test_lifetime_flags_are_checked(lifetime, stagger, message):
    with pytest.raises(UserError, match=message):
        lifetimes(lifetime, stagger, 3600, 30)
    # auto: the walltime less stop_grace and a fifth of it (at most 15 min); off: never.
    assert lifetimes("auto", "0", 3600, 30) == (3600 - 30 - 720, 0)
    assert lifetimes("auto", "0", 12 * 3600, 30) == (12 * 3600 - 30 - 900, 0)
    assert lifetimes("off", "0", 3600, 30) == (0, 0)
    assert lifetimes("50:00", "10:00", 3600, 30) == (3000, 600)
    with pytest.raises(UserError, match="--block-lifetime: auto leaves blocks of walltime "
                                        "00:00:35 no lifetime"):
        lifetimes("auto", "0", 35, 30)


def test_the_loop_reads_blocks_running_since_and_left_at_their_walltime(tmp_path):
    # The facts the loop gives `decide`, from a run directory as the head writes it: b2
    # running (its start: its submission at the first look, else the period it is first seen
    # running), b3 gone at its own walltime warning (its nodes `left`, no record of a
    # release): released, not failed (which would count against the backoff).
    spec = dataclasses.replace(make_spec("local"), shared=tmp_path)
    run = Run(RunPaths(spec.run_dir), spec)
    run.paths.dir.mkdir(parents=True)
    for name in ("b2", "b3", "b4"):
        claim(run, Block(name=name, nodes=1, group="", image="", walltime_s=600, t_submit=7.0))
    nodes = {"b2-worker-1": {"state": "joined", "block": "b2", "ip": "10.0.0.2"},
             "b3-worker-1": {"state": "left", "block": "b3", "ip": "10.0.0.3"},
             "b4-worker-1": {"state": "joined", "block": "b4", "ip": "10.0.0.4"}}
    write_json(run.paths.status, {"nodes": nodes})
    idle_since, started = {}, {}
    facts = block_facts(run, {"10.0.0.4"}, idle_since, started, 100.0, first_look=True)
    assert facts == [BlockFacts("b2", "running", 100.0, 7.0, complete=True),
                     BlockFacts("b3", "released"),
                     BlockFacts("b4", "running", None, 7.0, complete=True)]
    nodes["b5-worker-1"] = {"state": "joined", "block": "b5", "ip": "10.0.0.5"}
    claim(run, Block(name="b5", nodes=2, group="", image="", walltime_s=600, t_submit=90.0))
    write_json(run.paths.status, {"nodes": nodes})
    facts = block_facts(run, set(), idle_since, started, 105.0, first_look=False)
    assert facts[-1] == BlockFacts("b5", "running", 105.0, 105.0, complete=False)  # 1 of 2
    assert facts[0] == BlockFacts("b2", "running", 100.0, 7.0, True)  # kept across periods
