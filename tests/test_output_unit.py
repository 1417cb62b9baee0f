"""The driver's output stored once, and kept on the console when driver.log takes no more: the
head's side (`node.driver_output`), the head's output picked apart (`backends.overflow`) and the
console's side (`backends.watch`), on fake files and streams."""

from __future__ import annotations

import errno
import io
from pathlib import Path

import pytest

from rayhpc.launcher.backends import watch
from rayhpc.launcher.backends.overflow import FollowedOutput, OverflowParser
from rayhpc.launcher.backends.watch import RunWatcher
from rayhpc.launcher.contract import OVERFLOW_PREFIX, overflow_marker, parse_overflow_marker
from rayhpc.launcher.node import driver_output
from rayhpc.launcher.node.driver_output import DriverOutput

LINES = b"".join(f"line {i:06d} ".encode() + b"x" * 87 + b"\n" for i in range(40000))


class FullAfter:
    """driver.log on a disk that fills after ``room`` bytes (a short write, then ENOSPC)."""

    def __init__(self, room: int):
        self.room = room
        self.data = bytearray()

    def write(self, data) -> int:
        if self.room == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        taken = bytes(data[:self.room])
        self.data += taken
        self.room -= len(taken)
        return len(taken)

    def close(self) -> None:
        pass


def head_output(tmp_path: Path, monkeypatch, room: int, source: bytes):
    """What a head writes to driver.log and to its own output for ``source``."""
    said: list[str] = []
    out = bytearray()
    monkeypatch.setattr(driver_output, "to_stdout", out.extend)
    output = DriverOutput(tmp_path / "driver.log", lambda line: (
        said.append(line), out.extend(f"[rayhpc head +  1.0s] {line}\n".encode())))
    log = FullAfter(room)
    output._log = log
    output.copy(io.BufferedReader(io.BytesIO(source)))
    output.close()
    return output, bytes(log.data), bytes(out), said


def test_the_drivers_output_is_stored_once_not_echoed(tmp_path, monkeypatch):
    output, stored, out, said = head_output(tmp_path, monkeypatch, 10**9, LINES[:5000])
    assert stored == LINES[:5000]
    assert out == b"" and said == [] and output.problem == ""


def test_a_full_driver_log_sends_the_rest_to_the_heads_output_after_a_marker(tmp_path,
                                                                           monkeypatch):
    output, stored, out, said = head_output(tmp_path, monkeypatch, 250_050, LINES)
    assert stored == LINES[:250_050]  # the short write is kept: the cut is mid-line
    assert said[0] == overflow_marker(250_050, "the run directory is full (No space left on "
                                      "device)")
    assert said[-1] == (f"the driver's output ended: {len(LINES)} bytes, the first 250050 in "
                        f"driver.log, the other {len(LINES) - 250_050} only in this node's output")
    body = out.split(b"\n", 1)[1].rsplit(b"\n[rayhpc", 1)[0] + b"\n"
    assert all(line.startswith(OVERFLOW_PREFIX) for line in body.splitlines())
    assert body.replace(OVERFLOW_PREFIX, b"") == LINES[250_050:]
    # The launcher's side puts it back together, from the head's output in any chunks.
    parser = OverflowParser()
    picked = b"".join(parser.feed(out[i:i + 777]) for i in range(0, len(out), 777))
    assert parser.stored == 250_050 and parser.ended
    assert stored + picked == LINES


def test_a_line_longer_than_a_piece_is_passed_on_as_one_line(tmp_path, monkeypatch):
    long_line = b"y" * (3 * driver_output.PIECE_BYTES) + b"\n"
    _, stored, out, _ = head_output(tmp_path, monkeypatch, 10, b"0123456789abc\n" + long_line)
    parser = OverflowParser()
    assert stored + parser.feed(out) == b"0123456789abc\n" + long_line
    # The marker names the prefix; then the rest of the first line, and the long one.
    assert out.count(b"\n" + OVERFLOW_PREFIX) == 2


def test_a_driver_log_that_cannot_be_made_overflows_from_the_start(tmp_path, monkeypatch):
    said: list[str] = []
    monkeypatch.setattr(driver_output, "to_stdout", lambda data: None)
    output = DriverOutput(tmp_path / "missing" / "driver.log", said.append)
    assert output.problem and parse_overflow_marker(said[0])[0] == 0


def test_the_marker_is_found_only_in_the_heads_own_lines():
    assert parse_overflow_marker(overflow_marker(12, "the run directory is full (x)")) == \
        (12, "the run directory is full (x)")
    parser = OverflowParser()
    # Before the marker, a line that looks like the driver's is the agent's own.
    assert parser.feed(OVERFLOW_PREFIX + b"not yet\n") == b""
    marker = f"[rayhpc head +  2.0s] {overflow_marker(5, 'why')}\n".encode()
    assert parser.feed(marker + b"[rayhpc head +  2.1s] other\ndri") == b""
    assert parser.feed(b"ver| a\n") == b"a\n"
    assert parser.stored == 5 and not parser.ended
    assert parser.feed(b"dr\n" + OVERFLOW_PREFIX + b"b\n") == b"b\n"  # a short agent line


def test_followed_output_is_bounded_and_ends_with_its_stream():
    marker = f"[rayhpc head] {overflow_marker(0, 'why')}\n".encode()
    chunks = [marker] + [OVERFLOW_PREFIX + b"z" * 100 + b"\n"] * 500
    followed = FollowedOutput(lambda: iter(chunks)).start()
    taken = bytearray()
    while not followed.done():
        taken += followed.take(1000)
    assert bytes(taken) == b"".join([b"z" * 100 + b"\n"] * 500)
    assert followed._queue.maxsize > 0  # the stream waits for the console


class Overflowed:
    """A head's output whose marker said driver.log holds ``stored`` bytes."""

    def __init__(self, stored: int, rest: bytes):
        self.stored, self.why, self.rest = stored, "the run directory is full", rest

    def take(self, limit: int) -> bytes:
        out, self.rest = self.rest[:limit], self.rest[limit:]
        return out

    def waiting(self) -> bool:
        return bool(self.rest)

    def done(self) -> bool:
        return not self.rest


def test_the_console_shows_driver_log_then_the_heads_output_line_for_line(tmp_path):
    (tmp_path / "driver.log").write_bytes(LINES[:3_006_464])
    out = io.StringIO()
    watcher = RunWatcher(tmp_path, out)
    watcher.poll()  # before the marker is known: driver.log as far as it goes
    watcher.overflow = Overflowed(3_006_464, LINES[3_006_464:])
    while watcher.poll():
        pass
    watcher.flush()
    lines = out.getvalue().splitlines()
    warnings = [line for line in lines if line.startswith("rayhpc: warning:")]
    assert [line for line in lines if not line.startswith("rayhpc:")] == \
        LINES.decode().splitlines()
    assert len(warnings) == 2, warnings
    assert "driver.log takes no more after 3006464 bytes" in warnings[0]
    assert warnings[1].startswith(f"rayhpc: warning: {len(LINES) - 3_006_464} bytes of the "
                                  "driver's output (after the first 3006464 in ")


def test_the_console_reads_a_big_backlog_in_bounded_steps(tmp_path, monkeypatch):
    monkeypatch.setattr(watch, "READ_BYTES", 1000)
    (tmp_path / "driver.log").write_bytes(LINES[:10_050])  # a partial last line
    out = io.StringIO()
    watcher = RunWatcher(tmp_path, out)
    steps = 1
    while watcher.poll():
        steps += 1
        assert len(watcher._pending) <= 1000 + watch.LINE_MAX_BYTES
    assert steps == 11
    assert out.getvalue() == LINES[:10_000].decode()
    watcher.flush()
    assert out.getvalue() == LINES[:10_050].decode() + "\n"


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_non_utf8_and_split_characters_are_shown_with_replacement(tmp_path, monkeypatch, cut):
    monkeypatch.setattr(watch, "READ_BYTES", cut)
    (tmp_path / "driver.log").write_bytes("é€\n".encode() + b"\xff\n")
    out = io.StringIO()
    watcher = RunWatcher(tmp_path, out)
    while watcher.poll():
        pass
    watcher.flush()
    assert out.getvalue() == "é€\n\ufffd\n"
