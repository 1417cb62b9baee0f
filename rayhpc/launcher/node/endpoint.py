"""The run's HTTP endpoint on the head (`--serve`, `--serve-port`; docs/serving.md): where it
listens, the deployment of a Ray Serve application, and the probe that says it answers. One
probe loop on the head, nothing per node."""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

from rayhpc.launcher.contract import LaunchSpec, health_path, http_status
from rayhpc.launcher.node.connect import endpoint_lines
from rayhpc.launcher.node.launch_failed import LaunchFailed
from rayhpc.launcher.node.processes import POLL_S

DEPLOY_TIMEOUT_S = 600  # an application's replicas may load a model first
READY_TIMEOUT_S = 120  # from a deployed application to its proxy answering
PROBE_EVERY_S = 2.0
OUTPUT_LINES_KEPT = 20  # of the deployment's output, for its error

# Run as `python -c` in the image's Python (the agent's own), in the shared dir: Ray Serve
# ships with rayproject/ray images. HTTPOptions' host and port are where the proxy listens;
# one proxy, on the head (ProxyLocation.HeadOnly): the endpoint is the head's address only
# (docs.ray.io: ray.serve.config.HTTPOptions, ray.serve.config.ProxyLocation).
DEPLOY_SCRIPT = """\
import importlib, os, sys
sys.path.insert(0, os.getcwd())
module, _, name = sys.argv[1].partition(":")
try:
    app = getattr(importlib.import_module(module), name)
except (ImportError, AttributeError, SyntaxError) as exc:
    print(f"does not import: {type(exc).__name__}: {exc}", flush=True)
    sys.exit(2)
from ray import serve
serve.start(http_options={"host": sys.argv[2], "port": int(sys.argv[3])},
            proxy_location="HeadOnly")
serve.run(app, name="default", route_prefix="/", blocking=False)
print(f"deployed {sys.argv[1]} at http://{sys.argv[2]}:{sys.argv[3]}/", flush=True)
"""


def bind_host(spec: LaunchSpec, head_ip: str) -> str:
    """Where the endpoint listens on the head: its loopback, or its cluster address. On the
    local site its cluster address inside the container, which the engine publishes on this
    host's 127.0.0.1 only (a container's loopback cannot be published)."""
    if spec.serve_bind == "loopback" and not spec.published:
        return "127.0.0.1"
    return head_ip


def check_port_free(host: str, port: int) -> None:
    """LaunchFailed when something on the head listens on the endpoint's port already."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise LaunchFailed(f"--serve-port {port}: cannot listen on {host}:{port} on "
                                   f"the head: {exc.strerror}") from None
            raise LaunchFailed(f"--serve-port {port}: the port is taken on the head "
                               f"({host}:{port}); choose another --serve-port",
                               bad_input=True) from None


def deploy(spec: LaunchSpec, env: dict[str, str], host: str, say: Callable[[str], None],
           stopped: Callable[[], bool] = lambda: False) -> bool:
    """Deploy the Serve application (``spec.serve``); True once it runs, False when a stop
    came first (the deployment is stopped: its replicas may take minutes to load a model).
    LaunchFailed naming --serve and the last line of the deployment's output otherwise."""
    check_port_free(host, spec.endpoint_port)
    say(f"deploying {spec.serve} (Ray Serve, HTTP on {host}:{spec.endpoint_port})")
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen([sys.executable, "-c", DEPLOY_SCRIPT, spec.serve, host,
                                    str(spec.endpoint_port)], cwd=spec.shared, env=env,
                                   stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + DEPLOY_TIMEOUT_S
        while process.poll() is None:
            if stopped() or time.monotonic() > deadline:
                process.kill()
                process.wait()
                if stopped():
                    return False
                raise LaunchFailed(f"--serve {spec.serve}: not deployed after "
                                   f"{DEPLOY_TIMEOUT_S} s")
            time.sleep(POLL_S)
        output.seek(0)
        lines = [line for line in output.read().decode(errors="replace").splitlines()
                 if line.strip()][-OUTPUT_LINES_KEPT:]
    for line in lines:
        say(f"serve: {line}")
    if process.returncode:
        last = lines[-1].strip() if lines else f"exit code {process.returncode}"
        does_not_import = process.returncode == 2  # the script's own exit code for it
        fix = ""
        if does_not_import:
            fix = ("; the module must be in the shared dir (the working directory on the "
                   "head) or in the image" if "ModuleNotFoundError" in last else
                   "; fix the module or --serve")
        raise LaunchFailed(f"--serve {spec.serve}: {last}{fix}", bad_input=does_not_import)
    return True


class Endpoint:
    """The run's endpoint as the head runs it: deployed (a Serve application) or followed (a
    driver's own service), probed from the head itself, whatever it binds."""

    def __init__(self, spec: LaunchSpec, head_ip: str, head_node: str):
        self.spec = spec
        self.host = bind_host(spec, head_ip)
        self.url = f"http://{self.host}:{spec.endpoint_port}"
        self.lines = endpoint_lines(spec, head_ip, head_node)

    def start(self, env: dict[str, str], say: Callable[[str], None],
              stopped: Callable[[], bool]) -> bool:
        """Deploy the application and wait until its proxy answers (False: a stop came
        first); LaunchFailed when it does not deploy or never answers."""
        if not deploy(self.spec, env, self.host, say, stopped):
            return False
        if wait_until_answering(self.url + health_path(self.spec), READY_TIMEOUT_S, stopped):
            return True
        if stopped():
            return False
        raise LaunchFailed(f"--serve {self.spec.serve}: deployed, but nothing answers at "
                           f"{self.url} after {READY_TIMEOUT_S} s")

    def follow(self, running: Callable[[], bool], answered: Callable[[], None]) -> None:
        """A driver's own service: probed in the background while ``running()``."""
        def probe() -> None:
            if wait_until_answering(self.url + health_path(self.spec), float("inf"),
                                    lambda: not running()):
                answered()

        threading.Thread(target=probe, daemon=True).start()


def wait_until_answering(url: str, timeout: float, stopped: Callable[[], bool]) -> bool:
    """Probe ``url`` every PROBE_EVERY_S until it answers, ``timeout`` passes or ``stopped``."""
    deadline = time.monotonic() + timeout
    while not stopped():
        if http_status(url) is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(PROBE_EVERY_S)
    return False


def serve_application(head) -> list[str] | None:
    """An interactive head with --serve: deploy, wait until it answers, say so in status.json;
    connect.txt's lines for it. None: a stop came first."""
    endpoint = Endpoint(head.spec, head.ip, head.node)
    if not endpoint.start(head.driver_env(head.status.address), head.say, head.stop_requested):
        return None
    head.publish_status(force=True, endpoint_answered=time.time())
    head.say(f"endpoint answers at {endpoint.url}")
    return endpoint.lines


def follow_driver_service(head) -> None:
    """A driver with --serve-port: once its service answers, say so (status.json, and the
    lines that reach it on the launcher's console)."""
    endpoint = Endpoint(head.spec, head.ip, head.node)

    def answered() -> None:
        head.publish_status(force=True, endpoint_answered=time.time())
        for line in endpoint.lines:
            head.note(line.lstrip("# "))

    endpoint.follow(lambda: head.driver is not None and head.driver.poll() is None, answered)
