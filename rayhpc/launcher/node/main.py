"""The node program's entry: `python node_agent.pyz --run-dir DIR [--role] [--node-name]
[--group] [--block] [--stop-at]`, one per node, started by srun / aprun / mpiexec / jsrun or
a compose service."""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path

from rayhpc.launcher.contract import (
    RANK_VARS_ENV,
    RunPaths,
    atomic_write,
    block_node_name,
    read_spec,
    spec_from_text,
)
from rayhpc.launcher.node.head import Head
from rayhpc.launcher.node.worker import Worker


def rank_vars(environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """The variables that hold this task's rank, as the job script names them (each scheduler
    module declares its launcher's; the node program knows none of its own)."""
    return tuple(v.strip() for v in environ.get(RANK_VARS_ENV, "").split(",") if v.strip())


def detect_rank(environ: Mapping[str, str] = os.environ) -> int | None:
    """This task's rank from the first of the named variables that holds one."""
    for var in rank_vars(environ):
        value = environ.get(var, "")
        if value.strip().isdigit():
            return int(value)
    return None


def main(argv: list[str] | None = None, spec_text: str = "") -> int:
    """The node program; ``spec_text``: the run's spec.json as bundled with the program ("":
    read spec.json)."""
    parser = argparse.ArgumentParser(description="rayhpc node agent (one per node)")
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--role", choices=("head", "worker"),
                        help="default: head for rank 0 of the launcher, else worker")
    parser.add_argument("--node-name", help="default: this host's name")
    parser.add_argument("--group", default="", help="the node's group (a launch with groups)")
    parser.add_argument("--block", default="", help="the grown block this worker belongs to "
                        "(`rayhpc grow`): its name prefixes the host's name")
    parser.add_argument("--stop-at", type=float, default=0.0,
                        help="epoch seconds at which the run (the head's) or the block (a "
                        "block worker's) is asked to stop, where no job script's walltime "
                        "warning does it (the local site)")
    args = parser.parse_args(argv)
    paths = RunPaths(args.run_dir)
    spec = spec_from_text(spec_text) if spec_text else read_spec(paths)
    if spec is None:
        print(f"rayhpc agent: cannot read {paths.spec} (missing, or written by another "
              "version of rayhpc than this node program)", file=sys.stderr)
        return 2
    if args.group and spec.group(args.group) is None:
        print(f"rayhpc agent: no group {args.group!r} in {paths.spec}", file=sys.stderr)
        return 2
    role = args.role
    if role is None:
        rank = detect_rank()
        if rank is None:
            named = ", ".join(rank_vars()) or f"none: ${RANK_VARS_ENV} is not set"
            print(f"rayhpc agent: no --role and no rank in the launcher's rank variables "
                  f"({named})", file=sys.stderr)
            return 2
        role = "head" if rank == 0 else "worker"
    if args.block and role != "worker":
        print("rayhpc agent: --block: a block's nodes are workers (--role worker)",
              file=sys.stderr)
        return 2
    node = args.node_name or (block_node_name(args.block, socket.gethostname()) if args.block
                              else socket.gethostname())
    if role == "head":
        agent = Head(paths, node, spec, args.group)
        agent.stops.stop_at = args.stop_at
    else:
        agent = Worker(paths, node, spec, args.group, block=args.block, stop_at=args.stop_at)
    try:
        return agent.run()
    except Exception:
        # A bug or an unforeseen Ray failure: keep the traceback with the run, tell the launcher.
        agent.say("agent failed:\n" + traceback.format_exc())
        if role == "head":
            with contextlib.suppress(OSError):
                atomic_write(paths.error, f"node agent on {node} failed: "
                             f"{traceback.format_exc().strip().splitlines()[-1]} "
                             "(traceback in the head's output)\n")
        raise
