"""The control plane: JSON lines over TCP between each worker's agent and the head's agent.

Workers find the head by probing its agent port (jittered backoff), show the run's token,
report their state and get the head's address and "stop" over that one connection; a closed
connection means the other side is gone. One thread and one selector serve every worker."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import random
import select
import selectors
import socket
import threading
import time

from rayhpc.launcher.contract import FINAL_STATES, LEFT

# Keepalive on the control connection: a dead host (no FIN) is noticed in about 90 s.
KEEPALIVE = {"TCP_KEEPIDLE": 30, "TCP_KEEPINTVL": 10, "TCP_KEEPCNT": 6}
# Finding the head: probe its agent port with backoff from 0.1 s to 2 s (x0.5-1.5 jitter).
PROBE_FIRST_S, PROBE_MAX_S = 0.1, 2.0
# Bounds on what a peer may send: one message (a node's final record is a few KiB), and, before
# it has shown the run's token, its hello and the time it may take to send it. A port anyone on
# the network can reach must not let them fill the head's memory or pin its CPU.
MAX_MESSAGE_BYTES = 1 << 20
MAX_HELLO_BYTES = 4096
# A peer that has not read what the head sends for this long is given up (its connection shut):
# the head's sockets do not block, and half a message would garble every one after it.
SEND_TIMEOUT_S = 5.0
HELLO_TIMEOUT_S = 10.0
ACCEPT_BATCH = 1024  # connections the head accepts at once before it serves the others


def backoff(attempt: int, first: float = PROBE_FIRST_S, most: float = PROBE_MAX_S) -> float:
    """Seconds before try ``attempt`` + 1: doubling from ``first`` up to ``most``, jittered
    (x0.5-1.5) so that a thousand nodes do not knock at once."""
    return min(most, first * 2 ** attempt) * random.uniform(0.5, 1.5)


def secret_of(token: str) -> str:
    """What a worker shows the head agent: proof that it holds the run's token."""
    return hashlib.sha256(("rayhpc-agent:" + token).encode()).hexdigest()


class Channel:
    """One connection: send messages (thread-safe), read them as they come."""

    def __init__(self, sock: socket.socket, limit: int = MAX_MESSAGE_BYTES):
        self.sock = sock
        self.limit = limit  # the most bytes one message may have (an unfinished one too)
        self._buffer = b""
        self._lock = threading.Lock()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in KEEPALIVE.items():
            if hasattr(socket, name):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)

    def send(self, **message: object) -> bool:
        return self.send_data(encode(message))

    def send_data(self, data: bytes, timeout: float = SEND_TIMEOUT_S) -> bool:
        """Messages already encoded (one broadcast to thousands is encoded once), sent whole.
        On a socket that does not block, a full send buffer is waited out for ``timeout``;
        past that the connection is shut (the peer then reads its end, the head's loop its
        close) rather than left with part of a message on it."""
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        with self._lock:
            while view:
                try:
                    view = view[self.sock.send(view):]
                except (BlockingIOError, InterruptedError):
                    left = deadline - time.monotonic()
                    if left <= 0 or not writable(self.sock, left):
                        with contextlib.suppress(OSError):
                            self.sock.shutdown(socket.SHUT_RDWR)
                        return False
                except OSError:
                    return False
        return True

    def read_lines(self) -> list[bytes] | None:
        """The lines that have ended since the last read (the socket is readable); None once
        it closed, or when more than ``limit`` bytes came without an end of line."""
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            return None
        if not data:
            return None
        if b"\n" not in data:  # no message ended: nothing to split, only to bound
            self._buffer += data
            return [] if len(self._buffer) <= self.limit else None
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        return lines

    def read(self) -> list[dict] | None:
        """What has arrived: messages, or None once it closed or sent one longer than
        ``limit`` (the connection is then to be closed)."""
        lines = self.read_lines()
        if lines is None or any(len(line) > self.limit for line in lines) or self.overfull():
            return None
        return [message for message in map(parse_message, lines) if message is not None]

    def overfull(self) -> bool:
        """More is held of an unfinished message than one may be long."""
        return len(self._buffer) > self.limit

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def writable(sock: socket.socket, timeout: float) -> bool:
    """Whether ``sock`` can take more within ``timeout`` s (poll: the head's descriptors go
    past select's 1024)."""
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    return bool(poller.poll(timeout * 1000))


def encode(message: dict) -> bytes:
    return (json.dumps(message) + "\n").encode()


def parse_message(line: bytes) -> dict | None:
    """One JSON object line (None: not one)."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


class Peer:
    """A worker's agent as the head sees it."""

    def __init__(self, name: str, channel: Channel):
        self.name = name
        self.channel = channel
        self.state = "waiting"
        self.reason = ""
        self.ip = ""
        self.group = ""
        self.block = ""  # the grown block it came with ("" : the launch's own job)
        self.leaving = False  # its block was released: its end is `left`, not a loss
        self.connected = True
        self.final: dict | None = None  # its last record, sent when it stopped
        # When the head heard of each state (the head's clock, one for every node): the run's
        # timeline (`connected`: its agent reached the head, and waits for the head's address).
        self.times = {"connected": time.time()}

    def record(self) -> dict:
        return {"state": self.state, "reason": self.reason, "ip": self.ip, "group": self.group,
                "block": self.block, "leaving": self.leaving, "final": self.final,
                "times": self.times}


class ControlServer:
    """The head agent's side: accepts the workers' agents (who must show the run's token),
    tracks what each says, tells them the head's address and, at the end, to stop. One thread,
    one selector, whatever the node count."""

    def __init__(self, port: int, secret: str, hosts: tuple[str, ...] = ("",)):
        """Listen on ``hosts`` (the node's cluster addresses; "" : every interface)."""
        self.secret = secret
        self.listeners = [socket.create_server((host, port), backlog=4096) for host in hosts]
        self.selector = selectors.DefaultSelector()
        for listener in self.listeners:
            listener.setblocking(False)
            self.selector.register(listener, selectors.EVENT_READ)
        self.peers: dict[str, Peer] = {}
        # The peers in each state, kept as they change: the head asks on every message while
        # thousands join and end, and must not look at N peers each time.
        self._by_state: collections.defaultdict[str, set[str]] = collections.defaultdict(set)
        self._by_channel: dict[Channel, Peer] = {}
        self.changed = threading.Condition()
        self.version = 0  # bumped on every change of a peer
        self.head_message: dict | None = None
        # Workers whose agent said it failed (before joining, e.g. its preflight), in the order
        # they said so: kept as they come, so that the head's wait looks at it in O(1).
        self.failed: list[Peer] = []
        self._closing = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        unnamed: dict[Channel, float] = {}  # connections yet to show the token: since when
        while not self._closing:
            try:
                events = self.selector.select(timeout=1.0)
            except OSError:
                return
            for key, _ in events:
                if key.fileobj in self.listeners:
                    self._accept(key.fileobj, unnamed)
                    continue
                channel = key.data
                lines = channel.read_lines()
                if lines is None or not self._take(channel, lines, unnamed):
                    self._drop(channel)
                    unnamed.pop(channel, None)
                    self._closed(channel)
            # A peer that has not shown the token in time is not one of this run's agents.
            # Oldest first (kept in the order accepted): only those too old are looked at.
            too_old = time.monotonic() - HELLO_TIMEOUT_S
            while unnamed:
                channel, since = next(iter(unnamed.items()))
                if since >= too_old:
                    break
                del unnamed[channel]
                self._drop(channel)

    def _accept(self, listener: socket.socket, unnamed: dict[Channel, float]) -> None:
        """The connections waiting on ``listener``, a batch at a time: thousands of nodes
        knock within a second, and what the listen queue cannot hold waits for a SYN resent
        one, three, seven seconds later."""
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = listener.accept()
            except OSError:  # none left (BlockingIOError), or out of file descriptors
                return
            sock.setblocking(False)
            channel = Channel(sock, limit=MAX_HELLO_BYTES)
            unnamed[channel] = time.monotonic()
            self.selector.register(sock, selectors.EVENT_READ, channel)

    def _take(self, channel: Channel, lines: list[bytes], unnamed: dict[Channel, float]
              ) -> bool:
        """Handle what a connection sent; False: close it. Each line is held to the bound in
        force when it is handled (the hello raises it for the lines after it, also those of the
        same read); a connection's first line must be this run's hello."""
        for line in lines:
            message = parse_message(line) if len(line) <= channel.limit else None
            if channel in unnamed:
                if message is None or not self._hello(channel, message):
                    return False
                del unnamed[channel]
                channel.limit = MAX_MESSAGE_BYTES
            elif len(line) > channel.limit:
                return False
            elif message is not None:
                self._update(channel, message)
        return not channel.overfull()

    def _drop(self, channel: Channel) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(channel.sock)
        channel.close()

    def _hello(self, channel: Channel, message: dict) -> bool:
        if message.get("secret") != self.secret or not message.get("node"):
            return False  # not one of this run's agents
        with self.changed:
            peer = Peer(str(message["node"]), channel)
            peer.group = str(message.get("group") or "")
            peer.block = str(message.get("block") or "")
            old = self.peers.get(peer.name)
            if old is not None and old.connected:
                peer.name = f"{peer.name}#{len(self.peers)}"  # two agents, one host name
            elif old is not None:
                self._by_state[old.state].discard(old.name)  # back on a new connection
            self.peers[peer.name] = peer
            self._by_state[peer.state].add(peer.name)
            self._by_channel[channel] = peer
            self._bump()
        if self.head_message is not None:
            channel.send(**self.head_message)
        return True

    def _update(self, channel: Channel, message: dict) -> None:
        with self.changed:
            peer = self._by_channel.get(channel)
            if peer is None:
                return
            state = str(message.get("state", peer.state))
            if state == "failed" and peer.state != "failed":
                self.failed.append(peer)
            reason = str(message.get("reason", peer.reason))
            if state in FINAL_STATES:
                self._end(peer, state, reason)
            else:
                self._set_state(peer, state, reason)
            peer.ip = str(message.get("ip", peer.ip))
            if isinstance(message.get("final"), dict):
                peer.final = message["final"]
            self._bump()

    def _closed(self, channel: Channel) -> None:
        with self.changed:
            peer = self._by_channel.pop(channel, None)
            if peer is not None:
                peer.connected = False
                peer.times.setdefault("disconnected", time.time())
                if peer.state not in (*FINAL_STATES, LEFT):
                    self._end(peer, "gone", "its agent's connection closed")
                self._bump()

    def _set_state(self, peer: Peer, state: str, reason: str) -> None:
        """``peer`` goes into ``state``: the index by state and its times follow."""
        self._by_state[peer.state].discard(peer.name)
        self._by_state[state].add(peer.name)
        peer.times.setdefault(state, time.time())
        peer.state, peer.reason = state, reason

    def _end(self, peer: Peer, state: str, reason: str) -> None:
        """Its agent ended (its final word, or its connection closed): a released node has
        left; any other is as it says."""
        self._set_state(peer, LEFT if peer.leaving else state, reason)

    def _bump(self) -> None:
        self.version += 1
        self.changed.notify_all()

    def announce(self, **message: object) -> None:
        """Tell every worker (and every one that connects later) ``message``."""
        self.head_message = message
        self.broadcast(**message)

    def broadcast(self, **message: object) -> None:
        with self.changed:
            peers = [p for p in self.peers.values() if p.connected]
        data = encode(message)
        for peer in peers:
            peer.channel.send_data(data)

    def release(self, names: list[str], reason: str) -> None:
        """Tell these workers to stop (their block is released): they end as `left`."""
        with self.changed:
            peers = [self.peers[name] for name in names if name in self.peers]
            for peer in peers:
                peer.leaving = True
            self._bump()
        for peer in peers:
            if peer.connected:
                peer.channel.send(stop=reason)

    def first_failure(self) -> tuple[str, str] | None:
        """The first worker whose agent said it failed, and its reason (None: none did)."""
        with self.changed:
            return (self.failed[0].name, self.failed[0].reason) if self.failed else None

    def count(self, state: str) -> int:
        with self.changed:
            return len(self._by_state[state])

    def names(self, state: str) -> set[str]:
        """The workers in ``state`` now."""
        with self.changed:
            return set(self._by_state[state])

    def settled(self) -> bool:
        """Every worker's agent has ended (a final state, or left with its block) or its
        connection has closed."""
        with self.changed:
            ended = sum(len(self._by_state[s]) for s in (*FINAL_STATES, "gone", LEFT))
            return ended == len(self.peers)

    def records(self) -> dict[str, dict]:
        with self.changed:
            return {name: p.record() for name, p in self.peers.items()}

    def poke(self) -> None:
        """Wake whoever waits for a change (something else changed: the driver ended)."""
        with self.changed:
            self._bump()

    def wait(self, version: int, timeout: float) -> int:
        """Until something changed after ``version`` (or ``timeout``); the version now."""
        with self.changed:
            self.changed.wait_for(lambda: self.version != version, timeout=timeout)
            return self.version

    def close(self) -> None:
        self._closing = True
        for listener in self.listeners:
            with contextlib.suppress(OSError):
                listener.close()
