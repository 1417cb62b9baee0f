"""Processes of a node: the Ray CLI in a session of its own, stopping a session's processes
(Ray's in `ray stop`'s order), and the open-files limit."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time

POLL_S = 0.2
# The order `ray stop` stops a node's processes in (None: every other one).
STOP_ORDER = ("raylet", None, "gcs_server")
# The Ray CLI in a process that imports Ray first and reads its arguments (a JSON list) from
# stdin after: a worker imports Ray (a second or more of CPU) while the head is still starting.
RAY_CLI_ARGS_FROM_STDIN = ("import json, sys; from ray.scripts.scripts import cli; "
                           "cli(args=json.loads(sys.stdin.readline()), prog_name='ray')")


class RayCli:
    """One `ray ...` command, started before its arguments are known, in a session of its own:
    what `ray start` starts (the node's Ray) stays in that session, so that stopping this
    run's Ray stops nothing else of the user's on the node."""

    def __init__(self, env: dict):
        # A file, not a pipe: nothing to drain while it runs. Closed by run() or cancel().
        self.output = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-c", RAY_CLI_ARGS_FROM_STDIN], env=env,
                                     stdin=subprocess.PIPE, stdout=self.output,
                                     stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)

    @property
    def session(self) -> int:
        return self.proc.pid

    def run(self, args: tuple[str, ...], give_up=None) -> tuple[int | None, str]:
        """Exit code (None: ``give_up()`` became true first and it was killed) and output."""
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it died early: its output says why
            self.proc.stdin.write(json.dumps(list(args)) + "\n")
            self.proc.stdin.close()
        code = None
        while (code := self.proc.poll()) is None:
            if give_up and give_up():
                self.cancel()
                return None, ""
            time.sleep(POLL_S / 4)
        self.output.seek(0)
        text = self.output.read()
        self.output.close()
        return code, text

    def cancel(self) -> None:
        """Kill it unless it has finished (then its session holds the Ray it started)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.output.close()


def raise_fd_limit() -> tuple[int, int]:
    """Soft open-files limit up to the hard one (Ray holds many sockets per node; its large
    cluster guide asks for 65535 or more). Returns (soft, hard) after."""

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft, hard


def session_processes(session: int) -> list[int]:
    """Processes of a session (from /proc), except its leader."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == session:
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid pgrp session ...: comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == session and fields[0] != "Z":
            found.append(int(entry))
    return found


def process_command(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            words = handle.read().split(b"\0")
    except OSError:
        return []
    return [w.decode(errors="replace") for w in words if w]


def process_comm(pid: int) -> str:
    """The kernel's name of what a process runs (its program, up to 15 bytes)."""
    try:
        with open(f"/proc/{pid}/comm", "rb") as handle:
            return handle.read().strip().decode(errors="replace")
    except OSError:
        return ""


def program_of(pid: int) -> str:
    """The program a process runs (its first word's last part: raylet, gcs_server, python)."""
    command = process_command(pid)
    return command[0].rsplit("/", 1)[-1] if command else ""


def process_names(pids: list[int], leader: list[str] | None, settle_s: float) -> list[str]:
    """The distinct names of ``pids``. A process forked by the session's leader but not yet
    exec'd still shows the leader's command line (``leader``, e.g. ``sh -c 'sleep 300 &'``):
    it is given up to ``settle_s`` to exec, and named by its program (`sh`: a subshell) if it
    does not."""
    deadline = time.monotonic() + settle_s
    while True:
        commands = {pid: process_command(pid) for pid in pids}
        forks = [pid for pid, command in commands.items() if leader and command == leader]
        if not forks or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    names = {(process_comm(pid) or str(pid)) if pid in forks
             else " ".join(commands[pid])[:60] or str(pid) for pid in pids}
    return sorted(names)


def stop_session(session: int, grace_s: float, leader: list[str] | None = None,
                 settle_s: float = 0.5) -> tuple[int, list[str]]:
    """Stop every process of a session; how many were running and their distinct names
    (``leader``: the session leader's command line, see `process_names`). A session holds
    one node's Ray (started by `ray start` in a session of its own) or one driver's leftovers:
    nothing else of the user's on the node. Ray's processes go in `ray stop`'s order: the
    raylet first, the GCS last (a raylet whose GCS is gone waits for it instead of exiting);
    each group gets SIGTERM, then SIGKILL after ``grace_s``."""
    first = session_processes(session)
    names = process_names(first, leader, settle_s) if first else []
    stopped = set(first)
    for group in STOP_ORDER:
        members = [pid for pid in session_processes(session)
                   if group is None or program_of(pid) == group]
        if group is None:  # everything but the GCS
            members = [pid for pid in members if program_of(pid) != STOP_ORDER[-1]]
        stopped.update(members)  # those forked meanwhile count too
        signal_until_gone(members, grace_s)
    return len(stopped), names


def terminate_group(leader: int, kill_after_s: float) -> None:
    """SIGTERM to a process group; SIGKILL to it ``kill_after_s`` later (a timer: this returns
    at once). The whole group: the shell of `shell=True` may be gone while its child lives on."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader, signal.SIGTERM)

    def kill_group() -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(leader, signal.SIGKILL)

    timer = threading.Timer(kill_after_s, kill_group)
    timer.daemon = True
    timer.start()


def signal_until_gone(pids: list[int], grace_s: float) -> None:
    """SIGTERM, wait up to ``grace_s`` for them to go, SIGKILL the rest (and wait for that)."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 2.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while (pids := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not pids:
            return


def alive(pid: int) -> bool:
    """Running (a zombie has ended: only its parent's wait is missing)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"
