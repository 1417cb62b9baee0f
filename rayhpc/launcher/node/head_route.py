"""On the node: the network interface that routes to the head, and the NCCL / Gloo variables
it gives (standard library only: the node program imports it; pure functions but one reader).

Where the site names an `interface`, the job script has set NCCL_SOCKET_IFNAME and
GLOO_SOCKET_IFNAME already (launcher/resolve/fabric.py). Elsewhere (a generic site, the local site)
only the node knows which of its interfaces reaches the head: the kernel's routing table says
(/proc/net/route, proc(5): "Iface Destination Gateway Flags ... Mask ...", addresses as
little-endian hexadecimal), by the longest prefix that holds the head's address.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from rayhpc.launcher.contract import fabric_environment

ROUTE_FILE = "/proc/net/route"
RTF_UP = 0x0001  # route(8) / linux/route.h: the route is usable


@dataclass(frozen=True)
class Route:
    interface: str
    destination: int  # host byte order, as a number (compare with masks)
    mask: int
    up: bool

    def holds(self, address: int) -> bool:
        return self.up and (address & self.mask) == self.destination

    @property
    def prefix(self) -> int:
        return bin(self.mask).count("1")


def _hex_address(field: str) -> int:
    """/proc/net/route's little-endian hex (e.g. 0011A8C0 is 192.168.17.0) as a number."""
    return struct.unpack("!I", struct.pack("<I", int(field, 16)))[0]


def parse_routes(text: str) -> list[Route]:
    """The routes of a /proc/net/route text (its header line names the columns)."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    header = lines[0]
    try:
        at = {name: header.index(name) for name in ("Iface", "Destination", "Flags", "Mask")}
    except ValueError:
        return []
    routes = []
    for row in lines[1:]:
        try:
            routes.append(Route(interface=row[at["Iface"]],
                                destination=_hex_address(row[at["Destination"]]),
                                mask=_hex_address(row[at["Mask"]]),
                                up=bool(int(row[at["Flags"]], 16) & RTF_UP)))
        except (IndexError, ValueError):
            continue
    return routes


def interface_for(routes: list[Route], ip: str) -> str | None:
    """The interface of the most specific usable route that holds ``ip`` (None: no route,
    or ``ip`` is not an IPv4 address)."""
    try:
        address = struct.unpack("!I", socket.inet_aton(ip))[0]
    except OSError:
        return None
    holding = [route for route in routes if route.holds(address)]
    return max(holding, key=lambda route: route.prefix).interface if holding else None


def route_interface(ip: str, route_file: str = ROUTE_FILE) -> str | None:
    """The interface of this node that routes to ``ip`` (None where the table is unreadable)."""
    try:
        with open(route_file) as table:
            return interface_for(parse_routes(table.read()), ip)
    except OSError:
        return None


def head_route_environment(environ: Mapping[str, str], head: str | None,
                           route_file: str = ROUTE_FILE) -> dict[str, str]:
    """What the node agent adds to Ray's environment before `ray start`: the fabric variables
    for the interface that routes to ``head`` (a host name or an IPv4 address), leaving out
    those ``environ`` sets; {} when the head is unknown or cannot be resolved or routed."""
    if not head:
        return {}
    try:
        ip = socket.gethostbyname(head)
    except OSError:
        return {}
    return fabric_environment(route_interface(ip, route_file), environ)
