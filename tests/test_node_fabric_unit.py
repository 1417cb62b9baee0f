"""The node's side of the fabric settings (launcher.node.head_route): which interface routes to the
head, from the kernel's routing table, and the NCCL / Gloo variables it gives."""

from __future__ import annotations

from rayhpc.launcher.contract import fabric_environment
from rayhpc.launcher.node.head_route import (
    head_route_environment,
    interface_for,
    parse_routes,
    route_interface,
)

# A compute node: the management network (default route) on eth0, the high-speed network on
# hsn0 and hsn1 (10.10.0.0/16, 10.10.128.0/17), a down route, and the container bridge.
ROUTE_TABLE = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
hsn0\t00000A0A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
hsn1\t00800A0A\t00000000\t0001\t0\t0\t0\t0080FFFF\t0\t0\t0
hsn2\t00000B0A\t00000000\t0000\t0\t0\t0\t0000FFFF\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
"""


def test_the_most_specific_usable_route_to_the_head_names_the_interface():
    routes = parse_routes(ROUTE_TABLE)
    assert interface_for(routes, "10.10.3.7") == "hsn0"
    assert interface_for(routes, "10.10.200.1") == "hsn1"  # /17 beats /16
    assert interface_for(routes, "192.168.0.9") == "eth0"
    assert interface_for(routes, "172.17.0.2") == "docker0"
    assert interface_for(routes, "10.11.0.1") == "eth0"  # hsn2's route is down: the default
    assert interface_for(routes, "8.8.8.8") == "eth0"  # the default route
    assert interface_for(routes, "head") is None  # not an address


def test_no_route_and_bad_tables():
    assert interface_for(parse_routes(ROUTE_TABLE.replace("eth0\t00000000", "eth0\t0000FFFF")
                                      ), "8.8.8.8") is None
    assert parse_routes("") == [] and parse_routes("no header here\n") == []
    assert len(parse_routes(ROUTE_TABLE + "short\trow\n")) == 6


def test_route_interface_reads_the_table(tmp_path):
    table = tmp_path / "route"
    table.write_text(ROUTE_TABLE)
    assert route_interface("10.10.3.7", str(table)) == "hsn0"
    assert route_interface("10.10.3.7", str(tmp_path / "missing")) is None


def test_what_the_agent_adds_before_ray_start(tmp_path):
    table = tmp_path / "route"
    table.write_text(ROUTE_TABLE)
    assert head_route_environment({}, "10.10.3.7", str(table)) == {
        "NCCL_SOCKET_IFNAME": "hsn0", "GLOO_SOCKET_IFNAME": "hsn0"}
    assert head_route_environment({"GLOO_SOCKET_IFNAME": "x"}, "10.10.3.7", str(table)) == {
        "NCCL_SOCKET_IFNAME": "hsn0"}
    assert head_route_environment({}, None, str(table)) == {}
    assert head_route_environment({}, "no-such-host.invalid", str(table)) == {}


def test_the_users_own_values_win():
    assert fabric_environment("hsn0", {}) == {"NCCL_SOCKET_IFNAME": "hsn0",
                                              "GLOO_SOCKET_IFNAME": "hsn0"}
    assert fabric_environment("eth0", {"NCCL_SOCKET_IFNAME": "hsn0,hsn1"}) == {
        "GLOO_SOCKET_IFNAME": "eth0"}
    assert fabric_environment(None, {}) == {}
