"""A node's logs at its end: one capped archive in the run directory (Ray's daemons' logs first;
per-process worker logs only from the head and failed nodes, or while the cap leaves room)."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import time
from pathlib import Path

from rayhpc.launcher.contract import RunPaths, atomic_file, run_dir_problem

HARVEST_OPS_PER_S = 150  # the run directory operations per second the archives may cost
WORKER_LOG_PREFIXES = ("worker-", "python-core-worker-", "python-core-driver-",
                       "runtime_env_setup-")


def harvest_spread_s(nodes: int, stop_timeout: float) -> float:
    """Over how many seconds the workers spread the writing of their log archives (each picks
    a moment at random): on a cluster every node ends at once, and a thousand archives (two
    metadata operations each) at once would be a burst the file system feels. Well inside the
    head's wait for them."""
    return min(nodes * 2 / HARVEST_OPS_PER_S, stop_timeout / 2)


def plan_archive(files: list[tuple[str, int]], cap: int, full: bool
                 ) -> tuple[list[tuple[str, int, int]], list[tuple[str, int, str]]]:
    """Which log files go into a node's archive: (name, size, bytes kept: the file's tail)
    and (name, size, why dropped). Ray's daemons' logs first, smallest first; per-process
    worker logs only for ``full`` nodes (the head, a failed node); at most ``cap`` bytes."""
    def is_worker_log(name: str) -> bool:
        return Path(name).name.startswith(WORKER_LOG_PREFIXES)

    kept, dropped, room = [], [], cap
    for name, size in sorted(files, key=lambda f: (is_worker_log(f[0]), f[1], f[0])):
        if is_worker_log(name) and not full:
            dropped.append((name, size, "worker process log of a node that ended cleanly"))
        elif room <= 0:
            dropped.append((name, size, f"over the cap of {cap} bytes"))
        else:
            kept.append((name, size, min(size, room)))
            room -= min(size, room)
    return kept, dropped


def harvest_logs(paths: RunPaths, node: str, temp_dir: Path, cap: int, full: bool) -> dict:
    """One archive of this node's logs in the run directory, written once (whole or not at
    all); Ray's node-local temp dir is removed after. ``full``: keep worker process logs too
    (the head, a failed node). Returns its summary for the node's record."""
    session_logs = temp_dir / "session_latest" / "logs"
    files = [(str(p.relative_to(session_logs)), p.stat().st_size)
             for p in (session_logs.rglob("*") if session_logs.is_dir() else [])
             if p.is_file()]
    kept, dropped = plan_archive(files, cap, full)
    manifest = {"kept": [{"file": n, "bytes": size, "kept_bytes": part}
                         for n, size, part in kept],
                "dropped": [{"file": n, "bytes": size, "why": why}
                            for n, size, why in dropped]}
    target = paths.node_archive(node)
    summary = {"archive": target.name, "files_kept": len(kept),
               "bytes_kept": sum(k[2] for k in kept), "files_dropped": len(dropped),
               "bytes_dropped": sum(d[1] for d in dropped)}
    try:
        with atomic_file(target, binary=True) as handle, \
                tarfile.open(fileobj=handle, mode="w:gz", compresslevel=1) as tar:
            for name, size, part in kept:
                add_file(tar, name, session_logs / name, skip=size - part)
            add_bytes(tar, "MANIFEST.json", json.dumps(manifest, indent=1).encode())
    except OSError as exc:
        summary = {"archive": None, "error": run_dir_problem(exc)}
        print(f"[rayhpc {node}] logs not kept: {summary['error']}", flush=True)
    # The node's temp dir is the run's alone (HPC nodes keep /tmp between jobs).
    shutil.rmtree(temp_dir, ignore_errors=True)
    return summary


def add_file(tar: tarfile.TarFile, name: str, path: Path, skip: int = 0) -> None:
    """A file into the archive; ``skip``: leave out its first bytes (keep the tail)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(skip)
            data = handle.read()
    except OSError:
        return  # vanished meanwhile
    add_bytes(tar, name, data)


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
