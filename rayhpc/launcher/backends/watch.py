"""Follow a run through its run directory: join progress, the driver's output, the result.

One loop for every backend: it reads only what the node agents write (`RunPaths`), and asks the
backend two things: has the run ended without a word (a dead head container, a job gone from
the queue), and how to stop it when a signal comes.
"""

from __future__ import annotations

import codecs
import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO

from rayhpc.launcher.contract import (
    TEXT_MAX_BYTES,
    RecordError,
    RunPaths,
    StatusRecord,
    TimingRecord,
    UnsafeFile,
    current_attempt,
    open_for_reading,
    read_bounded,
    read_record,
    read_spec,
)

if TYPE_CHECKING:
    from rayhpc.launcher.backends.overflow import FollowedOutput

POLL_S = 0.2
READ_BYTES = 1 << 20  # of the driver's output printed per step of the loop
LINE_MAX_BYTES = 1 << 16  # a longer line is printed in pieces
OVERFLOW_WAIT_S = 10.0  # at the end, how long the rest of the head's output may stall
CHECK_EVERY_S = 1.0  # how often the backend is asked whether the run still lives
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class FollowedRun(Protocol):
    def ended(self) -> str:
        """Why the run can report nothing more ("" while it can): its head is gone."""

    def gone(self, why: str) -> int:
        """The run ended without an exit code: record and say why; return the exit code."""

    def stop(self, signum: int, again: bool) -> bool:
        """A signal came (``again``: not the first). Pass it on; True to keep following until
        the run has stopped, False to stop following now."""


_NOTING: list[list[int]] = []  # the lists of the `noting_signals` blocks open now


@contextlib.contextmanager
def noting_signals() -> Iterator[list[int]]:
    """Ctrl-C, SIGTERM and SIGHUP are noted in the list yielded, not raised, meanwhile; also
    those a `RunWatcher` inside the block handles (its caller learns that a signal, not the
    run, ended it: the Python API raises KeyboardInterrupt for a Ctrl-C)."""
    noted: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: noted.append(signum))
                for sig in STOP_SIGNALS}
    _NOTING.append(noted)
    try:
        yield noted
    finally:
        _NOTING.remove(noted)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class RunWatcher:
    def __init__(self, run_dir: Path, out: TextIO | None = None):
        self.paths = RunPaths(run_dir)
        self.out: TextIO | None = out or sys.stdout
        self._driver_offset = 0  # of driver.log, read so far
        self._pending = bytearray()  # read, not printed yet (the start of a line)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # The head's own output, where the driver's goes once driver.log takes no more (set
        # by a backend that can follow it: `backends.overflow.FollowedOutput`).
        self.overflow: FollowedOutput | None = None
        self._overflow_said = self._unstored_said = False
        self._unstored = 0  # bytes of the driver's output shown but not in driver.log
        self._joined = -1
        self._lost: list[str] = []
        self._notes = 0  # the head's notes printed so far
        self._said_once: set[str] = set()  # files of the run directory refused, each said once
        self.connected = False  # connect.txt printed (an interactive cluster is up)
        self.signals: list[int] = []
        self._holding = False
        self._attempt = 0  # the run's attempt followed (`--restarts`; 0: not looked at yet)
        self._restart_said = ""

    # -- following

    def follow(self, run: FollowedRun, stop_timeout: float, until_up: bool = False) -> int | None:
        """Print progress and driver output until the run ends; always returns its exit code
        (128 + N when signal N stopped it, as shells do), with the error and summary said.

        ``until_up``: return None as soon as an interactive cluster is up (connect.txt, printed)
        instead; an exit code still comes back when the run ends before that."""
        with self.holding_signals():
            code = self._follow(run, stop_timeout, until_up)
        if code is not None and not self.restarting():
            self.say(summary(self.paths.dir, code), prefix=False)
        return code

    def restarting(self) -> bool:
        """Whether the run's attempt ended and another follows (`--restarts`)."""
        return self.paths.exists(self.paths.restarting)

    def say_restart(self) -> None:
        """Say why the attempt ended when the run starts again (once per attempt)."""
        said = self.paths.read_restarting()
        if said and said != self._restart_said:
            self._restart_said = said
            self.flush(wait_s=0)
            self.say(said)

    def _follow_attempts(self) -> None:
        """Say why an attempt ended when the run starts again; once the next attempt began
        (its files anew at the top of the run directory), follow those from their start."""
        self.say_restart()
        attempt = current_attempt(self.paths)
        if self._attempt and attempt > self._attempt:
            self._driver_offset, self._joined, self._lost, self._notes = 0, -1, [], 0
            self._pending.clear()
            self.connected = False
            self._restart_said = ""
        self._attempt = attempt

    @contextlib.contextmanager
    def holding_signals(self) -> Iterator[None]:
        """Ctrl-C, SIGTERM and SIGHUP (a closed terminal) are noted, not raised: the loop acts
        on them, and a teardown under way runs to its end."""
        if self._holding:
            yield
            return
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.signals.append(signum)
        for noted in _NOTING:
            noted.append(signum)

    def _follow(self, run: FollowedRun, stop_timeout: float, until_up: bool) -> int | None:
        handled, deadline, next_check = 0, None, 0.0
        run_dir_gone = False
        while True:
            if len(self.signals) > handled:
                signum, again = self.signals[handled], handled > 0
                handled = len(self.signals)
                name = signal.Signals(signum).name
                self.say(f"{name}: {'stopping now' if again else 'stopping the cluster'} "
                         "(logs are kept)")
                if not run.stop(signum, again):
                    self.flush(wait_s=0)
                    return 128 + self.signals[0]
                deadline = deadline or time.monotonic() + stop_timeout + 10
            why = ""
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + CHECK_EVERY_S
                why = run.ended()  # asked first: an exit code written meanwhile still counts
                self._follow_attempts()
                if not run_dir_gone and not self.paths.dir.is_dir():
                    # Nothing can be recorded any more: stop the cluster now, not whenever
                    # the driver happens to end.
                    run_dir_gone = True
                    self.say(f"error: the run directory {self.paths.dir} was deleted; "
                             "stopping the cluster")
                    run.stop(signal.SIGTERM, False)
                    deadline = deadline or time.monotonic() + stop_timeout + 10
            behind = self.poll()
            code = self.paths.read_exit_code()
            if code is not None:
                self.flush()
                if error := self.paths.read_error():
                    self.say(f"error: {error}")
                # A code below 128 is the driver's own, recorded because it ended before
                # the signal stopped it: it stands.
                return 128 + self.signals[0] if self.signals and code >= 128 else code
            if why:
                self.flush()
                return 128 + self.signals[0] if self.signals else run.gone(why)
            if until_up and self.connected and not self.signals:
                return None
            if deadline and time.monotonic() > deadline:
                self.say("the run did not stop in time; removing it")
                return 128 + (self.signals[0] if self.signals else signal.SIGTERM)
            if not behind:
                time.sleep(POLL_S)

    # -- what is new in the run directory

    def poll(self) -> bool:
        """Print what is new since the last call; True while more driver output waits."""
        status = self._status()
        lost = status.lost if status else []
        if lost != self._lost:
            for name in sorted(set(lost) - set(self._lost)):
                self.say(f"node {name} left the cluster; the run goes on without it")
            self._lost = lost
        elif status and status.joined != self._joined:
            self.say(f"{status.joined}/{status.expected} nodes joined")
        self._joined = status.joined if status else self._joined
        notes = status.notes if status else []
        for note in notes[self._notes:]:
            self.say(note)
        self._notes = max(self._notes, len(notes))
        more = self._copy_driver_output()
        if not self.connected:
            self._print_connect()
        return more

    def _status(self) -> StatusRecord | None:
        """status.json as the head last wrote it; one that is not a status record is said
        once and read as none (the run's end is told by exit_code, not by it)."""
        try:
            return read_record(self.paths.status, StatusRecord)
        except RecordError as exc:
            self.say_once(f"ignoring {exc}")
            return None

    def say_once(self, text: str) -> None:
        if text not in self._said_once:
            self._said_once.add(text)
            self.say(text)

    def _print_connect(self) -> None:
        """An interactive cluster is up: how to connect, as the head wrote it (shell lines)."""
        try:
            data = read_bounded(self.paths.connect, TEXT_MAX_BYTES, self.paths.dir)
        except RecordError as exc:
            self.say_once(f"ignoring {exc}")
            return
        if data is None:
            return
        text = data.decode(errors="replace")
        self.connected = True
        self.say(f"cluster up; {self.paths.connect}:")
        self._write(text)

    def _copy_driver_output(self) -> bool:
        """Print the driver's new output, whole lines only (a line longer than LINE_MAX_BYTES
        goes in pieces; `flush` prints a partial last one); True while more is waiting. At
        most READ_BYTES a call: memory does not grow with the output, and a big backlog does
        not hold up the loop."""
        stored = self.overflow.stored if self.overflow is not None else None
        size = READ_BYTES if stored is None else min(READ_BYTES, stored - self._driver_offset)
        data = self._read_driver_log(size) if size > 0 else b""
        self._driver_offset += len(data)
        more = len(data) == READ_BYTES
        if stored is not None and self._driver_offset >= stored:
            if not self._overflow_said:  # driver.log took no more: the rest from the head
                self._overflow_said = True
                self.say(f"warning: {self.paths.driver_log} takes no more after {stored} "
                         f"bytes ({self.overflow.why}); the rest of the driver's output is "
                         "shown from the head's own output")
            unstored = self.overflow.take(READ_BYTES)
            self._unstored += len(unstored)
            data += unstored
            more = more or self.overflow.waiting()
        self._pending += data
        end = self._pending.rfind(b"\n") + 1
        if len(self._pending) - end > LINE_MAX_BYTES:
            end = len(self._pending)
        if end:
            self._write(self._decoder.decode(bytes(self._pending[:end])))
            del self._pending[:end]
        return more

    def _read_driver_log(self, size: int) -> bytes:
        try:
            with open_for_reading(self.paths.driver_log, self.paths.dir) as log:
                log.seek(self._driver_offset)
                return log.read(size)
        except UnsafeFile as exc:
            self.say_once(f"ignoring {exc}")
            return b""
        except OSError:
            return b""

    def flush(self, wait_s: float = OVERFLOW_WAIT_S) -> None:
        """Print whatever driver output is left, partial last line included (after an
        overflow: what the head's output still brings, up to ``wait_s``), and say how much of
        it was not stored."""
        deadline = time.monotonic() + wait_s
        while self._copy_driver_output():
            pass
        while self.overflow is not None and self.overflow.stored is not None \
                and not self.overflow.done() and time.monotonic() < deadline:
            shown = self._unstored
            if not self._copy_driver_output():
                time.sleep(POLL_S / 4)
            if self._unstored != shown:  # still coming: ``wait_s`` is for a stall, not in all
                deadline = time.monotonic() + wait_s
        while self._copy_driver_output():
            pass
        tail = self._decoder.decode(bytes(self._pending), True)
        self._pending.clear()
        if tail:
            self._write(tail if tail.endswith("\n") else tail + "\n")
        if self._overflow_said and not self._unstored_said:
            self._unstored_said = True
            self.say(f"warning: {self._unstored} bytes of the driver's output (after the first "
                     f"{self.overflow.stored} in {self.paths.driver_log}) were shown here but "
                     f"not stored: {self.overflow.why}")

    def say(self, text: str, prefix: bool = True) -> None:
        self._write(f"rayhpc: {text}\n" if prefix else text + "\n")

    def _write(self, text: str) -> None:
        """Output is for the user; a closed terminal or pipe (`| head`) must never stop the
        run's teardown: once writing fails, stay quiet."""
        if self.out is None:
            return
        try:
            self.out.write(text)
            self.out.flush()
        except (OSError, ValueError):
            self.out = None
            with contextlib.suppress(OSError, ValueError):
                sys.stdout = open("/dev/null", "w")  # noqa: SIM115 (for the interpreter's exit)


def summary(run_dir: Path, code: int) -> str:
    """One line: nodes (per group), bring-up seconds, driver seconds, exit code."""
    paths = RunPaths(run_dir)
    try:
        timing = read_record(paths.timing, TimingRecord)
    except RecordError as exc:  # a foreign timing.json: said, not guessed from
        return f"rayhpc: run {run_dir.name}: {exc}, exit code {code}"

    def span(start: str, end: str) -> str:
        first, last = (timing.moment(start), timing.moment(end)) if timing else (None, None)
        return f"{last - first:.1f} s" if first and last else "-"

    lost = timing.nodes_lost if timing else []
    groups = "; ".join(f"{name}: {total.get('nodes', 0)} "
                       f"node{'s' if total.get('nodes', 0) != 1 else ''}, "
                       f"{total.get('cpus', 0):g} CPUs, {total.get('gpus', 0):g} GPUs"
                       for name, total in ((timing and timing.groups) or {}).items() if name)
    blocks = "; ".join(f"block {name}: {len(c.get('nodes', []))} joined, {c.get('left', 0)} left"
                       + (f", {c['lost']} lost" if c.get("lost") else "")
                       for name, c in ((timing and timing.blocks) or {}).items())
    spec = read_spec(paths, strict=False)
    # An interactive cluster has no driver: the span is the time it was up for Ray jobs.
    ran = "up" if spec is not None and spec.interactive else "driver"
    return (f"rayhpc: run {run_dir.name}: {timing.nodes_joined if timing else 0}/"
            f"{timing.nodes_expected if timing else '?'} nodes"
            f"{' (' + groups + ')' if groups else ''}"
            f"{' (lost: ' + ', '.join(lost) + ')' if lost else ''}"
            f"{' (' + blocks + ')' if blocks else ''}, bring-up "
            f"{span('t_submit', 't_all_joined')}, {ran} {span('t_driver_start', 't_driver_end')}, "
            f"teardown {span('t_driver_end', 't_teardown_done')}, exit code {code}")
