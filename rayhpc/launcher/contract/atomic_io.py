"""How the run directory's files are written (whole or not at all) and read back (strict JSON,
bounded, no link followed: `untrusted_files`), and what a failed write means in words.
Standard library only."""

from __future__ import annotations

import contextlib
import errno
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from rayhpc.launcher.contract.json_types import RecordError
from rayhpc.launcher.contract.untrusted_files import read_bounded, replacing

RECORD_MAX_BYTES = 1 << 20  # a JSON file of the run directory is read up to this size


@contextlib.contextmanager
def atomic_file(path: Path, binary: bool = False, mode: int | None = None,
                root: Path | None = None) -> Iterator[IO]:
    """A file written whole or not at all (a temp name beside it, renamed when the block ends
    without an error): readers on other nodes never see half a file, and a failure (a full
    disk) leaves no temp file behind. No link on its way is followed (see
    `untrusted_files.replacing`; ``root``: the run directory). ``mode``: the file's mode."""
    with replacing(path, binary, mode, root) as handle:
        yield handle


def atomic_write(path: Path, data: str | bytes, mode: int | None = None,
                 root: Path | None = None) -> None:
    """``data`` into ``path``, whole or not at all (see `atomic_file`)."""
    with atomic_file(path, isinstance(data, bytes), mode, root) as handle:
        handle.write(data)


def json_text(data: dict) -> str:
    """How the run directory's JSON files are written."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_json(path: Path, data: dict, root: Path | None = None) -> None:
    atomic_write(path, json_text(data), root=root)


def parse_json(data: bytes | str) -> Any:
    """JSON text's value; ValueError for anything else, nesting too deep for the parser
    included. (NaN, Infinity and 1e999 parse as floats: a record's reader refuses them by
    their field, `json_types.fits_json_type`.)"""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def read_json(path: Path, objects_only: bool = True, root: Path | None = None,
              limit: int = RECORD_MAX_BYTES) -> Any:
    """A JSON object from a run-directory file; None when it is missing, unreadable, not JSON
    or (``objects_only``) not an object; RecordError naming it when it is a link, not a
    regular file, over ``limit`` bytes, or JSON this parser refuses (too deep, too long a
    number)."""
    data = read_bounded(path, limit, root)
    try:
        parsed = None if data is None else parse_json(data)
    except (json.JSONDecodeError, UnicodeDecodeError):  # not JSON (a file not ours)
        return None
    except ValueError as exc:
        raise RecordError(f"{path}: {exc}") from None
    return parsed if isinstance(parsed, dict) or not objects_only else None


def run_dir_problem(exc: OSError) -> str:
    """What a failed write to the shared run directory means, in words."""
    what = {errno.ENOSPC: "is full", errno.EDQUOT: "is over its quota",
            errno.EROFS: "became read-only"}.get(exc.errno or 0, "cannot be written")
    where = f": {exc.filename}" if exc.filename else ""
    return f"the run directory {what} ({exc.strerror}{where})"
