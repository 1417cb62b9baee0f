"""Interactive clusters on the real engine: a cluster that stays up, Ray jobs submitted to it
(one after another and at once) with `rayhpc submit`, Ray Client drivers from outside the
cluster, `rayhpc logs`/`status`/`down`, the token and the published ports, Ctrl-C, and the
Python API's context manager."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from rayhpc.launcher.backends.local.manage import remove_run
from tests import PROJECT_ROOT
from tests.cli import invoke, invoke_argv
from tests.launching import Background, archived, launch, leftovers

pytestmark = pytest.mark.docker

RAY_CLIENT_DRIVER = """
import ray, socket
ray.init({address!r}, log_to_driver=False)
@ray.remote
def where():
    return socket.gethostname()
print("client sees", len([n for n in ray.nodes() if n["Alive"]]), "nodes", flush=True)
"""


def exports(connect: str) -> dict[str, str]:
    return dict(re.findall(r"^export (\w+)=(.*)$", connect, re.M))


def http_status(url: str, token: str | None = None, data: bytes | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


# Ray's proxier sometimes loses the per-client server it forks (ray-project/ray#63202, open):
# "Starting Ray client server failed" with empty logs, or, when the child died before the
# proxier read its command line, "Initialization failure from server" ending in psutil's
# ZombieProcess (seen in CI, Ray 2.60.0). A user connects again, and so do we.
RAY_CLIENT_FORK_RACE = ("Starting Ray client server failed", "psutil.ZombieProcess")


def ray_client(image: str, address: str, token: str, network: str) -> subprocess.CompletedProcess:
    """A driver outside the cluster (Ray Client) in a container of the image on ``network``."""
    for _ in range(3):
        result = subprocess.run(["docker", "run", "--rm", "--network", network,
                                 "-e", "RAY_AUTH_MODE=token", "-e", f"RAY_AUTH_TOKEN={token}",
                                 image, "python", "-c",
                                 RAY_CLIENT_DRIVER.format(address=address)],
                                capture_output=True, text=True, timeout=180)
        if not any(race in result.stderr for race in RAY_CLIENT_FORK_RACE):
            break
    return result


def submit(shared: Path, run_id: str, *command: str, wd: str | None = None) -> subprocess.Popen:
    args = ["submit", "--run", run_id, "--shared", str(shared)]
    args += ["--working-dir", wd] if wd else []
    return subprocess.Popen(invoke_argv(*args, "--", *command), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_interactive_cluster_takes_jobs_and_drivers_until_down(docker_api, built_image,
                                                                shared_dir):
    image, _ = built_image
    result, run_dir = launch(image, shared_dir, "--nodes", "3", "--detach")
    assert run_dir is not None and result.returncode == 0, result.stdout + result.stderr
    run_id = run_dir.name
    try:
        connect = (run_dir / "connect.txt").read_text()
        assert connect in result.stdout  # printed as written, once all nodes joined
        assert "3/3 nodes joined" in result.stdout
        assert f"run {run_id} stays up: `rayhpc down --run {run_id} --shared {shared_dir}` " \
            "stops it" in result.stdout
        env = exports(connect)
        spec = json.loads((run_dir / "spec.json").read_text())
        head = json.loads((run_dir / "head.json").read_text())
        token = (run_dir / "auth_token").read_text().strip()
        published = spec["published"]
        assert env == {"RAY_ADDRESS": f"http://127.0.0.1:{published['dashboard']}",
                       "RAY_AUTH_MODE": "token",
                       "RAY_AUTH_TOKEN_PATH": str(run_dir / "auth_token")}
        assert f'ray.init("ray://127.0.0.1:{published["client"]}")' in connect

        # Published on 127.0.0.1 only; inside, the dashboard binds the head's cluster address.
        container = f"rayhpc-{run_id}-head"
        bindings = docker_api.inspect_container(container)["NetworkSettings"]["Ports"]
        hosts = {b["HostIp"] for bound in bindings.values() if bound for b in bound}
        assert hosts == {"127.0.0.1"}, bindings
        probe = ("import socket, sys\ntry:\n    socket.create_connection(('127.0.0.1', "
                 f"{spec['ports']['dashboard']}), timeout=2)\nexcept OSError:\n"
                 "    sys.exit(7)\n")
        loopback = subprocess.run(["docker", "exec", container, "python", "-c", probe])
        assert loopback.returncode == 7, "the dashboard listens beyond the head's address"

        # No token: the Jobs API and the dashboard's data refuse (401); a wrong one: 403.
        url = env["RAY_ADDRESS"]
        job = json.dumps({"entrypoint": "echo should-not-run"}).encode()
        assert http_status(f"{url}/api/jobs/") == 401
        assert http_status(f"{url}/api/jobs/", data=job) == 401
        assert http_status(f"{url}/api/v0/logs?node_ip={head['ip']}") == 401
        assert http_status(f"{url}/nodes?view=summary") == 401
        assert http_status(f"{url}/api/jobs/", token="wrong") == 403
        assert http_status(f"{url}/api/jobs/", token=token) == 200

        # Drivers outside the cluster: from a container on the run network (the head's
        # address) and from the host's network (the published port), with the token only.
        inside = ray_client(image, f"ray://{head['ip']}:{spec['ports']['client']}", token,
                            f"rayhpc-{run_id}")
        assert "client sees 3 nodes" in inside.stdout, inside.stdout + inside.stderr[-2000:]
        host = ray_client(image, f"ray://127.0.0.1:{published['client']}", token, "host")
        assert "client sees 3 nodes" in host.stdout, host.stdout + host.stderr[-2000:]

        # Two jobs at once, both succeed; then one that fails gives its code.
        (shared_dir / "proj").mkdir()
        (shared_dir / "proj" / "job.py").write_text("import helper\nprint(helper.WORD)\n")
        (shared_dir / "proj" / "helper.py").write_text("WORD = 'from the working dir'\n")
        jobs = [submit(shared_dir, run_id, "python", "examples/hello_nodes.py"),
                submit(shared_dir, run_id, "python", "job.py", wd=str(shared_dir / "proj"))]
        outputs = [job.communicate(timeout=300)[0] for job in jobs]
        assert [job.returncode for job in jobs] == [0, 0], outputs
        assert "hello from 3 nodes: head, worker-1, worker-2" in outputs[0]
        assert "from the working dir" in outputs[1]
        ids = [re.search(r"rayhpc: job (raysubmit_\w+) submitted", out).group(1)
               for out in outputs]
        for job_id, out in zip(ids, outputs):
            assert re.search(rf"^rayhpc: job {job_id} succeeded, exit code 0$", out, re.M), out
        # A working dir the nodes cannot see (not in the shared dir): sent along, locally.
        with tempfile.TemporaryDirectory() as elsewhere:
            (Path(elsewhere) / "job.py").write_text("print('sent along', flush=True)\n")
            sent = invoke("submit", "--run", run_id, "--shared", str(shared_dir),
                          "--working-dir", elsewhere, "--", "python", "job.py")
        assert sent.returncode == 0 and "sent along" in sent.stdout, sent.stdout + sent.stderr
        failing = invoke("submit", "--run", run_id, "--shared", str(shared_dir), "--",
                         "python", "-c", "import sys; print('failing now'); sys.exit(7)")
        assert failing.returncode == 7, failing.stdout + failing.stderr
        assert "failing now" in failing.stdout
        assert re.search(r"rayhpc: job raysubmit_\w+ failed, exit code 7", failing.stdout)

        # Logs: every job, one job, an agent, a node's Ray log.
        everything = invoke("logs", "--run", run_id, "--shared", str(shared_dir))
        assert everything.returncode == 0, everything.stderr
        for job_id in ids:
            assert f"== job {job_id} (SUCCEEDED)" in everything.stdout
        assert "hello from 3 nodes" in everything.stdout and "failing now" in everything.stdout
        one = invoke("logs", "--run", run_id, "--shared", str(shared_dir), "--job", ids[1])
        assert "from the working dir" in one.stdout and "hello from" not in one.stdout
        agent_log = invoke("logs", "--run", run_id, "--shared", str(shared_dir), "--node",
                           "worker-2")
        assert "joining" in agent_log.stdout, agent_log.stdout + agent_log.stderr
        raylet = invoke("logs", "--run", run_id, "--shared", str(shared_dir), "--node",
                        "worker-1", "--file", "raylet.out")
        assert raylet.returncode == 0 and "raylet" in raylet.stdout, raylet.stderr

        # Status, and the Python API attached to the running cluster.
        status = invoke("status", "--shared", str(shared_dir))
        assert re.search(rf"^{run_id}  local  up \(interactive\)  3/3 nodes joined  up "
                         r"\d+:\d\d:\d\d  head: running, worker-1: running, worker-2: running$",
                         status.stdout, re.M), status.stdout
        attached = subprocess.run(
            [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(PROJECT_ROOT)!r})\n"
             "from rayhpc import Cluster\n"
             f"c = Cluster.attach({run_id!r}, shared={str(shared_dir)!r})\n"
             "print(c.client_address, c.dashboard_url, c.env['RAY_AUTH_MODE'])\n"],
            capture_output=True, text=True, timeout=60)
        assert attached.stdout.split() == [f"ray://127.0.0.1:{published['client']}", url,
                                           "token"], attached.stderr

        # Down: the clean stop, every node stopped, nothing left.
        stopped = invoke("down", "--run", run_id, "--shared", str(shared_dir))
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert re.search(rf"run {run_id}: 3/3 nodes, bring-up [\d.]+ s, up [\d.]+ s, teardown "
                         r"[\d.]+ s, exit code 143; logs in ", stopped.stdout), stopped.stdout
        assert leftovers(docker_api, run_id) == []
        assert (run_dir / "exit_code").read_text().strip() == "143"
        assert (run_dir / "stop").read_text().strip() == "rayhpc down"
        for node in ("head", "worker-1", "worker-2"):
            record = json.loads((run_dir / "nodes.json").read_text())[node]
            assert record["state"] == "stopped", record
            assert "raylet.out" in archived(run_dir, node)
        kept = sorted(name for name in archived(run_dir, "head") if name.startswith("job-driver-"))
        assert len(kept) == 4 and all(f"job-driver-{i}.log" in kept for i in ids)
        after = invoke("logs", "--run", run_id, "--shared", str(shared_dir), "--job", ids[0])
        assert "hello from 3 nodes" in after.stdout  # kept with the run
    finally:
        remove_run(run_id)


def test_ctrl_c_stops_a_foreground_interactive_cluster(docker_api, built_image, shared_dir):
    image, _ = built_image
    run = Background(image, shared_dir, "--nodes", "2", "--interactive")
    try:
        run.wait_for_line(re.compile(r"rayhpc: cluster up; "))
        run.proc.send_signal(signal.SIGINT)
        output = run.finish()
        assert run.proc.returncode == 130, output[-3000:]
        assert "rayhpc: stopping the cluster (SIGINT)" in output
        assert re.search(r"2/2 nodes, bring-up [\d.]+ s, up [\d.]+ s, .* exit code 130$",
                         output.strip()), output[-1000:]
        assert (run.run_dir / "exit_code").read_text().strip() == "130"
        for node in ("head", "worker-1"):
            assert "raylet.out" in archived(run.run_dir, node)
        assert leftovers(docker_api, run.run_dir.name) == []
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
        if run.run_dir is not None:
            remove_run(run.run_dir.name)


def test_the_python_api_leaves_nothing_when_the_body_raises(docker_api, built_image,
                                                            shared_dir):
    image, _ = built_image
    script = f"""import sys
sys.path.insert(0, {str(PROJECT_ROOT)!r})
from rayhpc import Cluster
with Cluster.launch(site="local", nodes=2, shared={str(shared_dir)!r}, image={image!r}) as c:
    print("RUN", c.run_id, flush=True)
    assert c.submit("python examples/hello_nodes.py") == 0
    assert "hello from 2 nodes" in c.logs()
    raise RuntimeError("the body failed")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=600)
    match = re.search(r"^RUN (\S+)$", result.stdout, re.M)
    assert match, result.stdout[-3000:] + result.stderr[-3000:]
    run_id = match.group(1)
    try:
        assert result.returncode == 1
        assert result.stderr.strip().endswith("RuntimeError: the body failed"), result.stderr
        # Nothing else on stderr: no traceback of a thread that followed the job's output.
        assert result.stderr.count("Traceback") == 1, result.stderr
        assert "stays up: `cluster.down()` or the end of its `with` block stops it" \
            in result.stdout
        assert "hello from 2 nodes: head, worker-1" in result.stdout
        assert "exit code 143" in result.stdout
        assert leftovers(docker_api, run_id) == []
        run_dir = shared_dir / "runs" / run_id
        assert (run_dir / "exit_code").read_text().strip() == "143"
        assert "raylet.out" in archived(run_dir, "worker-1")
    finally:
        remove_run(run_id)
