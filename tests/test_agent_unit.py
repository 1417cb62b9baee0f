"""The node agent's logic that needs no cluster: rank, IP, sizes, ray start arguments."""

import socket

import pytest

from launcher import agent
from launcher.spec import LaunchSpec, node_names


def spec_json(**kw):
    return LaunchSpec(run_id="20260101-000000-abcd", site="local", scheduler="local",
                      runtime="docker", nodes=3, shared="/s", driver="python d.py",
                      image="img", node_names=node_names(3), **kw).to_json()


@pytest.mark.parametrize("environ, rank", [
    ({"SLURM_PROCID": "0"}, 0),
    ({"ALPS_APP_PE": "3"}, 3),
    ({"PMI_RANK": "2"}, 2),
    ({"PALS_RANKID": "5"}, 5),
    ({"OMPI_COMM_WORLD_RANK": "1"}, 1),
    ({"JSM_NAMESPACE_RANK": "7"}, 7),
    ({"SLURM_PROCID": "1", "PMI_RANK": "0"}, 1),  # the scheduler's own variable wins
    ({"PMI_RANK": ""}, None),
    ({}, None),
])
def test_rank_from_each_launcher(environ, rank):
    assert agent.detect_rank(environ) == rank


@pytest.mark.parametrize("version, supported", [
    ("2.60.0", True), ("2.52.0", True), ("2.51.2", False), ("3.0.0rc1", True), ("2.9.3", False),
])
def test_token_auth_only_where_ray_has_it(version, supported):
    assert agent.supports_token_auth(version) is supported


def test_object_store_fits_in_shm():
    gib = 1024 ** 3
    assert agent.object_store_bytes(shm_bytes=2 * gib, mem_bytes=64 * gib) == int(1.6 * gib)
    assert agent.object_store_bytes(shm_bytes=64 * gib, mem_bytes=10 * gib) == 3 * gib
    assert agent.object_store_bytes(shm_bytes=64 * 1024 ** 2, mem_bytes=10 * gib) is None
    assert agent.object_store_bytes(2 * gib, 64 * gib, requested=123456789) == 123456789


def test_temp_dir_length_limit():
    assert agent.temp_dir_fits("/tmp/rh-abcd123")
    assert not agent.temp_dir_fits("/tmp/" + "x" * 60)


def test_head_and_worker_ray_start_arguments():
    spec = spec_json()
    head = agent.ray_start_args(spec, "10.0.0.1", None, 10 ** 9)
    ports = spec["ports"]
    assert "--head" in head and f"--port={ports['gcs']}" in head
    assert "--node-ip-address=10.0.0.1" in head
    assert f"--temp-dir={spec['temp_dir']}" in head
    assert "--dashboard-host=127.0.0.1" in head
    assert "--object-store-memory=1000000000" in head
    assert "--disable-usage-stats" in head
    worker = agent.ray_start_args(spec, "10.0.0.2", f"10.0.0.1:{ports['gcs']}", None)
    assert "--head" not in worker and f"--address=10.0.0.1:{ports['gcs']}" in worker
    assert not any(a.startswith("--object-store-memory") for a in worker)
    assert not any(a.startswith("--dashboard") and "agent" not in a for a in worker)


def test_driver_address_substitution():
    assert agent.driver_command("python x.py --ray-address={address}", "1.2.3.4:5") == \
        "python x.py --ray-address=1.2.3.4:5"


def test_missing_nodes_are_named_with_what_they_were_doing():
    records = {"head": {"state": "joined"}, "worker-1": {"state": "waiting"}}
    assert agent.missing_nodes(["head", "worker-1", "worker-2"], 3, records) == [
        "worker-1 (agent waiting for the head)", "worker-2 (agent never started)"]
    # HPC ranks have no names in advance: count the ones that never showed up.
    assert agent.missing_nodes([], 4, {"n1": {"state": "joined"}, "n2": {"state": "starting"}}) \
        == ["n2 (ray start did not finish)", "2 more node(s) whose agent never started"]


def test_node_ip_never_loopback_for_multi_node(monkeypatch):
    monkeypatch.setattr(socket, "gethostbyname", lambda name: "127.0.1.1")
    with pytest.raises(agent.LaunchFailed, match="resolves to 127.0.1.1"):
        agent.node_ip(None, multi_node=True)
    assert agent.node_ip(None, multi_node=False) == "127.0.1.1"


def test_interface_ip_of_loopback_and_a_missing_interface():
    assert agent.interface_ip("lo") == "127.0.0.1"
    with pytest.raises(agent.LaunchFailed, match="'nosuch0' has no IPv4 address"):
        agent.interface_ip("nosuch0")


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "head.json"
    agent.write_json(target, {"address": "a:1"})
    assert agent.read_json(target) == {"address": "a:1"}
    assert [p.name for p in tmp_path.iterdir()] == ["head.json"]
    assert agent.read_json(tmp_path / "missing.json") is None
