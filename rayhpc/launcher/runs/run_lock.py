"""The locks that keep two commands from changing one run at once: `changing` (held by grow,
shrink and down while each checks the run's state and acts on it) and `autoscaler` (held by an
`rayhpc autoscale` loop for its whole life: one per run).

Each is a POSIX record lock (fcntl.lockf) on a file of the run directory: the kernel releases
it when its holder dies, so a killed command leaves no stale lock. Across login nodes it holds
where the shared file system's locks do (GPFS, NFS with lockd, Lustre mounted with `flock`;
Lustre's `localflock` only on one node). The file says who holds the lock, for the message of
whoever waits; it is opened without following a symlink (the containers can write the run
directory)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from rayhpc.common.user_error import UserError

Say = Callable[[str], None]
CHANGE_WAIT_S = 120  # how long a grow, shrink or down waits for another one of the same run
HOLDER_MAX = 200  # bytes of the holder's line read back


def _open_lock(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise UserError(f"--run: cannot open the run's lock {path} ({exc.strerror}); run this "
                        "as the user who launched it") from None


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(fd, HOLDER_MAX, 0).decode(errors="replace")
        return "".join(c for c in text if c.isprintable()).strip() or "another process"
    return "another process"


def _mark(fd: int, what: str) -> None:
    line = f"{what} (pid {os.getpid()} on {socket.gethostname()}, since " \
           f"{time.strftime('%H:%M:%S')})"
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, line.encode(), 0)


@contextlib.contextmanager
def changing(lock_file: Path, what: str, say: Say, wait_s: float = CHANGE_WAIT_S
             ) -> Iterator[None]:
    """Hold the run's change lock while ``what`` (e.g. "rayhpc grow") checks and changes the
    run; wait for another holder up to ``wait_s``, saying once for whom, then UserError."""
    fd = _open_lock(lock_file)
    try:
        deadline, said = time.monotonic() + wait_s, False
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if not said:
                    say(f"waiting for {_holder(fd)} to finish changing the run")
                    said = True
                if time.monotonic() > deadline:
                    raise UserError(f"--run: {_holder(fd)} is still changing the run after "
                                    f"{wait_s:.0f} s; try again once it is done") from None
                time.sleep(0.2)
        _mark(fd, what)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def sole_autoscaler(lock_file: Path, run_id: str) -> Iterator[None]:
    """Hold the run's autoscaler lock for the loop's life; UserError naming the holder when
    another loop has it (two loops would each add blocks up to the maximum)."""
    fd = _open_lock(lock_file)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UserError(f"--run: run {run_id} is autoscaled already by {_holder(fd)}; "
                            "stop that one first (Ctrl-C), or let it go on") from None
        _mark(fd, "rayhpc autoscale")
        yield
    finally:
        os.close(fd)
