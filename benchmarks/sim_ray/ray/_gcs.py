"""The stub GCS: node registrations and `ray.nodes()` over TCP (JSON lines), one thread.

Writes its figures (registrations with their times, nodes() calls with theirs) to
$RAYHPC_SIM_COUNT/gcs.json when stopped (SIGTERM, as the agent stops a node's Ray).
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sys
import time

nodes: dict[str, float] = {}  # ip -> registration time
nodes_calls: list[float] = []


def dump(*_args: object) -> None:
    out = os.environ.get("RAYHPC_SIM_COUNT")
    if out:
        with open(os.path.join(out, "gcs.json"), "w") as handle:
            json.dump({"registered": nodes, "nodes_calls": nodes_calls}, handle)
    os._exit(0)


def answer(request: dict) -> object:
    if request.get("op") == "register":
        nodes.setdefault(request["ip"], time.time())
        return {"ok": True}
    if request.get("op") == "nodes":
        nodes_calls.append(time.time())
        # A GCS busy with a large cluster: every answer slow (and registrations wait too).
        time.sleep(float(os.environ.get("RAYHPC_SIM_GCS_DELAY_S", "0")))
        return [{"NodeManagerAddress": ip, "Alive": True} for ip in nodes]
    return {"ok": True}


def main() -> None:
    ip, port = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGTERM, dump)
    server = socket.create_server((ip, port), backlog=4096)
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ)
    buffers: dict[socket.socket, bytes] = {}
    print("listening", flush=True)
    while True:
        for key, _ in selector.select():
            if key.fileobj is server:
                conn, _ = server.accept()
                buffers[conn] = b""
                selector.register(conn, selectors.EVENT_READ)
                continue
            conn = key.fileobj
            data = conn.recv(65536)
            if not data:
                selector.unregister(conn)
                buffers.pop(conn, None)
                conn.close()
                continue
            buffers[conn] += data
            while b"\n" in buffers[conn]:
                line, buffers[conn] = buffers[conn].split(b"\n", 1)
                conn.setblocking(True)
                conn.sendall((json.dumps(answer(json.loads(line))) + "\n").encode())


if __name__ == "__main__":
    main()
