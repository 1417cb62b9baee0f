"""Follow a run through its run directory: join progress, the driver's output, the result.

Works the same for every scheduler: it reads only what the node agents write.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from launcher.agent import read_json


class RunWatcher:
    def __init__(self, run_dir: Path, out: TextIO | None = None):
        self.run_dir = run_dir
        self.out = out or sys.stdout
        self._driver_offset = 0
        self._joined = -1
        self._lost: list[str] = []
        self.head: dict | None = None

    def poll(self) -> None:
        """Print what is new since the last call."""
        if self.head is None:
            self.head = read_json(self.run_dir / "head.json")
        status = read_json(self.run_dir / "status.json") or {}
        lost = status.get("lost") or []
        if lost != self._lost:
            for name in sorted(set(lost) - set(self._lost)):
                self._say(f"node {name} left the cluster; the run goes on without it")
            self._lost = lost
        elif status.get("joined", self._joined) != self._joined:
            self._say(f"{status['joined']}/{status['expected']} nodes joined")
        self._joined = status.get("joined", self._joined)
        self._copy_driver_output()

    def exit_code(self) -> int | None:
        """The run's exit code once the head has written it (after teardown), else None."""
        try:
            text = (self.run_dir / "exit_code").read_text().strip()
        except OSError:
            return None
        return int(text) if text.lstrip("-").isdigit() else None

    def error(self) -> str:
        try:
            return (self.run_dir / "error").read_text().strip()
        except OSError:
            return ""

    def _unread(self) -> bytes:
        """Driver output written since we last printed."""
        try:
            with open(self.run_dir / "driver.log", "rb") as log:
                log.seek(self._driver_offset)
                return log.read()
        except OSError:
            return b""

    def _copy_driver_output(self) -> None:
        # Print whole lines only; a partial last line waits for its end.
        chunk = self._unread()
        end = chunk.rfind(b"\n") + 1
        if end:
            self.out.write(chunk[:end].decode(errors="replace"))
            self.out.flush()
            self._driver_offset += end

    def flush(self) -> None:
        """Print whatever driver output is left, partial last line included."""
        rest = self._unread()
        if rest:
            text = rest.decode(errors="replace")
            self.out.write(text if text.endswith("\n") else text + "\n")
            self.out.flush()
            self._driver_offset += len(rest)

    def _say(self, text: str) -> None:
        self.out.write(f"rayhpc: {text}\n")
        self.out.flush()


def summary(run_dir: Path, code: int) -> str:
    """One line: nodes, bring-up seconds, driver seconds, exit code."""
    timing = read_json(run_dir / "timing.json") or {}

    def span(start: str, end: str) -> str:
        if timing.get(start) and timing.get(end):
            return f"{timing[end] - timing[start]:.1f} s"
        return "-"

    lost = timing.get("nodes_lost")
    return (f"rayhpc: run {run_dir.name}: {timing.get('nodes_joined', 0)}/"
            f"{timing.get('nodes_expected', '?')} nodes"
            f"{' (lost: ' + ', '.join(lost) + ')' if lost else ''}, bring-up "
            f"{span('t_submit', 't_all_joined')}, driver {span('t_driver_start', 't_driver_end')}, "
            f"teardown {span('t_driver_end', 't_teardown_done')}, exit code {code}")
