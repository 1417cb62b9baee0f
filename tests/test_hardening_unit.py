"""Hardening that needs no engine: the capacity check on fake machine facts (a real launch the
machine cannot hold would take the engine down), containers' output bounded where it is kept,
spec.json files of the wrong shape, image tags the engine would choke on."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rayhpc.common.user_error import UserError
from rayhpc.containers.dockerfile import render_dockerfile
from rayhpc.containers.recipe import load_recipe
from rayhpc.launcher.backends.local.capacity import (
    GIB,
    MachineFacts,
    check_capacity,
    node_memory,
    nodes_that_fit,
)
from rayhpc.launcher.backends.local.compose_run import bounded_head_and_tail
from rayhpc.launcher.contract import LaunchSpec, RunPaths
from rayhpc.launcher.node.harvest import harvest_logs
from rayhpc.launcher.node.head import driver_argv
from rayhpc.launcher.node.processes import session_processes, stop_session
from tests import PROJECT_ROOT
from tests.cli import invoke
from tests.specs import make_spec

MACHINE = MachineFacts(memory_bytes=24 * GIB, cpus=2)  # the machines of this project


def test_the_nodes_that_fit_are_the_machines_memory_over_each_nodes_shm_and_ray():
    # 24 GiB less 1 GiB for the machine and 0.5 GiB for the head, over 2 GiB shm + 0.5 GiB.
    assert nodes_that_fit(MACHINE, 2 * GIB) == 9
    assert nodes_that_fit(MACHINE, GIB // 2) == 22
    assert nodes_that_fit(MachineFacts(2 * GIB, 1), 2 * GIB) == 0
    assert node_memory(GIB) == GIB + 512 * (1 << 20)


def test_a_node_count_the_machine_cannot_hold_is_refused_naming_the_largest_that_fits():
    check_capacity(9, "2g", 2 * GIB, MACHINE)  # fits: no word
    with pytest.raises(UserError) as refused:
        check_capacity(5000, "2g", 2 * GIB, MACHINE)
    message = str(refused.value)
    assert message.startswith("--nodes: 5000 local nodes do not fit on this machine: each "
                              "takes 2.5 GiB (--shm-size 2g and 512 MiB for Ray)"), message
    assert "use --nodes 9 or fewer" in message
    with pytest.raises(UserError, match=r"^--shm-size: 64g per node does not fit even one "):
        check_capacity(1, "64g", 64 * GIB, MACHINE)


def test_a_containers_output_is_kept_to_its_first_and_last_halves_with_the_drop_counted():
    chunks = [bytes([65 + i % 26]) * 1000 for i in range(100)]  # 100,000 bytes
    first, last, dropped = bounded_head_and_tail(iter(chunks), 10_000)
    data = b"".join(chunks)
    assert first == data[:5000] and last == data[-5000:] and dropped == 90_000
    assert bounded_head_and_tail(iter([b"short\n"]), 10_000) == (b"short\n", b"", 0)
    first, last, dropped = bounded_head_and_tail(iter([b"x" * 7000]), 10_000)
    assert first + last == b"x" * 7000 and dropped == 0


@pytest.mark.parametrize("field,value", [("ports", [1, 2]), ("node_names", "str"),
                                         ("published", [1]), ("nodes", "3"),
                                         ("groups", [1, 2]), ("shared", 7)])
def test_a_spec_json_with_a_field_of_the_wrong_type_is_not_a_spec(field, value):
    data = json.loads(json.dumps(make_spec(nodes=2).to_json()))
    assert LaunchSpec.from_json(data) == make_spec(nodes=2)
    with pytest.raises(ValueError, match=f"spec.json: {field}: "):
        LaunchSpec.from_json({**data, field: value})


@pytest.mark.parametrize("content", ["[1, 2]", '"str"', "{}", '{"ports": [1, 2]}'])
def test_status_and_down_take_a_run_directory_whose_spec_is_not_one(tmp_path, content):
    """One bad spec.json among the runs: `status` lists the others, `down` of it says no run."""
    good = make_spec("slurm", nodes=2, shared=str(tmp_path), run_id="20260101-000000-good",
                     image="/x.sif")  # a batch run: no engine needed to list it
    bad = {**good.to_json(), "ports": [1, 2]} if "ports" in content else json.loads(content)
    for run_id, spec in (("20260101-000000-good", good.to_json()),
                         ("20260101-000000-bad0", bad)):
        (tmp_path / "runs" / run_id).mkdir(parents=True)
        (tmp_path / "runs" / run_id / "spec.json").write_text(json.dumps(spec, default=str))
    env = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    status = invoke("status", "--shared", str(tmp_path), env=env, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "Traceback" not in status.stderr
    assert "20260101-000000-good" in status.stdout
    assert "20260101-000000-bad0" not in status.stdout
    down = invoke("down", "--run", "20260101-000000-bad0", "--shared", str(tmp_path), env=env,
                  timeout=120)
    assert down.returncode == 2 and "Traceback" not in down.stderr, down.stderr
    assert down.stderr.startswith("error: ") and len(down.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("flag,tag", [("--tag", "UPPER/Case:tag"), ("--base", "Bad Base")])
def test_build_refuses_an_image_reference_the_engine_cannot_take(flag, tag):
    result = invoke("build", flag, tag, env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
                    timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"error: {flag}: {tag!r} is not a valid image reference; use "
                             "[registry/]name[:tag] in lower case, e.g. "
                             "rayhpc/ray:2.60.0-py311-cpu\n")


LEAVES_MANY = "for i in $(seq 40); do sleep 300 & done; exit 0"
# Forks a child that execs only after its parent (the session's leader) has exited: until
# then the child shows the leader's command line.
FORKS_THEN_EXECS = ("import os, time\n"
                    "if os.fork() == 0:\n"
                    "    time.sleep(0.3)\n"
                    "    os.execvp('sleep', ['sleep', '300'])\n")


def test_stopping_a_drivers_leftovers_counts_every_one_and_names_each_kind_once():
    argv = driver_argv(LEAVES_MANY)
    driver = subprocess.Popen(argv, start_new_session=True)
    assert driver.wait(timeout=30) == 0
    count, names = stop_session(driver.pid, 5, leader=argv)
    assert (count, names) == (40, ["sleep 300"])
    assert session_processes(driver.pid) == []


def test_a_leftover_forked_but_not_yet_execd_is_named_after_what_it_execs():
    argv = [sys.executable, "-c", FORKS_THEN_EXECS]
    driver = subprocess.Popen(argv, start_new_session=True)
    assert driver.wait(timeout=30) == 0
    count, names = stop_session(driver.pid, 5, leader=argv)
    assert (count, names) == (1, ["sleep 300"])
    assert session_processes(driver.pid) == []


def test_ctrl_c_during_cluster_launch_raises_keyboard_interrupt(monkeypatch):
    """The launch's watcher holds the signal and stops the cluster; the caller then gets the
    Ctrl-C, not an error about exit code 130."""
    import rayhpc.launcher.cluster as cluster_api
    from rayhpc.launcher.backends.watch import RunWatcher

    def start(*_args, **_kwargs):
        watcher = RunWatcher(Path("/nonexistent"), out=io.StringIO())
        with watcher.holding_signals():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
        return 128 + watcher.signals[0], None

    monkeypatch.setattr(cluster_api, "start", start)
    before = signal.getsignal(signal.SIGINT)  # ignored where a shell started us in the background
    with pytest.raises(KeyboardInterrupt):
        cluster_api.Cluster.launch(nodes=2)
    assert signal.getsignal(signal.SIGINT) is before


SIGTERM_IN_A_WITH = """
import os, signal, time
import rayhpc.launcher.cluster as cluster_api
class Run:
    run_id = "r"
    exit_code = None
cluster_api.stop_run = lambda run, say: print("stopped cleanly", flush=True) or 143
with cluster_api.Cluster(Run()):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
print("not reached")
"""


def test_sigterm_inside_a_with_cluster_block_stops_the_cluster_and_exits_143():
    result = subprocess.run([sys.executable, "-c", SIGTERM_IN_A_WITH], capture_output=True,
                            text=True, timeout=60, cwd=Path(__file__).parent.parent)
    assert (result.returncode, result.stdout) == (143, "stopped cleanly\n"), result


@pytest.mark.parametrize("key", ["pip", "apt"])
def test_a_recipe_package_with_a_line_break_is_refused_with_one_line(tmp_path, key):
    recipe = (PROJECT_ROOT / "rayhpc/recipes/ray.yaml").read_text().replace(
        "  - tqdm\n" if key == "pip" else "  - iproute2", "  - \"tqdm\\nRUN touch /pwned\"\n"
        if key == "pip" else "  - \"iproute2\\nRUN touch /pwned\"")
    (tmp_path / "evil.yaml").write_text(recipe)
    result = invoke("build", "--recipe", str(tmp_path / "evil.yaml"),
                    env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"error: {tmp_path / 'evil.yaml'}: {key}: "
                             f"'{'tqdm' if key == 'pip' else 'iproute2'}\\nRUN touch /pwned' "
                             "holds a line break or another control character; give one "
                             "package per entry\n")


def test_a_package_with_a_line_break_can_never_render_an_instruction():
    recipe = dataclasses.replace(load_recipe("ray"), pip=("tqdm\nRUN touch /pwned",))
    with pytest.raises(ValueError, match="control character"):
        render_dockerfile(recipe, "cpu")


@pytest.mark.parametrize("words", [[""], ["  ", "x"]])
def test_submit_refuses_a_command_whose_program_is_empty(words):
    result = invoke("submit", "--run", "20260101-000000-none", "--", *words, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: the command after -- starts with an empty word")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_status_with_no_runs_and_an_engine_that_does_not_answer_says_so(tmp_path):
    result = invoke("status", "--shared", str(tmp_path),
                    env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, timeout=60)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.startswith("error: no Docker engine reachable at "
                                    "unix:///nonexistent/docker.sock: "), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_finished_jobs_output_cut_by_the_log_cap_says_so_and_starts_at_a_whole_line(
        tmp_path):
    """The head's archive keeps a job's output's tail (log_cap): `rayhpc logs --job` says how
    much is missing and starts at a line's start, not mid-line and silently."""
    run_id, job = "20260101-000000-capd", "raysubmit_cut"
    spec = make_spec(nodes=2, shared=str(tmp_path), run_id=run_id, log_cap="1k")
    paths = RunPaths(tmp_path / "runs" / run_id)
    (paths.dir / "logs").mkdir(parents=True)
    paths.spec.write_text(json.dumps(spec.to_json(), default=str))
    session_logs = tmp_path / "ray" / "session_latest" / "logs"
    session_logs.mkdir(parents=True)
    (session_logs / f"job-driver-{job}.log").write_text(
        "".join(f"line {i:04d} of the job's output\n" for i in range(200)))  # 6,000 bytes
    harvest_logs(paths, "head", tmp_path / "ray", 1024, full=True)
    paths.exit_code.write_text("0\n")
    result = invoke("logs", "--run", run_id, "--job", job, "--shared", str(tmp_path),
                    env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, timeout=60)
    assert result.returncode == 0, result.stderr
    first, second, *rest = result.stdout.splitlines()
    assert first == (f"rayhpc: job {job}'s output starts mid-way: its first 4980 of 6000 bytes "
                     "were dropped (the head keeps at most log_cap = 1024 bytes of logs)")
    assert second == "line 0166 of the job's output"
    assert rest[-1] == "line 0199 of the job's output" and len(rest) == 33


KEEP_OUTPUT_ON_A_FULL_DISK = """
import os, resource, signal, sys
from pathlib import Path
from rayhpc.launcher.backends.local.compose_run import keep_container_output
class Api:
    def logs(self, name, stream, timestamps):
        return iter([b"2026-01-01T00:00:00Z a line of output\\n"] * 500)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
try:
    keep_container_output(Api(), [("head", "c-head")], Path(sys.argv[1]) / "containers.log")
except OSError as exc:
    print("refused:", exc.strerror)
"""


def test_container_output_that_the_run_directory_cannot_take_leaves_no_file(tmp_path):
    """A run directory that cannot take the containers' output: no empty or partial
    containers.log (nor a temp file) is left, and the caller hears why."""
    result = subprocess.run([sys.executable, "-c", KEEP_OUTPUT_ON_A_FULL_DISK, str(tmp_path)],
                            capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).parent.parent)
    assert result.stdout == "refused: File too large\n", result
    assert list(tmp_path.iterdir()) == []
