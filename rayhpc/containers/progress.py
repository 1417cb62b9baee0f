"""Progress for long work: an updating status line on a terminal, plain lines otherwise."""

from __future__ import annotations

import collections
import sys
import time
from typing import TextIO

_SPINNER = "|/-\\"


class Progress:
    """Steps with output lines under them.

    On a TTY the current step and its latest output line share one line that is redrawn; each
    finished step stays as one line with its duration. Elsewhere (CI logs, pipes) every line is
    printed as it comes. The last lines are kept either way, to show when something fails.
    """

    def __init__(self, out: TextIO | None = None, tty: bool | None = None, keep: int = 40):
        self.out = out or sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self.recent: collections.deque[str] = collections.deque(maxlen=keep)
        self._step = ""
        self._step_started = 0.0
        self._ticks = 0
        self._width = 100

    def step(self, title: str) -> None:
        self._finish_step()
        self._step = title.strip()
        self._step_started = time.monotonic()
        if self.tty:
            self._redraw("")
        else:
            self._write(self._step + "\n")

    def line(self, text: str) -> None:
        text = text.rstrip()
        if not text:
            return
        self.recent.append(text)
        if self.tty:
            self._redraw(text)
        else:
            self._write(text + "\n")

    def note(self, text: str) -> None:
        """A line that stays, even on a TTY."""
        if self.tty:
            self._write("\r\x1b[K")
        self._write(text.rstrip() + "\n")

    def done(self) -> None:
        self._finish_step()

    def tail(self, lines: int = 20) -> str:
        return "\n".join(list(self.recent)[-lines:])

    def _finish_step(self) -> None:
        if self._step and self.tty:
            took = time.monotonic() - self._step_started
            self._write(f"\r\x1b[K  done {self._step[:self._width - 16]} ({took:.1f}s)\n")
        self._step = ""

    def _redraw(self, detail: str) -> None:
        self._ticks += 1
        took = time.monotonic() - self._step_started
        head = f"{_SPINNER[self._ticks % 4]} {self._step[:60]} {took:4.0f}s"
        room = self._width - len(head) - 3
        tail = f" | {detail[-room:]}" if detail and room > 10 else ""
        self._write(f"\r\x1b[K{head}{tail}")

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()
