"""Every exit path tears down, through the real command line on a real engine (issue 22): a
signal to the launcher's whole process group (a closed terminal) during the run and during the
start, a run directory deleted under a running cluster, and a detached cluster met by the
wrong `--shared`, an engine that does not answer, a hostile peer on its head agent's port, and
the death of its head. Each ends with nothing left on the engine and the run's end recorded."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from rayhpc.launcher.backends.local.manage import remove_run
from tests.cli import invoke, invoke_argv
from tests.launching import Background, archived, launch, leftovers
from tests.test_faults import container, with_driver

pytestmark = pytest.mark.docker


class GroupLaunch(Background):
    """`rayhpc launch` as a terminal runs it: the leader of its own process group, so that a
    signal to the group reaches the launcher and every child it has, as a closed terminal's
    SIGHUP does."""

    def __init__(self, image: str, shared: Path, *args: str):
        super().__init__(image, shared, *args, own_group=True)

    def wait_for(self, pattern: str) -> None:
        self.wait_for_line(re.compile(pattern))

    def signal_group(self, signum: int) -> None:
        os.killpg(self.proc.pid, signum)


def test_sighup_to_the_launchers_process_group_stops_the_run_cleanly(docker_api, built_image,
                                                                     shared_dir):
    image, _ = built_image
    run = GroupLaunch(image, shared_dir, "--nodes", "2", "--driver",
                      with_driver(shared_dir, "wait_forever.py"))
    run.wait_for(r"ready$")
    run.signal_group(signal.SIGHUP)
    output = run.finish()
    assert run.proc.returncode == 129, output[-3000:]
    assert "rayhpc: SIGHUP: stopping the cluster (logs are kept)" in output
    assert "the head died" not in output and "Traceback" not in output, output[-3000:]
    assert (run.run_dir / "exit_code").read_text().strip() == "129"
    for node in ("head", "worker-1"):
        assert "raylet.out" in archived(run.run_dir, node), node
    assert leftovers(docker_api, run.run_dir.name) == []


def test_a_signal_to_the_process_group_during_the_start_removes_what_was_created(
        docker_api, built_image, shared_dir):
    image, _ = built_image
    run = GroupLaunch(image, shared_dir, "--nodes", "2", "--driver", "echo hi")
    run.wait_for(r"rayhpc: run \S+: 2 nodes")  # `compose up` is creating the containers now
    run.signal_group(signal.SIGTERM)
    output = run.finish(timeout=120)
    assert run.proc.returncode == 143, output[-3000:]
    assert "Traceback" not in output
    assert leftovers(docker_api, run.run_dir.name) == []
    assert (run.run_dir / "exit_code").read_text().strip() == "143"  # not "starting" forever


def test_a_deleted_run_directory_stops_the_cluster_and_leaves_nothing(docker_api, built_image,
                                                                     shared_dir):
    image, _ = built_image
    run = GroupLaunch(image, shared_dir, "--nodes", "2", "--driver",
                      with_driver(shared_dir, "wait_forever.py"))
    run.wait_for(r"ready$")
    shutil.rmtree(run.run_dir)
    started = time.monotonic()
    output = run.finish()
    assert f"rayhpc: error: the run directory {run.run_dir} was deleted; stopping the cluster" \
        in output, output[-3000:]
    assert "compose.yaml" not in output and "Traceback" not in output, output[-3000:]
    assert run.proc.returncode == 143, output[-3000:]
    assert time.monotonic() - started < 60
    assert leftovers(docker_api, run.run_dir.name) == []


def agent_port_and_head_ip(docker_api, run_dir: Path) -> tuple[int, str]:
    port = json.loads((run_dir / "spec.json").read_text())["ports"]["agent"]
    networks = docker_api.inspect_container(container(run_dir, "head"))["NetworkSettings"]
    return port, next(iter(networks["Networks"].values()))["IPAddress"]


def refused_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def high_water_mb(pid: int) -> float:
    """A live process's own peak RSS so far (VmHWM), MB; 0 once it has ended."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    return int(found.group(1)) / 1024 if found else 0.0


def big_job(run_id: str, shared: Path, count: int) -> tuple[int, float]:
    """`rayhpc submit` of a job printing ``count`` numbered 100-byte lines: how many reached
    its console in order, and its peak RSS in MB (its own high-water mark, read as it runs:
    `wait4`'s ru_maxrss would count this test process too, whose size a child inherits as its
    high-water mark across fork and exec)."""
    job = ("import sys\nw = sys.stdout.buffer.write\n"
           f"for i in range({count}): w(b'%09d ' % i + b'x' * 89 + b'\\n')")
    proc = subprocess.Popen(invoke_argv("submit", "--run", run_id, "--shared", str(shared),
                                        "--", "python", "-c", job),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    seen, peak_mb = 0, 0.0
    for line in proc.stdout:
        if len(line) == 100 and line[9:10] == b" ":
            assert int(line[:9]) == seen, (seen, line)
            seen += 1
            if seen % 10_000 == 0:
                peak_mb = max(peak_mb, high_water_mb(proc.pid))
    peak_mb = max(peak_mb, high_water_mb(proc.pid))
    assert proc.wait() == 0
    return seen, peak_mb


def test_a_detached_cluster_survives_wrong_commands_and_hostile_peers_and_ends_recorded(
        docker_api, built_image, shared_dir, tmp_path):
    image, _ = built_image
    result, run_dir = launch(image, shared_dir, "--nodes", "2", "--detach")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_id = run_dir.name
    try:
        job = invoke("submit", "--run", run_id, "--shared", str(shared_dir), "--",
                     "python", "-c", "print('hello from the job')", timeout=300)
        assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-2000:]
        job_id = re.search(r"rayhpc: job (raysubmit_\w+) submitted", job.stdout).group(1)
        # Output that is not UTF-8 (Ray's job-logs endpoint answers HTTP 500 on it): the job's
        # result still comes from its status, its output from the driver's log file.
        odd = invoke("submit", "--run", run_id, "--shared", str(shared_dir), "--", "python",
                     "-c", "import sys; sys.stdout.buffer.write(b'caf\\xff ok\\n')",
                     timeout=300)
        assert odd.returncode == 0, odd.stdout[-2000:] + odd.stderr[-2000:]
        assert "caf\ufffd ok" in odd.stdout, odd.stdout[-2000:]
        odd_id = re.search(r"rayhpc: job (raysubmit_\w+) submitted", odd.stdout).group(1)
        odd_log = invoke("logs", "--run", run_id, "--shared", str(shared_dir), "--job", odd_id)
        assert odd_log.returncode == 0 and "caf\ufffd ok" in odd_log.stdout, odd_log.stderr

        # 50 MB of output: every line on the console, in order; streamed, so the client's
        # memory does not grow with it (it used to fetch the whole log every 0.5 s).
        lines, rss_mb = big_job(run_id, shared_dir, 500_000)
        assert lines == 500_000
        assert rss_mb < 110, f"rayhpc submit peaked at {rss_mb:.0f} MB for 50 MB of output"

        # A peer without the token: data without a newline is cut off, not buffered.
        port, head_ip = agent_port_and_head_ip(docker_api, run_dir)
        peer = socket.create_connection((head_ip, port), timeout=10)
        with pytest.raises(OSError):
            for _ in range(64):
                peer.sendall(b"x" * 65536)
                time.sleep(0.01)
        peer.close()
        # ... and the agent port is on the node's cluster address, not on every interface.
        probe = docker_api.exec_create(container(run_dir, "head"), [
            "python", "-c", f"import socket; socket.create_connection(('127.0.0.1', {port}), 5)"])
        assert b"ConnectionRefusedError" in docker_api.exec_start(probe)

        # An engine that does not answer: refused before anything changes.
        line = refused_line(invoke("down", "--run", run_id, "--shared", str(shared_dir),
                                   env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"}))
        assert "no Docker engine reachable at unix:///nonexistent/docker.sock" in line
        assert not (run_dir / "stop").exists()
        # The wrong shared dir: refused, naming the right one; the cluster stays up.
        other = tmp_path / "other"
        line = refused_line(invoke("down", "--run", run_id, "--shared", str(other)))
        assert line == (f"error: --shared: run {run_id} was launched with --shared "
                        f"{shared_dir}, not {other}; `rayhpc down --run {run_id} --shared "
                        f"{shared_dir}` stops it the clean way (its logs kept)")
        assert not (run_dir / "stop").exists()
        states = {c["State"] for c in docker_api.containers(
            all=True, filters={"label": f"org.rayhpc.run={run_id}"})}
        assert states == {"running"}, states

        # The head dies: `status` says so, `down` records the end and keeps what it left.
        docker_api.kill(container(run_dir, "head"))
        status = invoke("status", "--shared", str(shared_dir))
        assert re.search(rf"^{run_id}  local  lost \(its nodes are gone without an exit code",
                         status.stdout, re.M), status.stdout
        down = invoke("down", "--run", run_id, "--shared", str(shared_dir))
        assert down.returncode == 0, down.stdout[-2000:] + down.stderr[-2000:]
        assert "Traceback" not in down.stdout + down.stderr
        assert "could not be signalled" not in down.stdout  # a lost head: said once, below
        assert (run_dir / "exit_code").read_text().strip() == "1"
        assert "nodes were gone without an exit code" in (run_dir / "error").read_text()
        assert re.search(rf"run {run_id}: .*exit code 1$", down.stdout, re.M), down.stdout
        status = invoke("status", "--shared", str(shared_dir))
        assert run_id not in status.stdout, status.stdout
        logs = invoke("logs", "--run", run_id, "--shared", str(shared_dir), "--job", job_id)
        assert logs.returncode == 0 and "hello from the job" in logs.stdout, logs.stderr
        node_log = invoke("logs", "--run", run_id, "--shared", str(shared_dir), "--node",
                          "head")
        assert node_log.returncode == 0 and "starting Ray head" in node_log.stdout, \
            node_log.stderr
        assert leftovers(docker_api, run_id) == []
    finally:
        remove_run(run_id)
