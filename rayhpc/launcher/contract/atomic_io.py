"""How the run directory's files are written (whole or not at all) and read back, and what a
failed write means in words. Standard library only."""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_file(path: Path, binary: bool = False, mode: int | None = None) -> Iterator[IO]:
    """A file written whole or not at all (a temp name beside it, renamed when the block ends
    without an error): readers on other nodes never see half a file, and a failure (a full
    disk) leaves no temp file behind. ``mode``: the file's mode."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb" if binary else "w") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write(path: Path, data: str | bytes, mode: int | None = None) -> None:
    """``data`` into ``path``, whole or not at all (see `atomic_file`)."""
    with atomic_file(path, isinstance(data, bytes), mode) as handle:
        handle.write(data)


def json_text(data: dict) -> str:
    """How the run directory's JSON files are written."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, json_text(data))


def read_json(path: Path, objects_only: bool = True) -> Any:
    """A JSON object from a file; None when it is missing, unreadable or (``objects_only``) not
    an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) or not objects_only else None


def run_dir_problem(exc: OSError) -> str:
    """What a failed write to the shared run directory means, in words."""
    what = {errno.ENOSPC: "is full", errno.EDQUOT: "is over its quota",
            errno.EROFS: "became read-only"}.get(exc.errno or 0, "cannot be written")
    where = f": {exc.filename}" if exc.filename else ""
    return f"the run directory {what} ({exc.strerror}{where})"
