"""A worker's agent (rank > 0): reach the head's agent over TCP, join Ray, follow the head; stop
when the head says so, on SIGTERM/SIGINT/SIGHUP, or when the connection to it closes."""

from __future__ import annotations

import contextlib
import os
import random
import select
import signal
import socket
import threading
import time

from rayhpc.launcher.contract import (
    HEAD_HOST_ENV,
    HeadRecord,
    LaunchSpec,
    RecordError,
    RunPaths,
    read_record,
    run_dir_problem,
)
from rayhpc.launcher.node.agent import RAY_STOP_GRACE_HEADLESS_S, RAY_STOP_GRACE_S, Agent
from rayhpc.launcher.node.channel import Channel, backoff, secret_of
from rayhpc.launcher.node.harvest import harvest_spread_s
from rayhpc.launcher.node.head_route import head_route_environment
from rayhpc.launcher.node.launch_failed import LaunchFailed
from rayhpc.launcher.node.processes import POLL_S, RayCli
from rayhpc.launcher.node.ray_start import node_ip

# Workers wait this long (on top of the join timeout) for the head to come up at all; the head
# tells them to stop sooner when it fails.
HEAD_START_ALLOWANCE_S = 600
# While it probes the head's port, a worker looks at the run directory only this often (the
# stop file; head.json when the head's host is not known in advance).
FILE_CHECK_S = 15.0
RAY_START_TRIES = 3  # `ray start` on a worker, with jittered backoff between tries


class Worker(Agent):
    def __init__(self, paths: RunPaths, node: str, spec: LaunchSpec, group: str = "",
                 block: str = "", stop_at: float = 0.0):
        super().__init__(paths, node, spec, group)
        self.block = block  # the grown block it came with ("" : the launch's own job)
        # When the block's walltime ends, where no job script says so (epoch s; 0: never).
        self.stop_at = stop_at
        self.channel: Channel | None = None
        self.head: HeadRecord | None = None
        self.told_stop = threading.Event()
        self.head_gone = threading.Event()
        self.head_known = threading.Event()

    def stop_requested(self) -> bool:
        return self.signalled is not None or self.told_stop.is_set() or self.head_gone.is_set()

    def run(self) -> int:
        # NCCL and Gloo on the interface that reaches the head, unless set (before the Ray CLI
        # starts: its environment is Ray's on this node).
        self.env.update(head_route_environment(self.env, self.head_host()))
        cli = RayCli(self.env)  # imports Ray while we look for the head
        state, reason = "failed", ""
        try:
            if not self.reach_head():
                cli.cancel()
                reason = "stopped before reaching the head"
                state = "stopped"
            elif not self.wait_for_head_up():
                cli.cancel()
                state, reason = self.ending("before joining")
            else:
                self.join(cli)
                self.follow()
                state, reason = self.ending("")
        except (LaunchFailed, OSError) as exc:
            cli.cancel()
            reason = run_dir_problem(exc) if isinstance(exc, OSError) else str(exc)
            self.say(f"error: {reason}")
            self.failed = True
            self.tell(state="failed", reason=reason)
        self.stop_ray(RAY_STOP_GRACE_HEADLESS_S if self.head_gone.is_set() else RAY_STOP_GRACE_S)
        time.sleep(random.uniform(0, harvest_spread_s(self.spec.nodes,
                                                      self.spec.stop_timeout)))
        record = self.final_record(state, reason=reason, logs=self.harvest_logs())
        # The head writes every node's record at once; ours ourselves only if it cannot.
        if self.head_gone.is_set() or not (self.channel and self.channel.send(
                state=state, reason=reason, final=record.to_json())):
            self.write_record(record)
        self.say(f"{state} ({reason})")
        if self.channel is not None:
            self.channel.close()
        if self.signalled:
            return 128 + self.signalled
        return 0 if state == "stopped" else 1

    def ending(self, when: str) -> tuple[str, str]:
        if self.head_gone.is_set():
            return "lost-head", "the head's agent is gone" + (f" ({when})" if when else "")
        if self.signalled is not None:
            return "stopped", f"got {signal.Signals(self.signalled).name}"
        return "stopped", "the head said stop" + (f" {when}" if when else "")

    def tell(self, **message: object) -> None:
        if self.channel is not None:
            self.channel.send(**message)

    def head_host(self) -> str:
        """Where the head's agent listens: given by the launcher (the job script's first host,
        the local head's name), else learned from head.json."""
        return (os.environ.get(HEAD_HOST_ENV)
                or (self.spec.node_names[0] if self.spec.node_names else ""))

    def reach_head(self) -> bool:
        """Connect to the head's agent: probe its port with jittered backoff; look at the run
        directory only every FILE_CHECK_S (a stop before we got through; head.json where the
        head's host is not known, or not answering after a while). False: stopped first."""
        host, port = self.head_host(), self.spec.ports["agent"]
        deadline = time.monotonic() + self.spec.join_timeout + HEAD_START_ALLOWANCE_S
        next_file_check = time.monotonic() + FILE_CHECK_S * random.uniform(0.5, 1.0)
        attempt, started = 0, time.monotonic()
        while self.signalled is None:
            if host:
                try:
                    sock = socket.create_connection((host, port), timeout=2.0)
                except OSError:
                    pass
                else:
                    self.channel = Channel(sock)
                    self.channel.send(node=self.node, secret=secret_of(self.token),
                                      group=self.group.name if self.group else "",
                                      block=self.block)
                    threading.Thread(target=self._listen, daemon=True).start()
                    return True
            if time.monotonic() >= next_file_check:
                next_file_check = time.monotonic() + FILE_CHECK_S * random.uniform(0.75, 1.25)
                if self.paths.stop.exists():
                    return False
                # No host given, or none reached there for a while (the head runs elsewhere
                # than the job script thought): its own word, once written.
                if not host or time.monotonic() - started > 2 * FILE_CHECK_S:
                    head = self.head_file()
                    host = head.ip if head else host
            if time.monotonic() > deadline:
                raise LaunchFailed(f"could not reach the head's agent at {host or '?'}:{port} "
                                   f"in {self.spec.join_timeout + HEAD_START_ALLOWANCE_S} s")
            time.sleep(backoff(attempt))
            attempt += 1
        return False

    def _listen(self) -> None:
        """Messages from the head: its address, then stop; the connection's end: head gone."""
        assert self.channel is not None
        sock = self.channel.sock
        while True:
            try:
                readable, _, _ = select.select([sock], [], [], 5.0)
            except (OSError, ValueError):
                readable = True
            if not readable:
                continue
            messages = self.channel.read()
            if messages is None:
                if not self.told_stop.is_set():
                    self.say("the head's agent is gone: stopping")
                self.head_gone.set()
                return
            for message in messages:
                if "head" in message:
                    try:
                        self.head = HeadRecord.from_json(message["head"], "the head's message")
                    except ValueError as exc:  # not this rayhpc's head: it never will be
                        self.say(f"error: {exc}")
                        self.head_gone.set()
                        return
                    self.head_known.set()
                if "stop" in message:
                    self.say(f"the head says stop ({message['stop']})")
                    self.told_stop.set()

    def head_file(self) -> HeadRecord | None:
        """head.json, once the head wrote it (None before, or when it is not a head's)."""
        try:
            return read_record(self.paths.head, HeadRecord)
        except RecordError as exc:
            self.say(f"{exc}: waiting for the head's own word")
            return None

    def wait_for_head_up(self) -> bool:
        """Until the head's GCS is up (the head tells us its address). False: stopped first."""
        self.tell(state="waiting")
        while not self.stop_requested():
            if self.head_known.wait(timeout=POLL_S):
                return True
        return False

    def join(self, cli: RayCli) -> None:
        """`ray start` against the head; tried again with jittered backoff when it fails (a GCS
        busy with a thousand registrations can refuse some)."""
        assert self.head is not None
        self.ip = node_ip(self.spec.interface, True)
        self.tell(state="starting", ip=self.ip)
        self.preflight(self.head.versions)  # refused by name before it joins
        self.say(f"joining {self.head.address} from {self.ip}")
        for attempt in range(RAY_START_TRIES):
            try:
                self.ray(*self.start_args(self.head.address), cli=cli, interruptible=True)
                break
            except LaunchFailed as exc:
                self.stop_ray(RAY_STOP_GRACE_HEADLESS_S)  # whatever the failed try started
                if self.stop_requested():
                    return  # the head stopped meanwhile (its GCS went): not this node's failure
                if attempt + 1 == RAY_START_TRIES:
                    raise
                wait = backoff(attempt, first=1.0, most=8.0)
                self.say(f"{exc}; trying again in {wait:.1f} s")
                time.sleep(wait)
                cli = RayCli(self.env)
        if not self.stop_requested():
            self.tell(state="joined", ip=self.ip)

    def follow(self) -> None:
        """Until the head says stop, its agent is gone, or a signal: no polling of anything."""
        while not self.stop_requested():
            self.told_stop.wait(timeout=POLL_S)
            if self.stop_at and self.block and time.time() >= self.stop_at:
                self.stop_at = 0.0  # the block's walltime (local site): the head releases it
                with contextlib.suppress(OSError):
                    self.paths.request_block_stop(self.block, f"walltime of block {self.block}")
