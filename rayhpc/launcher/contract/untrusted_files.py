"""The run directory's files as untrusted input. The containers (another user: uid 1000 where
the launcher is root) can write anything in the run directory, links included; so every file
of it is opened from the run directory down, one directory at a time, without following a
link (the file, a directory on the way such as logs/, nodes/ or blocks/, or the run
directory itself), only a regular file is read, and never more than its bound. Writes go to a
fresh temp name (O_EXCL) in a directory so opened, then are renamed over the file: a link
planted at the file's name is replaced, never written through. Standard library only.

``root``: the directory above which nothing is checked, the run directory (default: the
file's own directory, which is then not followed either).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from rayhpc.launcher.contract.json_types import RecordError

TEXT_MAX_BYTES = 64 << 10  # a small text file: exit_code, error, job_id, auth_token, connect.txt
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO planted at the name must not hang the reader (it is refused below).
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class UnsafeFile(OSError):
    """A run-directory file refused: a link (itself or a directory on its way) or not a
    regular file. An OSError, so that a write's caller handles it as any other failed write;
    readers of records say it as a RecordError (`read_bounded`)."""

    def __init__(self, path: Path | str, why: str):
        super().__init__(errno.ELOOP, why, str(path))

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def parts_below(path: Path, root: Path) -> tuple[str, ...]:
    """The names from ``root`` down to ``path`` (UnsafeFile for a path not below it)."""
    try:
        parts = Path(path).relative_to(root).parts
    except ValueError:
        raise UnsafeFile(path, f"not inside {root}") from None
    if not parts or any(part in (".", "..") for part in parts):
        raise UnsafeFile(path, f"not a file name inside {root}")
    return parts


def refused(path: Path, root: Path, exc: OSError) -> OSError:
    """What an open that met a link (ELOOP, or ENOTDIR for a directory) says: the link by its
    name; other errors as they are."""
    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
        return exc
    current = Path(root)
    for part in ("", *parts_below(path, root)):
        current = current / part if part else current
        with contextlib.suppress(OSError):
            if stat.S_ISLNK(os.lstat(current).st_mode):
                return UnsafeFile(current, "a symbolic link in the run directory: not "
                                  "followed")
    return exc


@contextlib.contextmanager
def directory_of(path: Path, root: Path | None = None) -> Iterator[int]:
    """A descriptor of ``path``'s directory, opened from ``root`` down with no link followed
    (root itself included: O_NOFOLLOW applies to its last name)."""
    root = Path(root) if root is not None else Path(path).parent
    fd, current = -1, root
    try:
        fd = os.open(root, DIR_FLAGS)
        for part in parts_below(path, root)[:-1]:
            current = current / part
            inner = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = inner
    except OSError as exc:
        if fd >= 0:
            os.close(fd)
        exc.filename = str(current)  # not the name relative to its directory
        raise refused(path, root, exc) from None
    try:
        yield fd
    finally:
        os.close(fd)


def open_for_reading(path: Path, root: Path | None = None) -> IO[bytes]:
    """A regular file of the run directory, opened for reading with no link followed:
    FileNotFoundError when missing, UnsafeFile when it is a link or not a regular file."""
    with directory_of(path, root) as dir_fd:
        try:
            fd = os.open(Path(path).name, READ_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            raise refused(path, Path(path).parent, exc) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeFile(path, "not a regular file: not read")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_bounded(path: Path, limit: int, root: Path | None = None) -> bytes | None:
    """A run-directory file's bytes, at most ``limit`` of them (RecordError naming it when it
    holds more, or is a link or not a regular file); None when it is missing or cannot be
    read."""
    try:
        with open_for_reading(path, root) as handle:
            data = handle.read(limit + 1)
    except UnsafeFile as exc:
        raise RecordError(str(exc)) from None
    except OSError:
        return None
    if len(data) > limit:
        raise RecordError(f"{path}: larger than {limit} bytes: not read")
    return data


def read_text_quietly(path: Path, root: Path | None = None, limit: int = TEXT_MAX_BYTES) -> str:
    """A small text file of the run directory; "" when it is missing, unreadable, a link, not
    a regular file or over ``limit`` (for files whose absence is an answer: exit_code, ...)."""
    try:
        data = read_bounded(path, limit, root)
    except RecordError:
        return ""
    return (data or b"").decode(errors="replace")


def exists(path: Path, root: Path | None = None) -> bool:
    """Whether a regular file or a directory (not a link) is at ``path``, reached with no link
    followed."""
    try:
        with directory_of(path, root) as dir_fd:
            mode = os.stat(Path(path).name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError:  # UnsafeFile included: behind a link is not there
        return False
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode)


def list_names(directory: Path, root: Path | None = None, quiet: bool = True) -> list[str]:
    """The names in a directory of the run directory, sorted ([] when it is missing or cannot
    be read; also when it is a link or not a directory, unless ``quiet`` is False: UnsafeFile
    then)."""
    directory = Path(directory)
    try:
        with directory_of(directory / ".entry", root if root is not None else directory.parent
                          ) as dir_fd:
            return sorted(os.listdir(dir_fd))
    except UnsafeFile:
        if quiet:
            return []
        raise
    except OSError:
        return []


def remove(path: Path, root: Path | None = None) -> None:
    """Remove a file of the run directory if it is there (a link is removed, not followed; a
    file behind a linked directory is not ours to remove)."""
    with contextlib.suppress(FileNotFoundError, UnsafeFile), \
            directory_of(path, root) as dir_fd:
        os.unlink(Path(path).name, dir_fd=dir_fd)


def create_exclusive(path: Path, data: bytes, root: Path | None = None,
                     mode: int = 0o644) -> bool:
    """Create a file that must not exist yet (O_EXCL: not through a link either) with
    ``data``; False when something is at its name already."""
    with directory_of(path, root) as dir_fd:
        try:
            fd = os.open(Path(path).name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, mode, dir_fd=dir_fd)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    return True


@contextlib.contextmanager
def replacing(path: Path, binary: bool = False, mode: int | None = None,
              root: Path | None = None) -> Iterator[IO]:
    """A file written whole or not at all: a fresh temp name beside it (made with O_EXCL, not
    guessable), renamed over ``path`` when the block ends without an error (a link at
    ``path`` is replaced, not followed); a failure leaves no temp file."""
    name = Path(path).name
    tmp = f".{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    with directory_of(path, root) as dir_fd:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o666 if mode is None else mode, dir_fd=dir_fd)
            with os.fdopen(fd, "wb" if binary else "w") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
                if mode is not None:
                    os.fchmod(handle.fileno(), mode)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            if isinstance(exc, OSError) and exc.filename in (tmp, name):
                exc.filename = str(path)  # the file, not a name relative to its directory
            raise
