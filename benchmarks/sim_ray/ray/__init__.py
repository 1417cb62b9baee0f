"""A stand-in for Ray for rayhpc's scale simulator (see ../README.md): what the node agent
uses, nothing more."""

from __future__ import annotations

import json
import socket

__version__ = "2.60.0"
_gcs: tuple[str, int] | None = None


def _ask(request: dict) -> object:
    assert _gcs is not None, "ray.init() first"
    with socket.create_connection(_gcs, timeout=30) as sock:
        sock.sendall((json.dumps(request) + "\n").encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def init(address: str | None = None, **_options: object) -> None:
    global _gcs
    host, port = (address or "").rsplit(":", 1)
    _gcs = (host, int(port))
    _ask({"op": "ping"})


def nodes() -> list[dict]:
    return _ask({"op": "nodes"})


def shutdown() -> None:
    global _gcs
    _gcs = None
