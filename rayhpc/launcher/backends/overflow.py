"""The driver's output that the head put on its own output because driver.log took no more (a
full run directory; see `contract.overflow_marker`), picked out of that output as it streams,
so that the console keeps showing it. Memory is bounded whatever the output's size."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from rayhpc.launcher.chunks import ChunkQueue
from rayhpc.launcher.contract import OVERFLOW_END, OVERFLOW_PREFIX, parse_overflow_marker

AGENT_LINE_MAX = 1 << 16  # an agent line is read up to this long (the rest is not looked at)


class OverflowParser:
    """Reads a head's output (bytes, in chunks cut anywhere): the agent's lines are looked at
    for the marker and the end; the driver's lines after the marker are handed back without
    their prefix, as they come (a long line is not held whole)."""

    def __init__(self) -> None:
        self.stored: int | None = None  # bytes driver.log holds (None: no marker yet)
        self.why = ""  # why driver.log took no more
        self.ended = False  # the head said the driver's output ended
        self._line = bytearray()  # the current line's start while it is not a driver line
        self._driver_line = False  # in a driver line: passed on as it comes

    def feed(self, chunk: bytes) -> bytes:
        """The driver's output in ``chunk``."""
        out = bytearray()
        pos = 0
        while pos < len(chunk):
            newline = chunk.find(b"\n", pos)
            end = len(chunk) if newline < 0 else newline + 1
            piece, pos = chunk[pos:end], end
            if not self._driver_line and self.stored is not None \
                    and len(self._line) < len(OVERFLOW_PREFIX):
                # Only what tells a driver's line from the agent's is needed first.
                take = len(OVERFLOW_PREFIX) - len(self._line)
                self._line += piece[:take]
                piece = piece[take:]
                if self._line == OVERFLOW_PREFIX:
                    self._driver_line = True
                    self._line.clear()
            if self._driver_line:
                out += piece
            else:
                self._line += piece[:AGENT_LINE_MAX - len(self._line)]
            if newline >= 0:  # the line ended
                if not self._driver_line:
                    self._agent_line(self._line.decode(errors="replace"))
                self._line.clear()
                self._driver_line = False
        return bytes(out)

    def _agent_line(self, line: str) -> None:
        marker = parse_overflow_marker(line)
        if marker is not None and self.stored is None:
            self.stored, self.why = marker
        elif self.stored is not None and OVERFLOW_END in line:
            self.ended = True


class FollowedOutput(ChunkQueue):
    """A head's output followed in a thread (``chunks``: its stream, ending when the head
    ends), the driver's part of it queued for the console (bounded: the stream waits)."""

    def __init__(self, chunks: Callable[[], Iterable[bytes]]):
        super().__init__()
        self.parser = OverflowParser()
        self._finished = threading.Event()
        self._chunks = chunks
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def start(self) -> FollowedOutput:
        self._thread.start()
        return self

    @property
    def stored(self) -> int | None:
        return self.parser.stored

    @property
    def why(self) -> str:
        return self.parser.why

    def _follow(self) -> None:
        try:
            for chunk in self._chunks():
                driver = self.parser.feed(chunk)
                if driver:
                    self.put(driver)
        except Exception:  # noqa: BLE001 (an engine gone away: nothing more comes)
            pass
        finally:
            self._finished.set()

    def done(self) -> bool:
        """Nothing more will come: the head said the driver's output ended, or its output
        ended; and all of it was taken."""
        return (self.parser.ended or self._finished.is_set()) and not self.waiting()
