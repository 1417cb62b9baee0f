"""The head's control server at scale, without Ray or an engine: more connections than
select() can watch, and its per-state index (what the head asks on every message) following
every change of state, a reconnect and a closed connection."""

from __future__ import annotations

import resource
import socket
import time

import pytest

from rayhpc.launcher.node import channel, report

PEERS = 1100  # past select()'s FD_SETSIZE of 1024: the server must not use select()
SECRET = channel.secret_of("token")


def wait_until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def server():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * PEERS + 100  # both ends of every connection live in this process
    if hard < needed:
        pytest.skip(f"open-files hard limit {hard} < {needed}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    server = channel.ControlServer(0, SECRET, ("127.0.0.1",))
    yield server
    server.close()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def connect(server: channel.ControlServer, name: str) -> channel.Channel:
    port = server.listeners[0].getsockname()[1]
    agent = channel.Channel(socket.create_connection(("127.0.0.1", port)))
    agent.send(node=name, secret=SECRET)
    return agent


def test_more_connections_than_select_can_watch_and_the_state_index_follows(server):
    agents = [connect(server, f"w{i:04d}") for i in range(PEERS)]
    try:
        assert max(a.sock.fileno() for a in agents) > 1024
        wait_until(lambda: server.count("waiting") == PEERS)
        # The last ones have descriptors past 1024 on the head's side too.
        for agent in agents[-10:]:
            agent.send(state="joined", ip="10.0.0.2")
        wait_until(lambda: server.count("joined") == 10)
        assert server.count("waiting") == PEERS - 10
        assert server.names("joined") == {f"w{i:04d}" for i in range(PEERS - 10, PEERS)}
        assert not server.settled()
        # An agent back on a new connection under its name (its old one closed) is counted
        # once, in its new state.
        agents[0].close()
        wait_until(lambda: server.count("gone") == 1)
        agents[0] = connect(server, "w0000")
        wait_until(lambda: server.count("gone") == 0)
        assert server.count("waiting") == PEERS - 10
        assert len(server.records()) == PEERS
        # Every agent ends: a final state or a closed connection; then the head is settled.
        for index, agent in enumerate(agents):
            if index % 2:
                agent.send(state="stopped", reason="the head said stop")
            else:
                agent.close()
        wait_until(server.settled)
        assert server.count("stopped") + server.count("gone") == PEERS
        assert server.count("waiting") == server.count("joined") == 0
    finally:
        for agent in agents:
            agent.close()


@pytest.mark.parametrize(("nodes", "every_s"), [(2, 1.0), (1000, 1.0), (4096, 4.096),
                                                 (10000, 10.0)])
def test_status_json_is_rewritten_less_often_as_the_cluster_grows(nodes, every_s):
    """Every node is in status.json (2.3 MB at 10,000 nodes): its rate falls as N grows."""
    assert report.status_every_s(nodes) == every_s
