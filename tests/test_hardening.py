"""Hostile and unlucky use through the real command line on a real engine: a driver that leaves
processes behind, a run directory that fills up, signals during the stop and closed terminals,
`$` in paths, a root-made shared dir, images without Python or Ray, site values that used to do
nothing, too many local nodes. Each ends with the right exit code, one clear line, and nothing
left running or half-written."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from rayhpc.launcher.backends.local.compose import RUN_LABEL
from tests.cli import invoke, invoke_argv
from tests.launching import (
    Background,
    archived,
    assert_clean_run,
    launch,
    leftovers,
    run_dir_of,
)
from tests.test_faults import with_driver

pytestmark = pytest.mark.docker


def no_temp_files(run_dir: Path) -> list[Path]:
    return list(run_dir.rglob(".*.tmp"))


def test_a_driver_that_leaves_a_background_process_ends_with_its_own_exit(
        docker_api, built_image, shared_dir):
    image, _ = built_image
    started = time.monotonic()
    result, run_dir = launch(image, shared_dir, "--nodes", "2", "--driver",
                             "for i in $(seq 30); do sleep 300 & done; echo started; exit 3")
    took = time.monotonic() - started
    assert_clean_run(docker_api, result, run_dir, nodes=2, code=3)
    assert "started" in result.stdout
    # Every one counted; named after what it runs, even one forked but not yet exec'd.
    assert re.search(r"rayhpc: the driver left 30 process\(es\) running \(sleep 300\): stopped "
                     r"them\n", result.stdout), result.stdout[-2000:]
    timing = json.loads((run_dir / "timing.json").read_text())
    assert timing["t_driver_end"] - timing["t_driver_start"] < 5, timing
    assert took < 90, f"the launch took {took:.0f} s"


def tmpfs(where: Path, size: str) -> Path:
    """A small file system (as a quota or a full scratch would be) at ``where``; skipped, with
    the reason, where this machine does not let us mount one."""
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755,uid=1000,"
                              "gid=100", "tmpfs", str(where)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs here (needs root): {mounted.stderr.strip()}")
    return where


@pytest.fixture
def small_shared(shared_dir):
    """A 20 MB file system as the shared dir."""
    yield tmpfs(shared_dir / "small", "20m")
    subprocess.run(["umount", "-l", str(shared_dir / "small")], check=False)


@pytest.fixture
def tiny_shared(shared_dir):
    """A 3 MiB file system as the shared dir: full after ~2.5 MB of driver output."""
    yield tmpfs(shared_dir / "tiny", "3m")
    subprocess.run(["umount", "-l", str(shared_dir / "tiny")], check=False)


def test_a_run_directory_that_fills_up_ends_with_the_drivers_code(docker_api, built_image,
                                                                  small_shared):
    image, _ = built_image
    result, run_dir = launch(image, small_shared, "--nodes", "2", "--driver",
                             "dd if=/dev/zero of=fill bs=1M; exit 5")
    assert run_dir is not None, result.stdout + result.stderr
    assert result.returncode == 5, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    errors = re.findall(r"rayhpc: error: (.*)", result.stdout)
    assert errors and "the run directory is full (No space left on device" in errors[0], errors
    assert "exit code 5 from the head's output" in errors[0], errors
    assert leftovers(docker_api, run_dir.name) == []
    assert no_temp_files(run_dir) == []


def test_a_full_run_directory_loses_no_driver_output_from_the_console(docker_api, built_image,
                                                                      tiny_shared):
    """10 MB of driver output into a 3 MiB run directory, then a traceback: the console shows
    every line once, in order, and the traceback; what was not stored is said, with how much.
    (With 100,000 lines the rest of the head's output took longer than the console waited
    for it at the end: the last lines were lost. The wait is now for a stall, not in all.)"""
    image, _ = built_image
    lines = 100000
    driver = (f"python -c 'import sys\nfor i in range({lines}): print(f\"line {{i:06d}} \" + 87 * "
              "\"x\")\nraise SystemExit(\"the driver gave up\")'")
    result, run_dir = launch(image, tiny_shared, "--nodes", "1", "--driver", driver)
    out = result.stdout
    assert run_dir is not None, out[-3000:] + result.stderr[-3000:]
    assert result.returncode == 1, out[-3000:] + result.stderr[-3000:]
    numbers = [int(n) for n in re.findall(r"^line (\d{6}) x{87}$", out, re.M)]
    assert numbers == list(range(lines)), (len(numbers), out[-2000:])
    assert "the driver gave up" in out
    stored = (run_dir / "driver.log").stat().st_size
    assert 0 < stored < lines * 100
    said = re.findall(r"rayhpc: warning: (\d+) bytes of the driver's output \(after the first "
                      r"(\d+) in \S+/driver.log\) were shown here but not stored: the run "
                      r"directory is full", out)
    assert said == [(str(lines * 100 + len("the driver gave up\n") - stored), str(stored))], \
        out[-3000:]
    assert "Traceback" not in result.stderr
    assert leftovers(docker_api, run_dir.name) == []
    assert no_temp_files(run_dir) == []
    # Nothing half-written or empty left behind by the launcher (root) in the full directory.
    assert not (run_dir / "logs" / "containers.log").exists() or \
        (run_dir / "logs" / "containers.log").stat().st_size > 0


def test_a_second_ctrl_c_stops_at_once_and_leaves_nothing(docker_api, built_image, shared_dir):
    image, _ = built_image
    run = Background(image, shared_dir, "--nodes", "2", "--driver",
                     with_driver(shared_dir, "wait_forever.py") + " --ignore-sigterm")
    run.wait_for_line("ready")
    run.proc.send_signal(signal.SIGINT)
    time.sleep(1)
    started = time.monotonic()
    run.proc.send_signal(signal.SIGINT)
    output = run.finish(timeout=120)
    assert run.proc.returncode == 130, output[-3000:]
    assert "rayhpc: SIGINT: stopping now (logs are kept)" in output
    assert "Traceback" not in output
    assert leftovers(docker_api, run.run_dir.name) == []
    assert time.monotonic() - started < 15


def test_sighup_stops_the_run_like_sigterm(docker_api, built_image, shared_dir):
    image, _ = built_image
    run = Background(image, shared_dir, "--nodes", "2", "--driver",
                     with_driver(shared_dir, "wait_forever.py"))
    run.wait_for_line("ready")
    run.proc.send_signal(signal.SIGHUP)
    output = run.finish(timeout=120)
    assert run.proc.returncode == 129, output[-3000:]
    assert "rayhpc: SIGHUP: stopping the cluster (logs are kept)" in output
    assert (run.run_dir / "exit_code").read_text().strip() == "129"
    for node in ("head", "worker-1"):
        assert "raylet.out" in archived(run.run_dir, node)
    assert leftovers(docker_api, run.run_dir.name) == []


def test_sighup_after_the_driver_exited_keeps_the_drivers_code(docker_api, built_image,
                                                               shared_dir):
    """A terminal closed once the driver has exited 0, while the cluster is torn down: the
    run stopped cleanly all the same, and its code is the driver's, not 129."""
    image, _ = built_image
    run = Background(image, shared_dir, "--nodes", "2", "--driver", "echo ready")
    run.wait_for_line("ready")
    head_log = run.run_dir / "logs" / "head.log"
    deadline = time.monotonic() + 60
    while "driver exited with 0" not in (head_log.read_text() if head_log.exists() else ""):
        assert time.monotonic() < deadline, run.output
        time.sleep(0.05)
    run.proc.send_signal(signal.SIGHUP)
    output = run.finish(timeout=120)
    assert run.proc.returncode == 0, output[-3000:]
    assert (run.run_dir / "exit_code").read_text().strip() == "0"
    assert leftovers(docker_api, run.run_dir.name) == []


def test_a_closed_stdout_never_stops_the_teardown(docker_api, built_image, shared_dir):
    """`rayhpc launch ... | head -3`: the reader goes away; the run still ends cleanly."""
    image, _ = built_image
    driver = "python -c 'import time\nfor i in range(40): print(i, flush=True); time.sleep(0.1)'"
    proc = subprocess.Popen(invoke_argv("launch", "--site", "local", "--image", image,
                                        "--shared", str(shared_dir), "--nodes", "2",
                                        "--driver", driver),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = [proc.stdout.readline() for _ in range(3)]
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    run_dir = run_dir_of(first[0], shared_dir)
    assert (run_dir / "exit_code").read_text().strip() == "0"
    assert leftovers(docker_api, run_dir.name) == []


def test_dollar_signs_in_the_shared_path_are_taken_literally(docker_api, built_image,
                                                            shared_dir):
    image, _ = built_image
    odd = shared_dir / "x$NOPE" / "at$HOSTNAME"
    result, run_dir = launch(image, odd, "--nodes", "2", "--driver",
                             "python examples/hello_nodes.py")
    assert_clean_run(docker_api, result, run_dir, nodes=2)
    assert "hello from 2 nodes: head, worker-1" in result.stdout
    assert (odd / "runs" / run_dir.name).is_dir()


def test_a_shared_dir_made_by_rayhpc_as_root_is_writable_by_the_driver(docker_api, built_image,
                                                                      shared_dir):
    if os.geteuid() != 0:
        pytest.skip("only root hands the directory to the containers' user")
    image, _ = built_image
    fresh = shared_dir / "made-by-rayhpc"
    result, run_dir = launch(image, fresh, "--nodes", "2", "--driver",
                             "echo result > out.txt")
    assert_clean_run(docker_api, result, run_dir, nodes=2)
    assert (fresh / "out.txt").read_text() == "result\n"
    assert fresh.stat().st_uid == 1000


def build_image(api, tag: str, dockerfile: str) -> str:
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    for _ in api.build(fileobj=context, custom_context=True, tag=tag, rm=True, decode=True):
        pass
    return tag


@pytest.mark.parametrize("case", ["no python", "no ray"])
def test_an_image_without_python_or_ray_is_named_before_any_node_starts(
        docker_api, built_image, shared_dir, case):
    image, _ = built_image
    if case == "no python":
        bad = build_image(docker_api, "rayhpc-test/no-python:1",
                          f"FROM {image}\nUSER root\nRUN rm -f /home/ray/anaconda3/bin/python*\n")
        expected = "--image: rayhpc-test/no-python:1 has no `python` on its PATH"
    else:
        bad = build_image(docker_api, "rayhpc-test/no-ray:1",
                          f"FROM {image}\nRUN python -m pip uninstall -q -y ray\n")
        expected = "--image: rayhpc-test/no-ray:1 has Python 3.11"
    with tempfile.TemporaryDirectory() as cache:  # no remembered check
        result, _ = launch(bad, shared_dir, "--nodes", "2", env={"XDG_CACHE_HOME": cache})
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {expected}"), lines
    assert "no Ray" in lines[0] or case == "no python"
    assert not (shared_dir / "runs").exists() or not any((shared_dir / "runs").iterdir())
    ours = [c for c in docker_api.containers(all=True, filters={"label": RUN_LABEL})
            if str(shared_dir) in c["Command"]]
    assert ours == []


def test_site_environment_reaches_every_local_node(docker_api, built_image, shared_dir):
    image, _ = built_image
    site = shared_dir / "mysite.yaml"
    site.write_text("scheduler: local\nruntime: docker\nenvironment:\n  RAYHPC_TEST_VALUE: "
                    "from-the-site\n")
    driver = with_driver(shared_dir, "environment_on_nodes.py")
    result = subprocess.run(invoke_argv("launch", "--site", str(site), "--image", image,
                                        "--shared", str(shared_dir), "--nodes", "2",
                                        "--driver", driver),
                            capture_output=True, text=True, timeout=600)
    run_dir = run_dir_of(result.stdout, shared_dir)
    assert_clean_run(docker_api, result, run_dir, nodes=2)
    assert "RAYHPC_TEST_VALUE on 2 nodes: from-the-site, from-the-site" in result.stdout


def test_more_local_nodes_than_the_cores_can_start_are_warned_about(docker_api, built_image,
                                                                    shared_dir):
    image, _ = built_image
    nodes = 2 * (os.cpu_count() or 1) + 1
    run = Background(image, shared_dir, "--nodes", str(nodes), "--join-timeout", "1",
                     "--driver", "python examples/hello_nodes.py")
    output = run.finish(timeout=600)
    assert re.search(rf"rayhpc: warning: {nodes} nodes on {os.cpu_count()} cores: each Ray "
                     r"node takes about a core to start", output), output[-2000:]
    assert leftovers(docker_api, run.run_dir.name) == []


def test_sigterm_inside_a_with_cluster_block_stops_the_cluster_cleanly(docker_api, built_image,
                                                                      shared_dir):
    """The Python API handles SIGTERM as the CLI does: the block ends, the cluster stops the
    clean way (its end recorded), nothing is left, the script exits 143."""
    image, _ = built_image
    script = f"""import os, signal, sys, time
sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
from rayhpc import Cluster
with Cluster.launch(site="local", nodes=2, shared={str(shared_dir)!r}, image={image!r}) as c:
    print("RUN", c.run_id, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(120)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    match = re.search(r"^RUN (\S+)$", result.stdout, re.M)
    assert match, result.stdout[-3000:] + result.stderr[-3000:]
    run_dir = shared_dir / "runs" / match.group(1)
    assert result.returncode == 143, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert (run_dir / "exit_code").read_text().strip() == "143"
    assert leftovers(docker_api, run_dir.name) == []


def test_down_as_root_writes_nothing_through_a_logs_link_the_head_planted(docker_api, built_image,
                                                                          shared_dir):
    """Issue 29: from inside the head's container (uid 1000) logs/ becomes a link to a
    root-only directory outside the shared dir; `rayhpc down` (root) keeps nothing there, says
    so, and still removes everything."""
    if os.geteuid() != 0:
        pytest.skip("the danger is root following a link the containers' user planted")
    image, _ = built_image
    victim = Path(tempfile.mkdtemp(prefix="rayhpc-victim-"))  # root's only (0700)
    result, run_dir = launch(image, shared_dir, "--nodes", "2", "--detach")
    assert run_dir is not None and result.returncode == 0, result.stdout + result.stderr
    run_id = run_dir.name
    try:
        planted = docker_api.exec_create(
            f"rayhpc-{run_id}-head",
            ["sh", "-c", f"cd {run_dir} && mv logs logs.o && ln -s {victim} logs"])
        docker_api.exec_start(planted)
        assert (run_dir / "logs").is_symlink()
        stopped = invoke("down", "--run", run_id, "--shared", str(shared_dir))
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert list(victim.iterdir()) == []
        assert (f"rayhpc: warning: logs not kept: {run_dir / 'logs'}: a symbolic link in the "
                "run directory: not followed") in stopped.stdout, stopped.stdout
        assert "exit code 143" in stopped.stdout and "Traceback" not in stopped.stderr
        assert leftovers(docker_api, run_id) == []
    finally:
        invoke("down", "--run", run_id, "--shared", str(shared_dir))
        victim.rmdir()
