"""The node program's logic that needs no cluster: rank, IP, sizes, ray start arguments, the
control channel, and what the launcher makes of the run directory."""

import io
import json
import os
import socket
import threading
import time

import pytest

from rayhpc.launcher.backends.rundir import busy_gcs_ports
from rayhpc.launcher.backends.watch import RunWatcher, summary
from rayhpc.launcher.contract import RANK_VARS_ENV, read_json, temp_dir_fits, write_json
from rayhpc.launcher.node import channel, harvest, processes, ray_start, report
from rayhpc.launcher.node.head import driver_command
from rayhpc.launcher.node.launch_failed import LaunchFailed
from rayhpc.launcher.node.main import detect_rank
from rayhpc.launcher.node.ray_start import agent_addresses
from rayhpc.launcher.resolve import run_ids as spec_module
from rayhpc.launcher.schedulers import SCHEDULERS
from tests.specs import make_spec

TEMP = "/tmp/rh-test"


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_rank_from_the_variables_each_scheduler_declares(scheduler):
    """The job script names its launcher's rank variables (the scheduler module declares them);
    the node program reads the first that holds a rank, and knows none of its own."""
    names = ",".join(SCHEDULERS[scheduler].rank_vars)
    for var in SCHEDULERS[scheduler].rank_vars:
        assert detect_rank({RANK_VARS_ENV: names, var: "3"}) == 3
    assert detect_rank({RANK_VARS_ENV: names}) is None


@pytest.mark.parametrize("environ, rank", [
    ({"RAYHPC_RANK_VARS": "PALS_RANKID,PMI_RANK", "PALS_RANKID": "3", "SLURM_PROCID": "0"}, 3),
    ({"RAYHPC_RANK_VARS": "PALS_RANKID,PMI_RANK", "PMI_RANK": "2"}, 2),
    ({"RAYHPC_RANK_VARS": "SLURM_PROCID,PMI_RANK", "SLURM_PROCID": "1", "PMI_RANK": "0"}, 1),
    # A stray variable of another launcher (an outer Slurm job) does not decide the role.
    ({"RAYHPC_RANK_VARS": "PALS_RANKID,PMI_RANK", "SLURM_PROCID": "0"}, None),
    ({"RAYHPC_RANK_VARS": "PMI_RANK", "PMI_RANK": ""}, None),
    # No variable named: no rank (the node program is told its role with --role then).
    ({"RAYHPC_RANK_VARS": "", "SLURM_PROCID": "4"}, None),
    ({"SLURM_PROCID": "4"}, None),
])
def test_rank_from_the_variable_the_job_script_names(environ, rank):
    assert detect_rank(environ) == rank


def test_cpus_default_to_what_the_agent_may_run_on(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert ray_start.usable_cpus() == 3
    spec = make_spec("slurm", image="/x.sif")
    assert "--num-cpus=3" in ray_start.ray_start_args(spec, "10.0.0.1", None, None, TEMP, cpus=3)
    spec = make_spec("slurm", image="/x.sif", num_cpus=8, num_gpus=12)
    args = ray_start.ray_start_args(spec, "10.0.0.1", None, None, TEMP, cpus=3)
    assert "--num-cpus=8" in args and "--num-cpus=3" not in args and "--num-gpus=12" in args


def test_the_cluster_bypasses_the_sites_proxy():
    assert ray_start.without_proxy({"PATH": "/bin"}, "10.1.2.3") == {"PATH": "/bin"}
    env = ray_start.without_proxy({"http_proxy": "http://proxy:3128",
                               "no_proxy": "*.alcf.anl.gov,localhost"}, "10.1.2.3")
    assert env["no_proxy"] == env["NO_PROXY"] == "*.alcf.anl.gov,localhost,127.0.0.1,10.1.2.3"


@pytest.mark.parametrize("version, supported", [
    ("2.60.0", True), ("2.52.0", True), ("2.51.2", False), ("3.0.0rc1", True), ("2.9.3", False),
])
def test_token_auth_only_where_ray_has_it(version, supported):
    assert ray_start.supports_token_auth(version) is supported


def test_object_store_fits_in_shm():
    gib = 1024 ** 3
    assert ray_start.object_store_bytes(shm_bytes=2 * gib, mem_bytes=64 * gib) == int(1.6 * gib)
    assert ray_start.object_store_bytes(shm_bytes=64 * gib, mem_bytes=10 * gib) == 3 * gib
    assert ray_start.object_store_bytes(shm_bytes=64 * 1024 ** 2, mem_bytes=10 * gib) is None
    assert ray_start.object_store_bytes(2 * gib, 64 * gib, requested=123456789) == 123456789


def test_temp_dir_length_limit():
    assert temp_dir_fits("/tmp/rh-abcd123")
    assert not temp_dir_fits("/tmp/" + "x" * 60)


def test_head_and_worker_ray_start_arguments():
    # The dashboard's default: the head's cluster address (token-protected; never 0.0.0.0).
    spec = make_spec("slurm", image="/x.sif")
    head = ray_start.ray_start_args(spec, "10.0.0.1", None, 10 ** 9, spec.temp_dir)
    ports = spec.ports
    assert "--head" in head and f"--port={ports['gcs']}" in head
    assert "--node-ip-address=10.0.0.1" in head
    assert f"--temp-dir={spec.temp_dir}" in head
    assert "--dashboard-host=10.0.0.1" in head
    assert "--object-store-memory=1000000000" in head
    assert "--disable-usage-stats" in head
    worker = ray_start.ray_start_args(spec, "10.0.0.2", f"10.0.0.1:{ports['gcs']}", None, TEMP)
    assert "--head" not in worker and f"--address=10.0.0.1:{ports['gcs']}" in worker
    assert not any(a.startswith("--object-store-memory") for a in worker)
    assert not any(a.startswith("--dashboard") and "agent" not in a for a in worker)


def test_driver_address_substitution():
    assert driver_command("python x.py --ray-address={address}", "1.2.3.4:5") == \
        "python x.py --ray-address=1.2.3.4:5"


def test_missing_nodes_are_named_with_what_they_were_doing():
    records = {"head": {"state": "joined"}, "worker-1": {"state": "waiting"}}
    assert report.missing_nodes(["head", "worker-1", "worker-2"], 3, records) == [
        "worker-1 (agent waiting for the head)", "worker-2 (its agent never reached the head)"]
    # HPC ranks have no names in advance: count the ones that never showed up.
    assert report.missing_nodes([], 4, {"n1": {"state": "joined"}, "n2": {"state": "starting"}}) \
        == ["n2 (ray start did not finish)", "2 more node(s) whose agent never reached the head"]


def test_node_ip_never_loopback_for_multi_node(monkeypatch):
    monkeypatch.setattr(socket, "gethostbyname", lambda name: "127.0.1.1")
    with pytest.raises(LaunchFailed, match="resolves to 127.0.1.1"):
        ray_start.node_ip(None, multi_node=True)
    assert ray_start.node_ip(None, multi_node=False) == "127.0.1.1"


def test_interface_ip_of_loopback_and_a_missing_interface():
    assert ray_start.interface_ip("lo") == "127.0.0.1"
    with pytest.raises(LaunchFailed, match="'nosuch0' has no IPv4 address"):
        ray_start.interface_ip("nosuch0")


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "head.json"
    write_json(target, {"address": "a:1"})
    assert read_json(target) == {"address": "a:1"}
    assert [p.name for p in tmp_path.iterdir()] == ["head.json"]
    assert read_json(tmp_path / "missing.json") is None


def test_lost_nodes_are_those_no_longer_alive():
    joined = {"10.0.0.2": "worker-1", "10.0.0.3": "worker-2", "10.0.0.4": "worker-3"}
    assert report.lost_nodes(joined, {"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"}) == []
    assert report.lost_nodes(joined, {"10.0.0.1", "10.0.0.2"}) == ["worker-2", "worker-3"]


def test_watcher_reports_joins_then_losses_and_the_summary_names_them(tmp_path):
    out = io.StringIO()
    watcher = RunWatcher(tmp_path, out)
    for status in ({"joined": 1, "expected": 3}, {"joined": 3, "expected": 3},
                   {"joined": 3, "expected": 3},
                   {"joined": 2, "expected": 3, "lost": ["worker-2"]}):
        write_json(tmp_path / "status.json", status)
        watcher.poll()
    assert out.getvalue().splitlines() == [
        "rayhpc: 1/3 nodes joined", "rayhpc: 3/3 nodes joined",
        "rayhpc: node worker-2 left the cluster; the run goes on without it"]
    write_json(tmp_path / "timing.json", {
        "nodes_expected": 3, "nodes_joined": 3, "nodes_lost": ["worker-2"], "t_submit": 10.0,
        "t_all_joined": 15.5, "t_driver_start": 16.0, "t_driver_end": 46.0,
        "t_teardown_done": 48.0})
    assert summary(tmp_path, 0) == (
        f"rayhpc: run {tmp_path.name}: 3/3 nodes (lost: worker-2), bring-up 5.5 s, "
        "driver 30.0 s, teardown 2.0 s, exit code 0")


def test_a_new_run_id_avoids_the_ports_of_unfinished_runs(tmp_path, monkeypatch):
    ids = iter(["20260101-000000-0001", "20260101-000000-0002"])
    monkeypatch.setattr(spec_module, "new_run_id", lambda: next(ids))
    busy = {spec_module.ports_for("20260101-000000-0001")["gcs"]}
    assert spec_module.unused_run_id(busy) == "20260101-000000-0002"
    # Only unfinished runs of the shared dir hold their ports.
    for run_id, finished in (("20260101-000000-0001", False), ("20260101-000000-0003", True)):
        spec = make_spec("local", run_id=run_id, nodes=2, shared=str(tmp_path))
        spec.run_dir.mkdir(parents=True)
        write_json(spec.run_dir / "spec.json", spec.to_json())
        if finished:
            (spec.run_dir / "exit_code").write_text("0\n")
    assert busy_gcs_ports(tmp_path) == busy


def test_ray_cli_started_ahead_gets_its_arguments_later(monkeypatch):
    monkeypatch.setattr(processes, "RAY_CLI_ARGS_FROM_STDIN",
                        "import json, sys; args = json.loads(sys.stdin.readline()); "
                        "print(' '.join(args)); sys.exit(len(args))")
    cli = processes.RayCli(dict(os.environ))
    assert cli.run(("start", "--address=10.0.0.1:6379")) == (2, "start --address=10.0.0.1:6379\n")


def test_ray_cli_is_killed_when_the_caller_gives_up(monkeypatch):
    monkeypatch.setattr(processes, "RAY_CLI_ARGS_FROM_STDIN", "import time; time.sleep(60)")
    cli = processes.RayCli(dict(os.environ))
    assert cli.run(("start",), give_up=lambda: True) == (None, "")
    assert cli.proc.returncode == -9
    cli.cancel()  # once finished, cancelling is a no-op


def test_log_archive_keeps_daemons_first_and_worker_logs_only_where_needed():
    files = [("raylet.out", 400), ("gcs_server.out", 300), ("worker-aa-01-1.out", 200),
             ("python-core-worker-aa_1.log", 100), ("dashboard_agent.log", 50)]
    kept, dropped = harvest.plan_archive(files, cap=10_000, full=False)
    assert [k[0] for k in kept] == ["dashboard_agent.log", "gcs_server.out", "raylet.out"]
    assert {d[0]: d[2] for d in dropped} == {
        "worker-aa-01-1.out": "worker process log of a node that ended cleanly",
        "python-core-worker-aa_1.log": "worker process log of a node that ended cleanly"}
    # A failed node (or the head) keeps them; the cap keeps the tail of the last file it
    # reaches and drops the rest.
    kept, dropped = harvest.plan_archive(files, cap=700, full=True)
    assert kept == [("dashboard_agent.log", 50, 50), ("gcs_server.out", 300, 300),
                    ("raylet.out", 400, 350)]
    assert [d[0] for d in dropped] == ["python-core-worker-aa_1.log", "worker-aa-01-1.out"]
    assert all(d[2] == "over the cap of 700 bytes" for d in dropped)


@pytest.mark.parametrize("nodes, joining, driving", [
    (3, 0.5, 2.0), (100, 1.0, 3.125), (1024, 10.0, 32.0), (4096, 10.0, 128.0)])
def test_nodes_list_is_asked_less_often_as_the_cluster_grows(nodes, joining, driving):
    assert report.nodes_poll_s(nodes) == joining
    assert report.nodes_poll_s(nodes, during_driver=True) == driving


def test_probing_backs_off_with_jitter_up_to_its_cap():
    waits = [channel.backoff(attempt) for attempt in range(12)]
    assert 0.05 <= waits[0] <= 0.15
    assert all(w <= channel.PROBE_MAX_S * 1.5 for w in waits)
    assert waits[-1] >= channel.PROBE_MAX_S * 0.5


def test_log_archives_are_spread_within_the_heads_wait():
    assert harvest.harvest_spread_s(3, 30) < 0.1  # small clusters: no delay worth the name
    spread = harvest.harvest_spread_s(1024, 30)
    assert 2 * 1024 / spread <= harvest.HARVEST_OPS_PER_S  # ops/s of the archives, all nodes
    assert harvest.harvest_spread_s(100_000, 30) == 15  # never past half the head's wait


def test_control_channel_carries_json_lines_both_ways():
    left, right = socket.socketpair()
    a, b = channel.Channel(left), channel.Channel(right)
    assert a.send(node="n1", secret="s") and a.send(state="joined")
    time.sleep(0.05)
    assert b.read() == [{"node": "n1", "secret": "s"}, {"state": "joined"}]
    a.close()
    assert b.read() is None  # closed: the other side is gone


def test_a_message_larger_than_the_send_buffer_reaches_a_slow_reader_whole():
    """The head's sockets do not block: a full send buffer is waited out, not cut short
    (sendall would raise mid-message and leave half of it on the connection)."""
    left, right = socket.socketpair()
    left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    left.setblocking(False)
    sender, reader = channel.Channel(left), channel.Channel(right)
    big = {"stop": "x" * 500_000}
    got: list[dict] = []

    def read_slowly() -> None:
        time.sleep(0.3)  # the buffer fills first
        while len(got) < 2:
            got.extend(reader.read() or [])

    thread = threading.Thread(target=read_slowly, daemon=True)
    thread.start()
    assert sender.send(**big) and sender.send(state="after")
    thread.join(timeout=10)
    assert got == [big, {"state": "after"}]


def test_a_peer_that_never_reads_is_cut_off_not_sent_half_a_message():
    left, right = socket.socketpair()
    left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    right.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    left.setblocking(False)
    sender = channel.Channel(left)
    started = time.monotonic()
    assert sender.send_data(channel.encode({"stop": "x" * 2_000_000}), timeout=0.3) is False
    assert 0.3 <= time.monotonic() - started < 3
    assert sender.send(state="after") is False  # shut: nothing more goes out
    received = b""
    right.settimeout(2)
    while chunk := right.recv(1 << 16):  # what had gone out, then the end
        received += chunk
    assert 0 < len(received) < 2_000_000 and b"\n" not in received


def test_the_head_accepts_only_agents_holding_the_token():
    server = channel.ControlServer(0, channel.secret_of("token"), ("127.0.0.1",))
    port = server.listeners[0].getsockname()[1]
    try:
        good = channel.Channel(socket.create_connection(("127.0.0.1", port)))
        good.send(node="w1", secret=channel.secret_of("token"))
        good.send(state="joined", ip="10.0.0.2")
        bad = socket.create_connection(("127.0.0.1", port))
        bad.sendall(b'{"node": "w2", "secret": "guess"}\n')
        deadline = time.monotonic() + 5
        while server.count("joined") < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        records = server.records()
        times = records["w1"].pop("times")  # when the head heard of each state: the timeline
        assert records == {"w1": {"state": "joined", "reason": "", "ip": "10.0.0.2",
                                  "group": "", "block": "", "leaving": False, "final": None}}
        assert list(times) == ["connected", "joined"] and times["connected"] <= times["joined"]
        bad.settimeout(5)
        assert bad.recv(10) == b""  # refused: closed by the head
        server.announce(head={"address": "10.0.0.1:6379"})
        good.sock.settimeout(5)
        assert json.loads(good.sock.recv(1000)) == {"head": {"address": "10.0.0.1:6379"}}
        good.close()
        while server.records()["w1"]["state"] != "gone" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.records()["w1"]["state"] == "gone"  # a closed connection: node lost
    finally:
        server.close()


def wait_until(condition, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_head_keeps_the_first_worker_that_failed_with_its_reason():
    """What the head's wait looks at (in O(1), whatever the node count): the first worker whose
    agent said "failed", with its reason; kept once its connection closes; a later failure
    does not replace it; joined and waiting workers are no failures."""
    server = channel.ControlServer(0, channel.secret_of("token"), ("127.0.0.1",))
    port = server.listeners[0].getsockname()[1]
    agents = []
    try:
        for name in ("w1", "w2", "w3"):
            agent = channel.Channel(socket.create_connection(("127.0.0.1", port)))
            agent.send(node=name, secret=channel.secret_of("token"))
            agents.append(agent)
        w1, w2, w3 = agents
        w1.send(state="joined", ip="10.0.0.2")
        w2.send(state="starting", ip="10.0.0.3")
        wait_until(lambda: server.count("starting") == 1 and server.count("joined") == 1)
        assert server.first_failure() is None
        reason = "preflight on w2: versions: Ray 2.59.0 here, Ray 2.60.0 on the head; fix"
        w2.send(state="failed", reason=reason)
        wait_until(lambda: server.first_failure() is not None)
        assert server.first_failure() == ("w2", reason)
        record = server.records()["w2"]
        assert set(record.pop("times")) == {"connected", "starting", "failed"}
        assert record == {"state": "failed", "reason": reason, "ip": "10.0.0.3", "group": "",
                          "block": "", "leaving": False, "final": None}
        w3.send(state="failed", reason="`ray start` failed on w3 (exit 1): ...")
        w2.send(state="failed", reason=reason, final={"node": "w2", "state": "failed"})
        wait_until(lambda: server.count("failed") == 2)
        w2.close()
        wait_until(lambda: not server.peers["w2"].connected)
        assert server.records()["w2"]["state"] == "failed"  # a final state stays
        assert server.first_failure() == ("w2", reason)
        assert [peer.name for peer in server.failed] == ["w2", "w3"]  # each once
    finally:
        for agent in agents:
            agent.close()
        server.close()


def test_a_worker_that_connects_after_the_stop_hears_stop_not_the_address():
    server = channel.ControlServer(0, channel.secret_of("token"), ("127.0.0.1",))
    port = server.listeners[0].getsockname()[1]
    try:
        server.announce(head={"address": "10.0.0.1:6379"})
        server.announce(stop="the head is tearing down")
        late = channel.Channel(socket.create_connection(("127.0.0.1", port)))
        late.send(node="w9", secret=channel.secret_of("token"))
        late.sock.settimeout(5)
        assert json.loads(late.sock.recv(1000)) == {"stop": "the head is tearing down"}
        late.close()
    finally:
        server.close()


@pytest.mark.parametrize("node, reason, error", [
    ("worker-1", "preflight on worker-1: versions: Ray 2.59.0 here; run one image",
     "preflight on worker-1: versions: Ray 2.59.0 here; run one image"),
    ("worker-1", "`ray start` failed on worker-1 (exit 1): boom",
     "`ray start` failed on worker-1 (exit 1): boom"),
    # worker-10's words do not name worker-1
    ("worker-1", "preflight on worker-10: shm", "worker-1 failed before joining: preflight on "
                                                 "worker-10: shm"),
    ("nid001", "run directory /x is read-only", "nid001 failed before joining: run directory "
                                                 "/x is read-only"),
    ("nid001", "", "nid001 failed before joining: its agent failed (no reason given)"),
])
def test_a_failed_worker_is_named_in_the_launchs_error(node, reason, error):
    assert report.failed_before_joining(node, reason) == error


def test_a_peer_without_the_token_cannot_grow_the_heads_buffer_or_stay(monkeypatch):
    """Data without a newline before the hello, and a silent connection, are cut off; a
    message over the bound is refused even from an agent that showed the token."""
    monkeypatch.setattr(channel, "HELLO_TIMEOUT_S", 0.5)
    server = channel.ControlServer(0, channel.secret_of("token"), ("127.0.0.1",))
    port = server.listeners[0].getsockname()[1]
    try:
        flood = socket.create_connection(("127.0.0.1", port))
        flood.settimeout(5)
        with pytest.raises(OSError):  # reset once the head closed it
            for _ in range(64):
                flood.sendall(b"x" * 65536)
                time.sleep(0.01)
        silent = socket.create_connection(("127.0.0.1", port))
        silent.settimeout(5)
        started = time.monotonic()
        assert silent.recv(10) == b""  # closed by the head after the hello timeout
        assert time.monotonic() - started < 3
        agent = channel.Channel(socket.create_connection(("127.0.0.1", port)))
        agent.send(node="w1", secret=channel.secret_of("token"))
        agent.sock.sendall(b'{"state": "' + b"y" * (channel.MAX_MESSAGE_BYTES + 10))
        deadline = time.monotonic() + 5
        while server.records().get("w1", {}).get("state") != "gone":
            assert time.monotonic() < deadline, server.records()
            time.sleep(0.02)
    finally:
        server.close()


def test_the_heads_agent_listens_on_the_nodes_addresses_not_every_interface():
    addresses = agent_addresses(None, multi_node=False)
    assert addresses and "" not in addresses and "0.0.0.0" not in addresses
    assert agent_addresses("no-such-interface0", multi_node=True) == [""]


def test_a_hello_and_a_long_message_arriving_together_are_both_taken():
    """The bound before the token applies to what comes before the hello, not to what an agent
    sends right after it in the same read."""
    server = channel.ControlServer(0, channel.secret_of("token"), ("127.0.0.1",))
    port = server.listeners[0].getsockname()[1]
    try:
        sock = socket.create_connection(("127.0.0.1", port))
        hello = json.dumps({"node": "w1", "secret": channel.secret_of("token")}).encode()
        state = json.dumps({"state": "starting", "reason": "r" * 20_000}).encode()
        sock.sendall(hello + b"\n" + state + b"\n")
        wait_until(lambda: server.records().get("w1", {}).get("state") == "starting")
        sock.close()
    finally:
        server.close()
