"""`rayhpc autoscale --run ID`: the login-node process that keeps a run between MIN and MAX
blocks (see `launcher.autoscale_policy` for where the decision runs and its rules).

Each period it reads Ray's own demand and per-node usage from the head's dashboard with the
run's token (`GET /api/cluster_status`: the report Ray's autoscaler monitor publishes; its
`loadMetricsReport` holds `resourceDemand`, `pgDemand` and `requestDemand` as [shape, count]
pairs, and `usageByNode` each node's [used, total] per resource, with a `node:<ip>` key), asks
`decide`, and grows or releases one block as `rayhpc grow` and `rayhpc shrink` do."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from rayhpc.common.user_error import UserError
from rayhpc.launcher.autoscale_policy import (
    BlockFacts,
    Memory,
    Policy,
    decide,
    lifetimes,
    replacement_submitted,
)
from rayhpc.launcher.contract import LEFT, current_attempt
from rayhpc.launcher.runs.grow_shrink import (
    BlockRequest,
    block_nodes,
    grow,
    require_growable,
    resolve_block,
    run_site,
    shrink,
)
from rayhpc.launcher.runs.jobs import ClusterError
from rayhpc.launcher.runs.run import Run
from rayhpc.launcher.runs.run_lock import sole_autoscaler

Say = Callable[[str], None]
UNREACHABLE_S = 60.0  # the dashboard may be away this long (a restart, a hiccup) before giving up


def unmet_requests(cluster_status: dict) -> int:
    """How many resource requests Ray could not place (tasks and actors, placement groups,
    `request_resources`), from the dashboard's cluster status."""
    report = (cluster_status.get("clusterStatus") or {}).get("loadMetricsReport") or {}
    return sum(int(entry[1]) for key in ("resourceDemand", "pgDemand", "requestDemand")
               for entry in report.get(key) or [] if isinstance(entry, list) and len(entry) > 1)


def busy_ips(cluster_status: dict) -> set[str]:
    """The addresses of the nodes that use any CPU or GPU now."""
    report = (cluster_status.get("clusterStatus") or {}).get("loadMetricsReport") or {}
    busy = set()
    for usage in (report.get("usageByNode") or {}).values():
        ips = [key.split(":", 1)[1] for key in usage if key.startswith("node:")
               and key != "node:__internal_head__" and key != "node:InternalHead"]
        used = any((usage.get(kind) or [0, 0])[0] > 0 for kind in ("CPU", "GPU"))
        if used and ips:
            busy.add(ips[0])
    return busy


def block_facts(run: Run, busy: set[str], idle_since: dict[str, float],
                started: dict[str, float], now: float, first_look: bool) -> list[BlockFacts]:
    """Each block's state for `decide`; ``idle_since`` and ``started`` are kept across
    periods. A block is running since the period it was first seen running; one running at
    the first look counts from its submission (earlier than its start: its replacement comes
    early rather than late)."""
    facts = []
    nodes = run.status.nodes
    for block in run.blocks():
        states = block_nodes(run, block.name)
        if block.released or LEFT in states.values() and "joined" not in states.values():
            state = "released"  # asked to leave, or left at its own walltime warning
        elif any(s == "joined" for s in states.values()):
            state = "running"
        elif run.backend.block_state(run, block):
            state = "queued"
        else:  # its job (or containers) gone with no node in the cluster: failed
            state = "failed"
        ips = {nodes[name].ip for name, s in states.items() if s == "joined" and name in nodes}
        if state == "running" and not ips & busy:
            idle_since.setdefault(block.name, now)
        else:
            idle_since.pop(block.name, None)
        if state == "running":
            started.setdefault(block.name, block.t_submit if first_look else now)
        else:
            started.pop(block.name, None)
        joined = sum(1 for s in states.values() if s == "joined")
        facts.append(BlockFacts(block.name, state, idle_since.get(block.name),
                                started.get(block.name), joined >= block.nodes))
    return facts


def autoscale(run: Run, site: str, policy: Policy, block: BlockRequest, say: Say,
              period_s: float = 5.0, stop: Callable[[], bool] = lambda: False,
              lifetime: tuple[str, str] = ("auto", "0")) -> None:
    """Until the run ends (or ``stop()``): one decision per period, acted on. A block the
    site cannot give (its queue, its walltime) is refused here, before anything runs, and so
    are a block lifetime and stagger (``lifetime``: `--block-lifetime`, `--lifetime-stagger`)
    that do not fit its walltime."""
    resolved, _ = resolve_block(run.spec, run_site(run, site), run.blocks(), block,
                                False, 0.0)
    lifetime_s, stagger_s = lifetimes(*lifetime, resolved.walltime_s, run.spec.stop_grace)
    policy = dataclasses.replace(policy, lifetime_s=lifetime_s, stagger_s=stagger_s)
    require_growable(run)
    client = run.client()
    with sole_autoscaler(run.paths.autoscale_lock, run.run_id):
        replaced = (f"; a block running {policy.lifetime_s:g} s (less up to "
                    f"{policy.stagger_s:g} s of stagger) is replaced" if policy.lifetime_s
                    else "")
        say(f"autoscaling run {run.run_id}: {policy.min_blocks} to {policy.max_blocks} blocks "
            f"of {block.nodes} node(s); grow after {policy.up_after_s:g} s of unmet demand, "
            f"release after {policy.idle_after_s:g} s idle{replaced}")
        _loop(run, site, policy, block, say, period_s, stop, client)


def _run_dir_gone(run: Run) -> bool:
    return not run.paths.exists(run.paths.spec)


def _why_not_on(run: Run) -> str:
    """Why the loop ends now ("" : it goes on): the run ended, is stopping, or its run
    directory is gone."""
    if _run_dir_gone(run):
        return f"the run directory {run.paths.dir} is gone"
    if run.exit_code is not None:
        return f"run {run.run_id} has ended"
    if run.paths.exists(run.paths.stop) and not run.restarting():
        return f"run {run.run_id} is stopping ({run.paths.read_stop_request() or 'stop file'})"
    return ""


def _loop(run: Run, site: str, policy: Policy, block: BlockRequest, say: Say,
          period_s: float, stop: Callable[[], bool], client) -> None:
    memory, idle_since, started = Memory(), {}, {}
    first_look, unreachable_since = True, None
    attempt, waiting = current_attempt(run.paths), False
    while not (why := _why_not_on(run)) and not stop():
        now = time.time()
        if run.restarting() or (current_attempt(run.paths) != attempt and not run.head):
            # `--restarts`: the cluster starts again; its blocks went with the old head. Wait
            # for the new head, then go on from nothing for it.
            if not waiting:
                say(f"run {run.run_id} is starting again: autoscaling waits for its next "
                    "attempt's cluster")
            waiting = True
            time.sleep(period_s)
            continue
        if current_attempt(run.paths) != attempt:
            attempt = current_attempt(run.paths)
            say(f"attempt {attempt} of run {run.run_id} is up: autoscaling goes on for it")
            client = run.client()
            memory, idle_since, started, unreachable_since = Memory(), {}, {}, None
        waiting = False
        try:
            status = client.json("GET", "/api/cluster_status").get("data") or {}
            unreachable_since = None
        except ClusterError:
            # The run ending (its stop asked: the dashboard goes first) ends this loop once
            # its exit code is written; a dashboard away for long is an error, unless the
            # run was asked to stop (then it ended without a word: a killed head).
            unreachable_since = unreachable_since or now
            if now - unreachable_since > UNREACHABLE_S:
                if run.paths.exists(run.paths.stop):
                    break
                if current_attempt(run.paths) > run.spec.restarts or \
                        run.backend.running(run) is False:
                    raise
                # A head lost without a word: its job may start again (`--restarts`).
            time.sleep(period_s)
            continue
        facts = block_facts(run, busy_ips(status), idle_since, started, now, first_look)
        first_look = False
        decision, memory = decide(policy, memory, now, unmet_requests(status), facts)
        try:
            if decision.action == "grow":
                say(f"grow: {decision.why}")
                grow(run, site, block, say)
            elif decision.action == "replace":
                say(f"replace {decision.block}: {decision.why}")
                new = grow(run, site, block, say)
                memory = replacement_submitted(memory, decision.block, new.name)
            elif decision.action == "release":
                say(f"release {decision.block}: {decision.why}")
                shrink(run, decision.block, say)
                idle_since.pop(decision.block, None)
        except UserError:
            if _why_not_on(run):  # a `rayhpc down` came between the look and the act
                continue
            raise
        time.sleep(period_s)
    if stop():
        kept = [b.name for b in run.blocks() if not b.released]
        say(f"autoscaling of run {run.run_id} stops (asked); the run stays up"
            + (f" with block(s) {', '.join(kept)} (`rayhpc shrink {run.flags} --block "
               "B` releases one)" if kept else ""))
    elif _run_dir_gone(run):
        raise ClusterError(f"{why}: autoscaling stops (the cluster's head stops too once it "
                           "sees its run directory gone)")
    else:
        say(f"{why or f'run {run.run_id} is stopping'}: autoscaling stops")
