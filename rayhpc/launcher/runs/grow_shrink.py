"""Elastic clusters: `rayhpc grow` adds a block (a worker-only batch job, or on the local site
a compose project on the run's network) to a running cluster; `rayhpc shrink` releases one.

A block's nodes reach the head's agent at the address the launcher writes into the block's
job script (from head.json, read once here), show the run's token, and join Ray like the
launch's own workers; the head counts them per block in status.json. To release a block the
launcher (or the block's own job script at its walltime warning) writes blocks/<b>.stop; the
head drains its nodes, then stops them (they leave as `left`). See `launcher.node.block_keeper`.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rayhpc.common.user_error import UserError
from rayhpc.launcher.backends.bundle import node_program
from rayhpc.launcher.contract import (
    FIRST_GROWN_BLOCK,
    LEFT,
    Block,
    LaunchSpec,
    NodeGroup,
    atomic_write,
    block_name,
    block_node_name,
    create_exclusive,
    drain_window,
    json_text,
    remove,
    write_json,
)
from rayhpc.launcher.resolve.config import Site, check_groups, load_site
from rayhpc.launcher.resolve.groups import parse_group_flag, resolved_groups
from rayhpc.launcher.resolve.queues import Queue, choose_queue
from rayhpc.launcher.resolve.values import check_one_line
from rayhpc.launcher.runs.run import Run
from rayhpc.launcher.runs.run_lock import changing
from rayhpc.launcher.times import format_walltime, parse_walltime

Say = Callable[[str], None]
SHRINK_WAIT_S = 5  # beyond the drain window and stop_timeout: for the agents' last words


@dataclass(frozen=True)
class BlockRequest:
    """What `rayhpc grow` was asked for (None: the run's own, or the site's)."""
    nodes: int | None = None
    group: str | None = None
    walltime: str | None = None
    queue: str | None = None


def next_block_number(existing: Sequence[Block]) -> int:
    return max((b.number + 1 for b in existing), default=FIRST_GROWN_BLOCK)


def block_group(spec: LaunchSpec, text: str | None, nodes: int | None, site: Site
                ) -> tuple[NodeGroup | None, int]:
    """The block's node group and node count: one of the run's groups by name, or a new one
    (NAME:NODES[:IMAGE][,KEY=VALUE...], as `rayhpc launch --group`); no group for a run
    without groups. UserError naming the flag."""
    if text and ":" in text:
        group = parse_group_flag(text)
        if spec.group(group.name) is not None:
            raise UserError(f"--group: run {spec.run_id} has a group {group.name} already; "
                            f"give `--group {group.name} --nodes N`, or name the new one "
                            "otherwise")
        if nodes is not None and nodes != group.nodes:
            raise UserError(f"--nodes: the group gives the block's node count "
                            f"({group.nodes}); drop --nodes")
        check_groups((group,), site, "--group")
        (group,) = resolved_groups((group,), spec.image, spec.num_gpus)
        return group, group.nodes
    if text:
        group = spec.group(text)
        if group is None:
            known = ", ".join(g.name for g in spec.groups) or "none"
            raise UserError(f"--group: run {spec.run_id} has no group {text!r} (its groups: "
                            f"{known}); give one of them, or a new one as NAME:NODES[:IMAGE]")
        if group.head:
            raise UserError(f"--group: {text} is the head's group; a block adds workers: give "
                            "another group")
    elif spec.groups:
        raise UserError(f"--group: run {spec.run_id} has node groups "
                        f"({', '.join(g.name for g in spec.groups)}): say which the block's "
                        "nodes are (or give a new group as NAME:NODES[:IMAGE])")
    else:
        group = None
    if nodes is None or nodes < 1:
        raise UserError("--nodes: give the block's node count (1 or more)")
    return (dataclasses.replace(group, nodes=nodes) if group else None), nodes


def block_queue(queues: list[Queue], asked: str | None, nodes: int, walltime_s: int,
                site: Site) -> str:
    """The block's queue: the one asked for, which must take the block where the site's table
    knows it, else the first automatic one that does. UserError otherwise (nothing is
    submitted)."""
    if asked:
        check_one_line(asked, "--queue")
        known = next((q for q in queues if q.name == asked), None)
        problem = known.problem(nodes, walltime_s) if known else ""
        if problem:
            raise UserError(f"--queue: {known.describe()} {problem}; change --nodes or "
                            f"--walltime, or give another queue (`rayhpc sites --site "
                            f"{site.name}` lists them)")
        return asked
    return choose_queue(queues, None, nodes, walltime_s, site.name, site.queue_source) or ""


def resolve_block(spec: LaunchSpec, site: Site, existing: Sequence[Block],
                  request: BlockRequest, node_names: bool, now: float
                  ) -> tuple[Block, LaunchSpec]:
    """The block to submit and the spec its nodes read (the run's, with the block's group
    when it is a new one). Pure: UserError naming the flag for anything that does not fit."""
    group, nodes = block_group(spec, request.group, request.nodes, site)
    try:
        walltime_s = (parse_walltime(request.walltime) if request.walltime is not None
                      else spec.walltime_s)
    except ValueError as exc:
        raise UserError(f"--walltime: {exc}") from None
    if spec.stop_grace >= walltime_s:
        raise UserError(f"--walltime: {format_walltime(walltime_s)} leaves the block no time: "
                        f"its nodes are released {spec.stop_grace} s (stop_grace) before its "
                        "end; give a longer walltime")
    queue = block_queue(list(site.queues), request.queue, nodes, walltime_s, site)
    name = block_name(next_block_number(existing))
    names = [block_node_name(name, f"worker-{i}") for i in range(1, nodes + 1)] \
        if node_names else []
    block = Block(name=name, nodes=nodes, group=group.name if group else "",
                  image=group.image if group else spec.image, walltime_s=walltime_s,
                  t_submit=now, queue=queue, node_names=names)
    if group is not None and spec.group(group.name) is None:
        spec = dataclasses.replace(spec, groups=(*spec.groups, group))
    return block, spec


def run_site(run: Run, site_name: str) -> Site:
    """The run's site: --site where it names the run's, else the run's own by name."""
    site = load_site(site_name)
    if site.name == run.spec.site:
        return site
    try:
        return load_site(run.spec.site)
    except UserError:
        raise UserError(f"--site: run {run.run_id} was launched on site {run.spec.site}, not "
                        f"{site.name}; give --site with {run.spec.site}'s name or file") from None


def require_growable(run: Run) -> str:
    """The head's address of a run that can take a block now; UserError otherwise."""
    run.require_unfinished()
    if run.paths.exists(run.paths.stop):
        who = run.paths.read_stop_request() or "its stop file"
        raise UserError(f"--run: run {run.run_id} is stopping ({who}): no block joins it any "
                        "more")
    problem = run.backend.blocks_problem(run.spec)
    if problem:
        raise UserError(f"--run: run {run.run_id}: {problem}")
    head = run.head
    if head is None or not head.ip:
        raise UserError(f"--run: the head of run {run.run_id} is not up yet (no "
                        f"{run.paths.head.name}); grow it once it is (`rayhpc status "
                        f"{run.flags}`)")
    if run.backend.running(run) is False:
        raise UserError(f"--run: run {run.run_id} is not running any more (its nodes are gone "
                        f"without an exit code); `rayhpc down {run.flags}` records it")
    return head.ip


def make_blocks_dir(run: Run) -> None:
    """blocks/, owned as the run directory is: a block's nodes write its stop file there at
    its walltime (where we are root and the containers are not, they could not otherwise)."""
    try:
        run.paths.blocks.mkdir()
    except FileExistsError:
        return
    owner = run.paths.dir.stat()
    if os.geteuid() == 0:
        os.chown(run.paths.blocks, owner.st_uid, owner.st_gid)
        os.chmod(run.paths.blocks, stat.S_IMODE(owner.st_mode))


def claim(run: Run, block: Block) -> Block:
    """Create the block's record (O_EXCL: two grows at once get two blocks); the next free
    name if this one was taken meanwhile."""
    make_blocks_dir(run)
    while not create_exclusive(run.paths.block_file(block.name, "json"),
                               json_text(block.to_json()).encode(), run.paths.dir):
        number = block.number + 1
        block = dataclasses.replace(block, name=block_name(number), node_names=[
            block_node_name(block_name(number), n.split("-", 1)[1])
            for n in block.node_names])
    return block


def grow(run: Run, site_name: str, request: BlockRequest, say: Say) -> Block:
    """`rayhpc grow`: submit a block that joins the run's cluster; its record. Under the
    run's change lock: a `rayhpc down` either comes first (the block is refused) or sees the
    block (and cancels it)."""
    site = run_site(run, site_name)
    run.backend.check_queue(site.name, request.queue)
    with changing(run.paths.change_lock, "rayhpc grow", say):
        return _grow(run, site, request, say)


def _grow(run: Run, site: Site, request: BlockRequest, say: Say) -> Block:
    head_ip = require_growable(run)
    backend = run.backend
    block, spec = resolve_block(run.spec, site, run.blocks(), request,
                                node_names=bool(run.spec.node_names), now=time.time())
    block = claim(run, block)
    files = [run.paths.block_file(block.name, kind) for kind in ("json", "pyz", "sh", "yaml")]
    try:
        atomic_write(run.paths.block_file(block.name, "pyz"),
                     node_program(json_text(spec.to_json())), root=run.paths.dir)
        job_id = backend.submit_block(spec, site, block, head_ip)
    except BaseException:
        for path in files:
            remove(path, run.paths.dir)
        raise
    block = dataclasses.replace(block, job_id=job_id)
    write_json(run.paths.block_file(block.name, "json"), block.to_json(), run.paths.dir)
    where = f"job {job_id}" if job_id else "containers " + ", ".join(block.node_names)
    of_group = f" of group {block.group}" if block.group else ""
    say(f"block {block.name}: {block.nodes} node(s){of_group} joining run {run.run_id} "
        f"({where}, walltime {format_walltime(block.walltime_s)}); `rayhpc status "
        f"{run.flags}` shows them, `rayhpc shrink {run.flags} --block {block.name}` "
        "releases them")
    return block


def find_block(run: Run, name: str | None) -> Block:
    blocks = run.blocks()
    found = next((b for b in blocks if b.name == name), None)
    if found is None:
        raise UserError(f"--block: run {run.run_id} has no block {name!r} (its blocks: "
                        f"{', '.join(b.name for b in blocks) or 'none'}; `rayhpc grow` adds one)")
    return found


def release(run: Run, block: Block, who: str) -> Block:
    """Ask the head to release the block (its stop file) and record who asked."""
    run.paths.request_block_stop(block.name, who)
    return mark_released(run, block, who)


def mark_released(run: Run, block: Block, who: str) -> Block:
    """Record that the block is to leave, and who said so (`rayhpc status`, the autoscaler)."""
    if not block.released:
        block = dataclasses.replace(block, released=who)
        write_json(run.paths.block_file(block.name, "json"), block.to_json(), run.paths.dir)
    return block


def shrink(run: Run, block_id: str | None, say: Say, timeout: float | None = None) -> int:
    """`rayhpc shrink`: the head drains the block's nodes and stops them; wait until they
    left (their logs kept), then remove the block's job or containers. How many left. The
    release is made under the run's change lock (a second shrink of the block, or a `down`,
    sees it); the wait is not."""
    with changing(run.paths.change_lock, "rayhpc shrink", say):
        run.require_unfinished()
        block = find_block(run, block_id)
        backend = run.backend
        in_cluster = {n: s for n, s in block_nodes(run, block.name).items()
                      if s not in (LEFT, "gone")}
        if block.released and in_cluster:
            raise UserError(f"--block: block {block.name} of run {run.run_id} is being "
                            f"released already ({block.released}); `rayhpc status "
                            f"{run.flags}` shows when its nodes have left")
        if block.released and not backend.block_state(run, block):
            raise UserError(f"--block: block {block.name} of run {run.run_id} was released "
                            f"already ({block.released}) and has no node left")
        pending = backend.block_pending(run, block)
        block = release(run, block, "rayhpc shrink")
        if pending:  # queued: no node of it to drain
            backend.cancel_block(run, block, say)
            say(f"block {block.name}: removed from the queue before it started")
            return 0
    if in_cluster:
        say(f"block {block.name}: asked the head to drain and release its nodes")
    timeout = timeout or (drain_window(run.spec.stop_grace) + run.spec.stop_timeout
                          + SHRINK_WAIT_S)
    deadline = time.monotonic() + timeout
    while True:
        nodes = block_nodes(run, block.name)
        if nodes and all(state in (LEFT, "gone", "stopped", "failed", "lost-head")
                         for state in nodes.values()):
            break
        if not in_cluster or run.exit_code is not None or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    left = sum(1 for state in nodes.values() if state == LEFT)
    backend.cancel_block(run, block, say)
    say(f"block {block.name}: {left} of {block.nodes} node(s) left the cluster drained"
        + (f"; not left: {', '.join(n for n, s in nodes.items() if s != LEFT)}"
           if left < len(nodes) else ""))
    return left


def block_nodes(run: Run, block: str) -> dict[str, str]:
    """The block's nodes and their states as the head last wrote them."""
    return {name: rec.state for name, rec in run.status.nodes.items() if rec.block == block}


def release_all(run: Run) -> list[Block]:
    """`rayhpc down`: every block is recorded as released, and its job (or containers)
    removed once the head has stopped its nodes (see `remove_blocks`). No stop file: the
    head's teardown stops their nodes with the rest (`stopped`, like the first job's), where a
    block stop file would race it and drain some of them first (`left`)."""
    blocks = run.blocks()
    for block in blocks:
        mark_released(run, block, "rayhpc down")
    return blocks


def remove_blocks(run: Run, blocks: list[Block], say: Say) -> None:
    for block in blocks:
        run.backend.cancel_block(run, block, say)
