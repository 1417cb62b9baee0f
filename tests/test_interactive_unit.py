"""Interactive clusters without an engine or a scheduler: connect.txt, the interactive rule,
the schedulers' state and clean-cancel command lines (recording fakes on PATH, run by
`rayhpc down`/`status` as a user would), Ray job results, working directories."""

from __future__ import annotations

import http.server
import io
import json
import os
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
from dataclasses import replace
from pathlib import Path

import pytest

from rayhpc.common.user_error import UserError
from rayhpc.launcher.backends.rundir import prepare_run_dir
from rayhpc.launcher.contract import RunPaths, write_json, write_record
from rayhpc.launcher.node.connect import connect_text
from rayhpc.launcher.node.ray_start import ray_start_args
from rayhpc.launcher.runs.jobs import JobsClient, exit_code_of, follow_job
from rayhpc.launcher.runs.run import Run, status_line
from rayhpc.launcher.runs.stop import down
from rayhpc.launcher.runs.submit import entrypoint_of, working_dir_uri
from rayhpc.launcher.schedulers import SCHEDULERS
from tests import PROJECT_ROOT
from tests.cli import invoke
from tests.specs import head_record, make_spec

TEMP = "/tmp/rh-test"

# -- the interactive rule

def test_no_driver_anywhere_is_an_interactive_cluster():
    assert make_spec("local").interactive
    assert make_spec("slurm", image="/x.sif").driver is None
    assert not make_spec("local", driver="python x.py").interactive


def test_interactive_wins_over_a_driver_from_the_environment_or_site():
    from rayhpc.launcher.orchestration import resolve_spec
    from rayhpc.launcher.resolve.config import load_site

    spec = resolve_spec(load_site("local"), {}, {"RAYHPC_DRIVER": "python x.py"},
                        interactive=True)
    assert spec.interactive
    with pytest.raises(UserError, match="--interactive: an interactive cluster runs no "
                                        "--driver; drop one of them"):
        resolve_spec(load_site("local"), {"driver": "python x.py"}, {}, interactive=True)


# -- connect.txt

def test_connect_text_on_the_local_site_names_the_published_ports():
    spec = replace(make_spec("local", nodes=3), published={"dashboard": 40001, "client": 40002})
    text = connect_text(spec, "172.18.0.2", "/s/runs/R/auth_token")
    assert "export RAY_ADDRESS=http://127.0.0.1:40001\n" in text
    assert "export RAY_AUTH_MODE=token\n" in text
    assert "export RAY_AUTH_TOKEN_PATH=/s/runs/R/auth_token\n" in text
    assert 'ray.init("ray://127.0.0.1:40002")' in text
    assert "ssh" not in text  # nothing to tunnel on this machine
    assert all(line.startswith(("#", "export ")) for line in text.splitlines())


def test_connect_text_on_an_hpc_site_tunnels_the_dashboard_through_the_login_node():
    spec = replace(make_spec("slurm", image="/x.sif"), login="alice@login1.example.org")
    ports = spec.ports
    text = connect_text(spec, "10.1.2.3", "/lus/s/runs/R/auth_token")
    assert f"export RAY_ADDRESS=http://10.1.2.3:{ports['dashboard']}\n" in text
    assert f'ray.init("ray://10.1.2.3:{ports["client"]}")' in text
    assert (f"# from your laptop: ssh -N -L 8265:10.1.2.3:{ports['dashboard']} "
            "alice@login1.example.org   then open http://localhost:8265") in text


def test_the_dashboard_binds_the_heads_cluster_address_by_default():
    spec = make_spec("local")
    assert "--dashboard-host=172.18.0.2" in ray_start_args(spec, "172.18.0.2", None, None, TEMP)
    spec = replace(spec, dashboard_host="127.0.0.1")  # a site file may keep it on the head
    assert "--dashboard-host=127.0.0.1" in ray_start_args(spec, "172.18.0.2", None, None, TEMP)


def test_compose_publishes_dashboard_and_client_on_loopback_only():
    import dataclasses

    import yaml

    from rayhpc.launcher.backends.local.compose import render_compose

    spec = dataclasses.replace(make_spec("local", shared="/s", image="img"),
                               published={"dashboard": 40001, "client": 40002})
    head = yaml.safe_load(render_compose(spec))["services"]["head"]
    assert head["ports"] == [f"127.0.0.1:40001:{spec.ports['dashboard']}",
                             f"127.0.0.1:40002:{spec.ports['client']}"]


# -- schedulers: state and the clean cancel

@pytest.mark.parametrize("name, running, pending", [
    ("slurm", ["scancel", "--batch", "--signal=TERM", "42"], ["scancel", "42"]),
    ("pbs", ["qsig", "-s", "TERM", "42"], ["qdel", "42"]),
    ("lsf", ["bkill", "-s", "TERM", "42"], ["bkill", "42"]),
    ("cobalt", ["qdel", "42"], ["qdel", "42"]),
])
def test_cancel_commands(name, running, pending):
    scheduler = SCHEDULERS[name]
    assert scheduler.cancel_command("42", running=True) == running
    assert scheduler.cancel_command("42", running=False) == pending


# What each scheduler's state command prints for a running job, and the state read from it.
STATE_OUTPUT = {
    "slurm": ("RUNNING\n", "RUNNING"),
    "pbs": ("Job id            Name             User              Time Use S Queue\n"
            "----------------  ---------------- ----------------  -------- - -----\n"
            "42.pbs01          rayhpc-x         alice             00:00:05 R debug\n", "R"),
    "lsf": ("RUN\n", "RUN"),
    "cobalt": ("JobID  State\n=============\n42     running\n", "running"),
}


@pytest.mark.parametrize("name", sorted(STATE_OUTPUT))
def test_state_parsing(name):
    scheduler = SCHEDULERS[name]
    output, state = STATE_OUTPUT[name]
    assert scheduler.parse_state(output) == state
    assert state in scheduler.running_states
    assert scheduler.parse_state("") == ""


def test_finished_states_count_as_gone():
    assert SCHEDULERS["slurm"].parse_state("COMPLETED\n") == ""
    assert SCHEDULERS["lsf"].parse_state("DONE\n") == ""
    assert SCHEDULERS["slurm"].parse_state("PENDING\n") == "PENDING"


def fake_scheduler(bin_dir: Path, name: str, run_dir: Path, state: str, log: Path) -> None:
    """Recording fakes of the scheduler's state and cancel commands: state prints ``state``
    until the run has an exit code; cancel records its argv and ends the run as the agents
    would (records stopped, exit code 143)."""
    scheduler = SCHEDULERS[name]
    output = STATE_OUTPUT[name][0].replace(STATE_OUTPUT[name][1], state)
    state_cmd = scheduler.state_command("42")[0]
    cancels = {scheduler.cancel_command("42", r)[0] for r in (True, False)}
    scripts = {state_cmd: f"""#!/bin/sh
echo "$0 $*" >> {log}
[ -e {run_dir}/exit_code ] && exit 1
printf '%s' '{output}'
"""}
    for cancel in cancels:
        scripts[cancel] = f"""#!/bin/sh
echo "$0 $*" >> {log}
echo '{{"state": "stopped"}}' > {run_dir}/nodes/node1.json
echo '{{"state": "stopped"}}' > {run_dir}/nodes/node2.json
echo '{{"t_submit": 1.0, "nodes_expected": 2, "nodes_joined": 2}}' > {run_dir}/timing.json
echo 143 > {run_dir}/exit_code
"""
    for command, text in scripts.items():
        path = bin_dir / command
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)


def batch_run(tmp_path: Path, name: str, up: bool = True) -> Run:
    site = {"slurm": "slurm", "pbs": "pbs", "lsf": "lsf", "cobalt": "theta"}[name]
    spec = make_spec(site, shared=str(tmp_path / "shared"), image="/x.sif", nodes=2,
                     account="proj")
    prepare_run_dir(spec)
    paths = RunPaths(spec.run_dir)
    paths.job_id.write_text("42\n")
    write_record(paths.head, head_record("10.0.0.1", "node1", up_since=time.time() - 60))
    write_json(paths.status, {"joined": 2, "expected": 2, "lost": []})
    for node in ("node1", "node2"):
        write_json(paths.node_record(node), {"state": "joined", "ip": "10.0.0.9"})
    if up:
        paths.connect.write_text("# up\n")
    return Run.load(spec.run_dir)


@pytest.mark.parametrize("name, state, cancel", [
    ("slurm", "RUNNING", "scancel --batch --signal=TERM 42"),
    ("slurm", "PENDING", "scancel 42"),
    ("pbs", "R", "qsig -s TERM 42"),
    ("pbs", "Q", "qdel 42"),
    ("lsf", "RUN", "bkill -s TERM 42"),
    ("lsf", "PEND", "bkill 42"),
    ("cobalt", "running", "qdel 42"),
])
def test_invoke_down_cancels_a_batch_job_the_clean_way(tmp_path, name, state, cancel):
    run = batch_run(tmp_path, name)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    fake_scheduler(bin_dir, name, run.paths.dir, state, log)
    result = invoke("down", "--run", run.run_id, "--site", run.spec.site, "--shared",
                    str(run.spec.shared), env={"PATH": f"{bin_dir}:{os.environ['PATH']}"},
                    timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = [line.split(" ", 1) for line in log.read_text().splitlines()]
    assert [Path(c[0]).name + " " + c[1] for c in calls if Path(c[0]).name in cancel] \
        == [cancel]
    assert "exit code 143" in result.stdout


def test_status_of_a_batch_run_shows_the_job_nodes_and_time_left(tmp_path):
    run = batch_run(tmp_path, "slurm")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_scheduler(bin_dir, "slurm", run.paths.dir, "RUNNING", tmp_path / "calls.log")
    # As on a login node: no Docker engine (its runs are not listed, and no error).
    result = invoke("status", "--site", "slurm", "--shared", str(run.spec.shared),
                    env={"PATH": f"{bin_dir}:{os.environ['PATH']}",
                         "DOCKER_HOST": "unix:///nonexistent/docker.sock"}, timeout=60)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith(f"{run.run_id}  slurm  up (interactive)  2/2 nodes joined  up 0:01:")
    assert "job 42 RUNNING  ~0:28:" in line and line.endswith("left of 00:30:00")


def test_down_waits_until_every_node_stopped(tmp_path, monkeypatch):
    run = batch_run(tmp_path, "slurm")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_scheduler(bin_dir, "slurm", run.paths.dir, "RUNNING", tmp_path / "calls.log")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    said = []
    assert down(run, said.append) == 143
    assert all(rec.state == "stopped" for rec in run.nodes().values())
    with pytest.raises(UserError, match=f"--run: run {run.run_id} has finished: 2/2 nodes"):
        down(run, said.append)


# -- Ray jobs

class FakeJobs(JobsClient):
    """The Jobs API of a job that prints ``output`` and ends with ``status``/``code``; its
    output comes as the state API's log endpoints send it (a stream that stays open, the
    file's last lines, the whole file)."""

    def __init__(self, status="SUCCEEDED", code=0, output=b"line 1\nline 2",
                 stream_cut: int | None = None):
        super().__init__("http://fake", "token", head_ip="10.0.0.1")
        self.calls = 0
        self.status, self.code, self.written = status, code, output
        self.stream_cut = stream_cut  # the stream brings only this much (a stall)
        self.stopped = False
        self.paths: list[str] = []
        self.release = threading.Event()

    def info(self, job_id):
        self.calls += 1
        done = self.calls >= 3
        return {"status": self.status if done else "RUNNING", "driver_node_id": "abc",
                "driver_exit_code": self.code if done else None,
                "message": "Job entrypoint command failed with exit code 5, last available "
                           "logs:\nline 1\n"}

    def chunks(self, path, timeout=None):
        self.paths.append(path)
        query = urllib.parse.parse_qs(path.split("?", 1)[1])
        assert query["submission_id"] == ["raysubmit_x"] and query["node_id"] == ["abc"]
        lines = int(query["lines"][0])
        if path.startswith("/api/v0/logs/stream?"):
            data = self.written[:self.stream_cut]
            yield from (data[i:i + 3] for i in range(0, len(data), 3))
            self.release.wait(30)  # a stream stays open while it follows the file
            return
        assert path.startswith("/api/v0/logs/file?")
        data = self.written if lines == -1 else \
            b"".join(self.written.splitlines(keepends=True)[-lines:])
        yield from (data[i:i + 5] for i in range(0, len(data), 5))

    def stop(self, job_id):
        self.stopped = True


@pytest.fixture
def quick_follow(monkeypatch):
    monkeypatch.setattr("rayhpc.launcher.runs.jobs.POLL_S", 0.01)
    monkeypatch.setattr("rayhpc.launcher.runs.jobs.QUIET_S", 0.2)


def test_follow_job_prints_the_output_once_and_returns_the_drivers_code(quick_follow):
    out = []
    jobs = FakeJobs("FAILED", 5)
    result = follow_job(jobs, "raysubmit_x", out.append)
    jobs.release.set()
    assert "".join(out) == "line 1\nline 2\n"
    assert (result.status, result.exit_code, result.message) == ("FAILED", 5, "")
    # One stream, one look at the last lines: the output is never fetched whole.
    assert [path.split("?")[0] for path in jobs.paths] == ["/api/v0/logs/stream",
                                                            "/api/v0/logs/file"]
    # Without a driver's exit code, Ray's message says why (its first line).
    result = follow_job(FakeJobs("FAILED", None), "raysubmit_x", out.append)
    assert (result.exit_code, result.message) == (
        1, "Job entrypoint command failed with exit code 5, last available logs")


def test_follow_job_shows_non_utf8_output_with_replacement_characters(quick_follow):
    out = []
    output = "é€ ok\n".encode() + b"caf\xff\n" * 3
    follow_job(FakeJobs(output=output), "raysubmit_x", out.append)
    assert "".join(out) == "é€ ok\n" + "caf\ufffd\n" * 3


def test_a_stalled_stream_is_completed_from_the_file_past_what_was_shown(quick_follow,
                                                                         monkeypatch):
    monkeypatch.setattr("rayhpc.launcher.runs.jobs.END_WAIT_S", 1.0)
    output = b"".join(b"line %d\n" % i for i in range(100))
    out = []
    jobs = FakeJobs(output=output, stream_cut=301)
    follow_job(jobs, "raysubmit_x", out.append)
    assert "".join(out) == output.decode()
    assert [path.split("?")[0] for path in jobs.paths][-1] == "/api/v0/logs/file"
    assert "lines=-1" in jobs.paths[-1]


def test_a_signal_stops_the_job_and_its_code_is_128_plus_n(quick_follow):
    jobs = FakeJobs("STOPPED", None)
    result = follow_job(jobs, "raysubmit_x", lambda _: None, signals=[2])
    assert jobs.stopped and result.exit_code == 130


@pytest.mark.parametrize("info, code", [
    ({"status": "SUCCEEDED", "driver_exit_code": 0}, 0),
    ({"status": "FAILED", "driver_exit_code": 3}, 3),
    ({"status": "FAILED", "driver_exit_code": -9}, 137),
    ({"status": "FAILED", "driver_exit_code": None}, 1),  # e.g. its runtime env failed
    ({"status": "STOPPED", "driver_exit_code": None}, 143),
])
def test_job_exit_codes(info, code):
    assert exit_code_of(info) == code


def test_entrypoint_keeps_the_words_quoted():
    assert entrypoint_of(["python", "-c", "print('a b')"]) == "python -c 'print('\"'\"'a b'\"'\"')'"
    with pytest.raises(UserError, match="missing command after --"):
        entrypoint_of([])


def test_requests_carry_the_token(monkeypatch):
    seen = {}

    class Response:
        status = 200

        def read(self):
            return json.dumps({"submission_id": "raysubmit_1"}).encode()

        def __enter__(self):
            return self

        def __exit__(self, *args):
            return False

    def urlopen(request, timeout):
        seen.update(headers=dict(request.header_items()), url=request.full_url,
                    body=json.loads(request.data))
        return Response()

    monkeypatch.setattr("urllib.request.urlopen", urlopen)
    client = JobsClient("http://127.0.0.1:1/", "sekret")
    assert client.submit("python x.py", {"working_dir": "local:///s"}, {}) == "raysubmit_1"
    assert seen["headers"]["Authorization"] == "Bearer sekret"
    assert seen["url"] == "http://127.0.0.1:1/api/jobs/"
    assert seen["body"]["runtime_env"] == {"working_dir": "local:///s"}


# -- working directories

def test_a_working_dir_in_the_shared_dir_is_used_in_place(tmp_path):
    run = batch_run(tmp_path, "slurm")
    project = run.spec.shared / "project"
    project.mkdir()
    assert working_dir_uri(run, str(project)) == f"local://{project.resolve()}"
    assert working_dir_uri(run, None) == f"local://{run.spec.shared.resolve()}"


def test_a_working_dir_outside_the_shared_dir_is_refused_on_hpc_sites(tmp_path):
    run = batch_run(tmp_path, "slurm")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(UserError, match=f"--working-dir: {elsewhere} is outside the shared "
                                        f"directory {run.spec.shared}, which is all the nodes "
                                        "of site slurm see"):
        working_dir_uri(run, str(elsewhere))


def test_status_line_of_a_run_not_up_yet(tmp_path):
    run = batch_run(tmp_path, "slurm", up=False)
    write_json(run.paths.status, {"joined": 1, "expected": 2, "lost": []})
    run.paths.job_id.unlink()  # launched inside an allocation: no scheduler to ask
    line = status_line(run)
    assert f"{run.run_id}  slurm  joining  1/2 nodes joined" in line
    assert line.endswith("launched inside an allocation")
    with pytest.raises(UserError, match=r"is not up yet \(1/2 nodes joined\)"):
        run.require_up()


def test_down_of_a_job_still_in_the_queue_removes_it(tmp_path, monkeypatch):
    run = batch_run(tmp_path, "slurm", up=False)
    run.paths.head.unlink()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    # squeue: PENDING until scancel removed it (then nothing); scancel: records only.
    (bin_dir / "squeue").write_text(f"""#!/bin/sh
[ -e {tmp_path}/cancelled ] && exit 0
echo PENDING
""")
    (bin_dir / "scancel").write_text(f"""#!/bin/sh
echo "scancel $*" >> {log}
touch {tmp_path}/cancelled
""")
    for name in ("squeue", "scancel"):
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr("rayhpc.launcher.runs.stop.STATE_CHECK_S", 0.1)
    said = []
    assert down(run, said.append) == 0
    assert log.read_text() == "scancel 42\n"
    assert said[-1] == f"run {run.run_id} stopped before its cluster started"


def test_logs_of_a_batch_run_from_the_run_directory(tmp_path):
    """Driver output and agent logs come from the run directory (the shared file system): the
    login node needs no access to the nodes."""
    from rayhpc.launcher.runs.logs import logs

    spec = make_spec("slurm", shared=str(tmp_path / "shared"), image="/x.sif", nodes=2,
                     driver="python d.py")
    prepare_run_dir(spec)
    run = Run.load(spec.run_dir)
    run.paths.driver_log.write_text("first\nsecond\n")
    write_json(run.paths.node_record("node2"), {"state": "stopped"})
    run.paths.node_log("node2").write_text("[rayhpc node2] joining\n")
    with tarfile.open(run.paths.node_archive("node2"), "w:gz") as tar:
        for name, text in (("raylet.out", b"raylet says\n"), ("MANIFEST.json", b"{}")):
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
    run.paths.exit_code.write_text("0\n")
    out = []
    assert logs(run, out.append, follow=True) == 0  # finished: no waiting
    assert "".join(out) == "first\nsecond\n"
    out.clear()
    logs(run, out.append, node="node2")
    assert "".join(out) == "[rayhpc node2] joining\n"
    out.clear()
    logs(run, out.append, node="node2", file="raylet.out")
    assert "".join(out) == "raylet says\n"
    with pytest.raises(UserError, match=r"--file: no 'gcs.out' among the logs kept of node2 "
                                        r"\(there: raylet.out\)"):
        logs(run, out.append, node="node2", file="gcs.out")


# -- the Python API against a dashboard that is a real HTTP server

class FakeDashboard(http.server.ThreadingHTTPServer):
    """A real HTTP server in a thread answering as a cluster's dashboard does for one job
    that prints ``OUTPUT``: its log stream is chunked and stays open, as Ray's does, until
    the run has ended (its exit_code file), then the connection drops mid-answer, as it does
    when the head stops."""

    OUTPUT = b"hello from the job\n"
    daemon_threads = True

    def __init__(self, run_dir: Path):
        super().__init__(("127.0.0.1", 0), DashboardHandler)
        self.run_dir = run_dir
        self.polls = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()


class DashboardHandler(http.server.BaseHTTPRequestHandler):
    server: FakeDashboard
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.answer(json.dumps({"submission_id": "raysubmit_x"}).encode())

    def do_GET(self):
        if self.path.startswith("/api/v0/logs?"):  # a node's Ray log files
            self.answer(json.dumps({"data": {"result": {"raylet": ["raylet.out"]}}}).encode())
        elif self.path.startswith("/api/jobs/"):
            self.server.polls += 1
            done = self.server.polls >= 3
            self.answer(json.dumps({"status": "SUCCEEDED" if done else "RUNNING",
                                    "driver_node_id": "abc",
                                    "driver_exit_code": 0 if done else None}).encode())
        elif self.path.startswith("/api/v0/logs/file?"):
            self.answer(FakeDashboard.OUTPUT)
        else:  # the stream: one chunk, then open until the cluster stopped, then cut
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(FakeDashboard.OUTPUT), FakeDashboard.OUTPUT))
            self.wfile.flush()
            while not (self.server.run_dir / "exit_code").exists():
                time.sleep(0.05)
            self.close_connection = True  # no last chunk: the answer ends mid-way


API_SCRIPT = """
import sys, threading, time
from rayhpc import Cluster

with Cluster.attach(sys.argv[1], shared=sys.argv[2], site="slurm") as cluster:
    print("exit code", cluster.submit("python -c 'print(1)'"), flush=True)
deadline = time.monotonic() + 20
while threading.active_count() > 1 and time.monotonic() < deadline:
    time.sleep(0.1)
print("threads left:", threading.active_count() - 1)
"""


def test_the_apis_job_followers_end_with_the_cluster_and_say_nothing(tmp_path):
    """`with Cluster.attach(...)`, a job submitted and followed, the block's end stops the
    cluster: its dashboard's connections drop (the log stream mid-answer), and the threads
    that followed the job's output end with it, with nothing on stderr."""
    run = batch_run(tmp_path, "slurm")
    dashboard = FakeDashboard(run.paths.dir)
    spec = replace(run.spec, ports={**run.spec.ports, "dashboard": dashboard.server_port})
    write_json(run.paths.spec, spec.to_json())
    write_record(run.paths.head, head_record("127.0.0.1", "node1"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_scheduler(bin_dir, "slurm", run.paths.dir, "RUNNING", tmp_path / "calls.log")
    result = subprocess.run([sys.executable, "-c", API_SCRIPT, run.run_id, str(spec.shared)],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    dashboard.shutdown()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hello from the job\nexit code 0\n" in result.stdout
    assert result.stdout.endswith("threads left: 0\n"), result.stdout
    assert result.stderr == ""


def test_logs_follow_ends_quietly_when_the_cluster_stops(tmp_path):
    """`rayhpc logs --follow` of a node's Ray log: the stream drops mid-answer as the cluster
    stops; following ends there (exit 0), with no error and no traceback."""
    run = batch_run(tmp_path, "slurm")
    dashboard = FakeDashboard(run.paths.dir)
    write_json(run.paths.spec, replace(run.spec, ports={
        **run.spec.ports, "dashboard": dashboard.server_port}).to_json())
    write_record(run.paths.head, head_record("127.0.0.1", "node1"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_scheduler(bin_dir, "slurm", run.paths.dir, "RUNNING", tmp_path / "calls.log")
    from tests.cli import invoke_argv

    with subprocess.Popen(invoke_argv("logs", "--run", run.run_id, "--site", "slurm",
                                      "--shared", str(run.spec.shared), "--node", "node1",
                                      "--file", "raylet.out", "--follow"),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}) as logs:
        assert logs.stdout.readline() == FakeDashboard.OUTPUT.decode()
        (run.paths.dir / "exit_code").write_text("143\n")  # the cluster stopped
        out, err = logs.communicate(timeout=60)
    dashboard.shutdown()
    assert (logs.returncode, out, err) == (0, "", "")


# -- an interactive launch on a batch site with a scheduler that brings the cluster up

# sbatch, squeue and scancel in one: the first job's nodes come up at once (head.json,
# status.json, connect.txt), a block (blocks/*.sh) is only queued; squeue says RUNNING until
# the run has ended; scancel ends it as its agents would (nodes stopped, exit code 143).
FAKE_SLURM = r'''
import json, os, sys
from pathlib import Path

name = Path(sys.argv[0]).name
state = Path(os.environ["FAKE_STATE"])
if name == "sbatch":
    script = Path(sys.argv[-1])
    if script.parent.name == "blocks":
        print("43")
        sys.exit(0)
    run_dir = script.parent
    (state / "run_dir").write_text(str(run_dir))
    if (state / "dashboard.py").exists():  # a dashboard on the run's port, up until its end
        import socket, subprocess, time
        port = json.loads((run_dir / "spec.json").read_text())["ports"]["dashboard"]
        subprocess.Popen([sys.executable, str(state / "dashboard.py"), str(run_dir), str(port)],
                         start_new_session=True, stdout=subprocess.DEVNULL,
                         stderr=open(state / "dashboard.log", "w"))
        for _ in range(200):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
    (run_dir / "head.json").write_text(os.environ["FAKE_HEAD"])
    (run_dir / "status.json").write_text(json.dumps({"joined": 2, "expected": 2, "lost": []}))
    (run_dir / "connect.txt").write_text("# up\n")
    print("42")
    sys.exit(0)
run_dir = Path((state / "run_dir").read_text())
if name == "squeue":
    print("" if (run_dir / "exit_code").exists() else "RUNNING")
elif name == "scancel":
    for node in ("node1", "node2"):
        (run_dir / "nodes" / f"{node}.json").write_text('{"state": "stopped"}')
    (run_dir / "timing.json").write_text(
        '{"t_submit": 1.0, "nodes_expected": 2, "nodes_joined": 2}')
    (run_dir / "exit_code").write_text("143\n")
'''


@pytest.fixture
def slurm_bringing_clusters_up(tmp_path, monkeypatch) -> dict[str, str]:
    """FAKE_SLURM on PATH (here and for the commands run); the environment they need."""
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name in ("sbatch", "squeue", "scancel"):
        (bin_dir / name).write_text(f"#!{sys.executable}\n{FAKE_SLURM}")
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_STATE": str(state),
           "FAKE_HEAD": json.dumps(head_record("127.0.0.1", "node1").to_json())}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for var in ("SLURM_JOB_ID", "RAYHPC_SHARED"):
        monkeypatch.delenv(var, raising=False)
    return env


def test_the_commands_rayhpc_suggests_name_a_shared_dir_that_is_not_the_default(
        tmp_path, slurm_bringing_clusters_up):
    """A run launched with --shared elsewhere: every `rayhpc ... --run ID` printed names it
    (without it the command would look in ./shared and not find the run)."""
    shared = tmp_path / "my shared"
    shared.mkdir()
    (shared / "ray.sif").write_text("")
    where = ["--site", "slurm", "--shared", str(shared)]
    launch = invoke("launch", *where, "--image", str(shared / "ray.sif"), "--account", "P",
                    "--nodes", "2", "--interactive", "--wait", cwd=tmp_path, timeout=120)
    assert launch.returncode == 0, launch.stdout + launch.stderr
    run_id = Path((tmp_path / "state" / "run_dir").read_text()).name
    flags = f"--run {run_id} --shared '{shared}'"
    assert f"`rayhpc status {flags}`" in launch.stdout
    assert f"job 42 keeps the cluster up until its walltime; `rayhpc down {flags}` stops it" \
        in launch.stdout
    grow = invoke("grow", "--run", run_id, *where, "--nodes", "1", cwd=tmp_path, timeout=120)
    assert grow.returncode == 0, grow.stdout + grow.stderr
    assert f"`rayhpc status {flags}` shows them, `rayhpc shrink {flags} --block b2` " \
           "releases them" in grow.stdout
    down = invoke("down", "--run", run_id, *where, cwd=tmp_path, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    # Where the shared dir is the default one (./shared here), the hints need no --shared.
    launch = invoke("launch", "--site", "slurm", "--image", str(shared / "ray.sif"),
                    "--account", "P", "--nodes", "2", "--interactive", "--wait",
                    cwd=tmp_path, timeout=120)
    run_id = Path((tmp_path / "state" / "run_dir").read_text()).name
    assert f"`rayhpc down --run {run_id}` stops it" in launch.stdout, launch.stderr
    assert invoke("down", "--run", run_id, "--site", "slurm", cwd=tmp_path,
                  timeout=120).returncode == 0


def test_a_cluster_launched_from_python_says_what_stops_it_there(
        tmp_path, slurm_bringing_clusters_up, capsys, monkeypatch):
    from rayhpc import Cluster
    from rayhpc.launcher.backends import watch

    monkeypatch.setattr(watch, "CHECK_EVERY_S", 0.05)
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "ray.sif").write_text("")
    with Cluster.launch(site="slurm", shared=str(shared), image=str(shared / "ray.sif"),
                        account="P", nodes=2) as cluster:
        said = capsys.readouterr().out
    assert "job 42 keeps the cluster up until its walltime; `cluster.down()` or the end of " \
           "its `with` block stops it\n" in said
    assert "rayhpc down" not in said
    assert cluster.run.exit_code == 143


def test_submit_refuses_a_script_that_is_not_where_the_job_runs(tmp_path):
    """`rayhpc submit -- python SCRIPT`: the script must be in the job's working directory
    (the shared dir, or --working-dir), as `launch --driver` checks; else one error line
    naming where it must go, exit 2, before the cluster is asked anything."""
    run = batch_run(tmp_path, "slurm")
    with socket.socket() as unused:  # a dashboard that is not there: nothing may reach it
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    write_json(run.paths.spec, replace(run.spec, ports={**run.spec.ports,
                                                         "dashboard": port}).to_json())
    write_record(run.paths.head, head_record("127.0.0.1", "node1"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_scheduler(bin_dir, "slurm", run.paths.dir, "RUNNING", tmp_path / "calls.log")
    shared = run.spec.shared.resolve()
    (shared / "proj").mkdir()

    def submit(*args: str):
        return invoke("submit", "--run", run.run_id, "--site", "slurm", "--shared", str(shared),
                      *args, env={"PATH": f"{bin_dir}:{os.environ['PATH']}"}, timeout=60)

    result = submit("--", "python", "my_job.py")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (f"error: the job's command: my_job.py not found in the shared "
                             f"directory {shared} (the job runs there, on the head node): put "
                             "the script there or give --working-dir DIR that holds it\n")
    result = submit("--working-dir", str(shared / "proj"), "--", "python", "-u", "my_job.py")
    assert result.returncode == 2
    assert result.stderr == (f"error: the job's command: my_job.py not found in the working "
                             f"directory {shared / 'proj'} (the job runs there, on the head "
                             "node): put the script there or fix --working-dir\n")
    # There: the check passes, and the dashboard (not there) is asked.
    (shared / "my_job.py").write_text("print('hello')\n")
    result = submit("--", "python", "my_job.py")
    assert result.returncode == 1 and "cannot reach the dashboard" in result.stderr


# A cluster's dashboard as a process of its own (FAKE_SLURM's sbatch starts it on the run's
# port): every job prints OUTPUT and succeeds, but one that says sys.exit(3) fails with 3.
DASHBOARD = r'''
import http.server, json, sys, threading, time
from pathlib import Path

run_dir, port = Path(sys.argv[1]), int(sys.argv[2])
OUTPUT = b"hello from 3 nodes: head, worker-1, worker-2\n"
jobs, polls = {}, {}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        job = f"raysubmit_{len(jobs)}"
        jobs[job] = body["entrypoint"]
        self.answer(json.dumps({"submission_id": job}).encode())

    def do_GET(self):
        if self.path.startswith("/api/jobs/"):
            job = self.path.rsplit("/", 1)[1]
            polls[job] = polls.get(job, 0) + 1
            code = 3 if "sys.exit(3)" in jobs[job] else 0
            done = polls[job] >= 2
            self.answer(json.dumps({
                "status": ("FAILED" if code else "SUCCEEDED") if done else "RUNNING",
                "driver_node_id": "abc", "driver_exit_code": code if done else None}).encode())
        elif self.path.startswith("/api/v0/logs/stream?"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(OUTPUT), OUTPUT))
        else:
            self.answer(OUTPUT)


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
deadline = time.monotonic() + 120
while not (run_dir / "exit_code").exists() and time.monotonic() < deadline:
    time.sleep(0.1)
'''

# Ray as far as the example uses it; what it says tells what the environment held when the
# example imported it.
FAKE_RAY = '''
import os
print("ray imported with RAY_AUTH_TOKEN_PATH", os.environ.get("RAY_AUTH_TOKEN_PATH", "unset"))
def init(address):
    print("ray.init", address)
def nodes():
    return [{}, {}, {}]
def shutdown():
    pass
'''


def test_the_interactive_example_gives_ray_the_token_before_importing_it(
        tmp_path, slurm_bringing_clusters_up):
    """rayhpc/examples/interactive_cluster.py, run as its docstring says (from a checkout),
    on a site whose cluster comes up at once: its jobs run, and Ray (a stand-in that notes
    the environment it was imported in) is imported with the run's token already set."""
    (tmp_path / "state" / "dashboard.py").write_text(DASHBOARD)
    (tmp_path / "fake_ray" / "ray").mkdir(parents=True)
    (tmp_path / "fake_ray" / "ray" / "__init__.py").write_text(FAKE_RAY)
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "ray.sif").write_text("")
    result = subprocess.run(
        [sys.executable, "rayhpc/examples/interactive_cluster.py", "--site", "slurm",
         "--shared", str(shared), "--image", str(shared / "ray.sif")],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180,
        env={**os.environ, "RAYHPC_ACCOUNT": "P", "PYTHONPATH": str(tmp_path / "fake_ray")})
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = Path((tmp_path / "state" / "run_dir").read_text())
    assert "exit codes: 0 (one after another), [0, 3] (two at once)\n" in result.stdout
    assert f"ray imported with RAY_AUTH_TOKEN_PATH {run_dir / 'auth_token'}\n" in result.stdout
    assert "Ray Client driver sees 3 nodes\n" in result.stdout
    assert result.stderr == ""
