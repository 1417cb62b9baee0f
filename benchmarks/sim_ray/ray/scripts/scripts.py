"""`ray start` / `ray stop` of the stand-in: the calls the node agent makes, done at once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def options(args: list[str]) -> dict[str, str]:
    found = {}
    for arg in args:
        if arg.startswith("--"):
            key, _, value = arg[2:].partition("=")
            found[key] = value
    return found


def write_logs(temp_dir: str, head: bool) -> None:
    """A few files where Ray keeps a node's logs, for the harvest."""
    session = Path(temp_dir) / f"session_{time.strftime('%Y-%m-%d_%H-%M-%S')}_{os.getpid()}"
    logs = session / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    names = ["raylet.out", "raylet.err", "dashboard_agent.log", "worker-1a2b-01000000-123.out",
             "python-core-worker-1a2b_123.log"]
    if head:
        names += ["gcs_server.out", "monitor.log", "dashboard.log"]
    for name in names:
        (logs / name).write_text(f"{name}: stand-in log line\n" * 20)
    latest = Path(temp_dir) / "session_latest"
    if not latest.exists():
        latest.symlink_to(session)


def register(address: str, ip: str) -> None:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall((json.dumps({"op": "register", "ip": ip}) + "\n").encode())
        sock.recv(1024)


def cli(args: list[str], prog_name: str = "ray") -> None:
    command, opts = args[0], options(args[1:])
    if command == "start" and "head" in opts:
        ip, port = opts["node-ip-address"], opts["port"]
        # The GCS stays up in this session, as Ray's daemons do.
        gcs = subprocess.Popen([sys.executable, "-m", "ray._gcs", ip, port],
                               stdout=subprocess.PIPE, text=True)
        assert gcs.stdout is not None
        gcs.stdout.readline()  # "listening"
        register(f"{ip}:{port}", ip)
        write_logs(opts["temp-dir"], head=True)
    elif command == "start":
        if os.environ.get("RAYHPC_SIM_HANG_START"):  # a node whose Ray never registers
            time.sleep(3600)
        register(opts["address"], opts["node-ip-address"])
        write_logs(opts["temp-dir"], head=False)
    # `ray stop` (the agent of old stopped Ray with it): nothing of the stand-in to stop here.
    sys.exit(0)
