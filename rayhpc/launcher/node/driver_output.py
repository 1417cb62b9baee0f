"""The driver's output, stored once: in driver.log, which the launcher follows (it is not echoed
on the node's own output, so a container's log or a batch job's output does not hold it twice).

When driver.log takes no more (a full run directory, a quota), the rest is not lost: it goes on
on the head's own output (the container's log on the local site, where the launcher follows it
to the console; the job's output on batch sites) after one marker line saying how many bytes
driver.log holds (see `contract.overflow_marker`)."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from rayhpc.launcher.contract import (
    OVERFLOW_END,
    OVERFLOW_PREFIX,
    overflow_marker,
    run_dir_problem,
)

# A longer line is passed on in pieces of this size: the agent's memory does not grow with it.
PIECE_BYTES = 1 << 16
_OUTPUT_LOCK = threading.Lock()


def to_stdout(data: bytes) -> None:
    """Onto this node's own output in one piece: the agent's lines and the driver's (after a
    full driver.log) never interleave mid-line. A closed output is ignored."""
    with _OUTPUT_LOCK, contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()  # anything printed through the text layer goes first
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


class DriverOutput:
    """Copies a driver's output (its stdout and stderr, one pipe) into driver.log."""

    def __init__(self, path: Path, say: Callable[[str], None]):
        self.say = say
        self.stored = 0  # bytes in driver.log
        self.total = 0  # bytes the driver wrote
        self.problem = ""  # why driver.log took no more ("" while it takes everything)
        self._at_line_start = True  # of what went to our own output
        self._log: BinaryIO | None = None
        try:  # unbuffered: a failed write is seen at once, and never at the close
            self._log = open(path, "wb", buffering=0)  # noqa: SIM115 (closed by close())
        except OSError as exc:
            self._overflow(exc)

    def copy(self, source: BinaryIO) -> None:
        """Until the pipe closes (a thread's target)."""
        while piece := source.readline(PIECE_BYTES):
            self.total += len(piece)
            rest = self._store(piece) if self._log is not None else piece
            if rest:
                self._pass_on(rest)

    def close(self) -> None:
        """The end of the driver's output: after an overflow, say how much is where."""
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None
        if self.problem:
            if not self._at_line_start:
                to_stdout(b"\n")
                self._at_line_start = True
            self.say(f"{OVERFLOW_END}: {self.total} bytes, the first {self.stored} in "
                     f"driver.log, the other {self.total - self.stored} only in this node's "
                     "output")

    def _store(self, piece: bytes) -> bytes:
        """Into driver.log; what it could not take."""
        view = memoryview(piece)
        try:
            while view:
                written = self._log.write(view) or 0  # a short write on a full disk
                self.stored += written
                view = view[written:]
            return b""
        except (OSError, ValueError) as exc:
            self._overflow(exc)
            return bytes(view)

    def _overflow(self, exc: Exception) -> None:
        self.problem = run_dir_problem(exc) if isinstance(exc, OSError) else str(exc)
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None
        self.say(overflow_marker(self.stored, self.problem))

    def _pass_on(self, piece: bytes) -> None:
        to_stdout((OVERFLOW_PREFIX if self._at_line_start else b"") + piece)
        self._at_line_start = piece.endswith(b"\n")
