"""The run directory as untrusted input (issue 29), without an engine: the containers (another
user where the launcher is root) write it, so the host side follows no link planted there,
reads no file past its bound, refuses a record of the wrong type or value by its file and
field and goes on, and loops as many times as the input has entries, never as its values say.
Each test drives the command or the function that did otherwise."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import resource
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from rayhpc.common.user_error import UserError
from rayhpc.launcher.backends.local.compose_run import LocalLaunch
from rayhpc.launcher.backends.rundir import prepare_run_dir
from rayhpc.launcher.backends.watch import RunWatcher
from rayhpc.launcher.contract import (
    Block,
    RecordError,
    RunPaths,
    TimingRecord,
    UnsafeFile,
    atomic_write,
    list_names,
    read_blocks,
    read_bounded,
    read_record,
    write_json,
    write_record,
)
from rayhpc.launcher.runs.run import Run
from rayhpc.launcher.timeline import MAX_TICKS, render_timeline
from tests.cli import invoke, invoke_argv
from tests.golden import GOLDEN_DIR
from tests.specs import head_record, make_spec

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
RECORDED = GOLDEN_DIR / "timeline" / "local-3"


def plant_link(directory: Path, target: Path) -> None:
    """What the containers' user can do in the run directory: move a directory away and put a
    link to anywhere in its place (`mv logs logs.o && ln -s /tmp/victim logs`)."""
    directory.rename(directory.with_name(directory.name + ".o"))
    directory.symlink_to(target)


def victim_dir(tmp_path: Path) -> Path:
    """A directory outside the shared dir that only its owner may write (root's, as root)."""
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o700)
    return victim


# -- no link followed: writes


class FakeEngine:
    """The engine as the local teardown sees it: the run's containers exited, each with Ray's
    logs and some output of its own."""

    def containers(self, **_filters):
        return []

    def networks(self, **_filters):
        return []

    def inspect_container(self, _name):
        return {"State": {"Running": False, "ExitCode": 0}}

    def get_archive(self, _name, _path):
        data = b"raylet says\n"
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo("logs/raylet.out")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        return iter([buffer.getvalue()]), {}

    def logs(self, _name, stream, timestamps):
        return iter([b"2026-01-01T00:00:00Z a line of output\n"])


def test_the_local_teardown_writes_nothing_through_a_linked_logs_dir(tmp_path):
    """`rayhpc down` of a local run (as root) keeps the containers' output and Ray's logs of
    nodes whose agent wrote none in logs/: with logs/ a link planted by the head container,
    nothing is written where it points, and the teardown goes on with a warning."""
    spec = make_spec("local", shared=str(tmp_path / "shared"), nodes=2)
    paths = RunPaths(prepare_run_dir(spec))
    victim = victim_dir(tmp_path)
    plant_link(paths.logs, victim)
    launch = LocalLaunch.__new__(LocalLaunch)  # its engine: the fake above
    out = io.StringIO()
    launch.spec, launch.api, launch.paths = spec, FakeEngine(), paths
    launch.watcher, launch.stop_grace = RunWatcher(paths.dir, out), 0
    launch.teardown()
    assert list(victim.iterdir()) == []
    assert f"warning: logs not kept: {paths.logs}: a symbolic link in the run directory: " \
           "not followed" in out.getvalue()
    # Where logs/ is a directory, the same teardown keeps them.
    paths.logs.unlink()
    paths.logs.mkdir()
    launch.teardown()
    assert sorted(list_names(paths.logs)) == ["containers.log", "head.tar.gz",
                                              "worker-1.tar.gz"]


def test_a_whole_file_write_never_writes_through_a_link_at_its_temp_name(tmp_path):
    """The temp name of a whole-file write (timing.json, exit_code, ... written by the
    launcher in the head's stead) was `.NAME.PID.tmp`: a link planted there was written
    through."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / f".timing.json.{os.getpid()}.tmp").symlink_to(victim)
    atomic_write(run_dir / "timing.json", "{}\n")
    assert victim.read_text() == "precious\n"
    assert (run_dir / "timing.json").read_text() == "{}\n"
    # A link at the file's own name is replaced, not followed.
    (run_dir / "exit_code").symlink_to(victim)
    atomic_write(run_dir / "exit_code", "0\n")
    assert victim.read_text() == "precious\n" and not (run_dir / "exit_code").is_symlink()


def test_no_read_or_write_goes_through_a_linked_directory_or_file(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "nodes").mkdir(parents=True)
    victim = victim_dir(tmp_path)
    (victim / "n1.json").write_text('{"state": "stopped"}')
    plant_link(run_dir / "nodes", victim)
    with pytest.raises(RecordError, match="nodes: a symbolic link in the run directory"):
        read_record(run_dir / "nodes" / "n1.json", TimingRecord, root=run_dir)
    with pytest.raises(UnsafeFile):
        atomic_write(run_dir / "nodes" / "n2.json", "{}", root=run_dir)
    assert list_names(run_dir / "nodes", run_dir) == []
    assert sorted(os.listdir(victim)) == ["n1.json"]
    (run_dir / "status.json").symlink_to(victim / "n1.json")
    with pytest.raises(RecordError, match="status.json: a symbolic link"):
        read_bounded(run_dir / "status.json", 1000)
    # The run directory itself as a link (its parent is the containers' too, runs/ made by
    # a root launcher): not followed either.
    (tmp_path / "linked-run").symlink_to(run_dir)
    with pytest.raises(RecordError, match="linked-run: a symbolic link"):
        read_bounded(tmp_path / "linked-run" / "timing.json", 1000)


def test_a_fifo_or_a_file_past_its_bound_is_refused_unread(tmp_path):
    """A FIFO planted as status.json made `rayhpc status` wait forever for a writer."""
    spec = make_spec("slurm", shared=str(tmp_path / "shared"), image="/x.sif", nodes=2)
    paths = RunPaths(prepare_run_dir(spec))
    os.mkfifo(paths.status)
    result = invoke("status", "--site", "slurm", "--shared", str(spec.shared), env=NO_ENGINE,
                    timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{spec.run_id}  slurm  starting  0/2 nodes joined")
    assert result.stderr == (f"rayhpc: warning: {paths.status}: not a regular file: not read: "
                             "ignored\n")
    paths.timing.write_text(" " * 2000)
    with pytest.raises(RecordError, match="timing.json: larger than 1000 bytes"):
        read_bounded(paths.timing, 1000)


def batch_run(tmp_path: Path) -> Run:
    """A running batch run (job 42 on Slurm) with its head up and two nodes joined."""
    spec = make_spec("slurm", shared=str(tmp_path / "shared"), image="/x.sif", nodes=2,
                     account="proj")
    paths = RunPaths(prepare_run_dir(spec))
    paths.job_id.write_text("42\n")
    write_record(paths.head, head_record("10.0.0.1", "node1", up_since=time.time() - 60))
    write_json(paths.status, {"joined": 2, "expected": 2, "lost": []})
    for node in ("node1", "node2"):
        write_json(paths.node_record(node), {"state": "joined", "ip": "10.0.0.9"})
    return Run.load(paths.dir)


def fake_slurm(tmp_path: Path, run: Run) -> tuple[dict, Path]:
    """squeue and scancel on PATH: job 42 (the run's) runs until the run has an exit code,
    any other job until scancel named it; scancel of 42 ends the run as its agents would.
    Returns the environment and the log of the calls."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    run_dir = run.paths.dir
    scripts = {"squeue": f"""#!/bin/sh
for arg in "$@"; do job=$arg; done
if [ "$job" = 42 ]; then [ -e {run_dir}/exit_code ] || echo RUNNING; exit 0; fi
[ -e {tmp_path}/cancelled-$job ] || echo RUNNING
""", "scancel": f"""#!/bin/sh
echo "scancel $*" >> {log}
for arg in "$@"; do job=$arg; done
touch {tmp_path}/cancelled-$job
[ "$job" = 42 ] || exit 0
echo '{{"state": "stopped"}}' > {run_dir}/nodes/node1.json
echo '{{"state": "stopped"}}' > {run_dir}/nodes/node2.json
echo '{{"t_submit": 1.0, "nodes_expected": 2, "nodes_joined": 2}}' > {run_dir}/timing.json
echo 143 > {run_dir}/exit_code
"""}
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {**NO_ENGINE, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, log


def block(name: str, job_id: str = "43") -> dict:
    return Block(name=name, nodes=1, group="", image="/x.sif", walltime_s=600,
                 t_submit=time.time(), job_id=job_id).to_json()


def test_down_writes_nothing_through_a_linked_blocks_dir_and_cancels_no_job_it_names(
        tmp_path):
    """blocks/ is the launcher's, but the containers' user can put a link in its place, to a
    directory whose block records name any job: `down` (as root) rewrote the records there
    and cancelled their jobs."""
    run = batch_run(tmp_path)
    victim = victim_dir(tmp_path)
    (victim / "b2.json").write_text(json.dumps(block("b2", job_id="77")))
    before = (victim / "b2.json").read_text()
    run.paths.blocks.mkdir()
    plant_link(run.paths.blocks, victim)
    env, log = fake_slurm(tmp_path, run)
    result = invoke("down", "--run", run.run_id, "--site", "slurm", "--shared",
                    str(run.spec.shared), env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert log.read_text() == "scancel --batch --signal=TERM 42\n"
    assert sorted(os.listdir(victim)) == ["b2.json"]
    assert (victim / "b2.json").read_text() == before
    assert result.stderr == (f"rayhpc: warning: {run.paths.blocks}: a symbolic link in the run "
                             "directory: not followed: no block read\n")


def test_block_records_with_a_bad_name_or_job_id_are_left_out_and_down_cancels_every_good_one(
        tmp_path):
    """A block record named "b" or "b4-old" made `status`, `shrink` and `down` fail (its name
    read as a number), so `down` cancelled nothing; a job id starting with a dash would have
    gone on the scheduler's command line as an option."""
    run = batch_run(tmp_path)
    run.paths.blocks.mkdir()
    bad = {"b.json": block("b"), "b4-old.json": block("b4-old"), "b5.json": block("b2"),
           "b6.json": block("b6", job_id="--user=alice")}
    for name, record in {"b2.json": block("b2"), **bad}.items():
        (run.paths.blocks / name).write_text(json.dumps(record))
    env, log = fake_slurm(tmp_path, run)
    shared = str(run.spec.shared)
    warnings = sorted([
        f"rayhpc: warning: {run.paths.blocks}/b.json: name: 'b' is not a block's name (b2, b3, "
        "...): left out",
        f"rayhpc: warning: {run.paths.blocks}/b4-old.json: name: 'b4-old' is not a block's name "
        "(b2, b3, ...): left out",
        f"rayhpc: warning: {run.paths.blocks}/b5.json: name: 'b2' is not its file's (b5): "
        "left out",
        f"rayhpc: warning: {run.paths.blocks}/b6.json: job_id: '--user=alice' is not a job id: "
        "left out"])

    status = invoke("status", "--site", "slurm", "--shared", shared, env=env, timeout=60)
    assert status.returncode == 0, status.stderr
    assert sorted(status.stderr.splitlines()) == warnings  # each once
    assert [line.split()[:2] for line in status.stdout.splitlines()[1:]] == [["block", "b2"]]

    shrink = invoke("shrink", "--run", run.run_id, "--block", "b4-old", "--site", "slurm",
                    "--shared", shared, env=env, timeout=60)
    assert shrink.returncode == 2, shrink.stderr
    assert shrink.stderr.splitlines()[-1] == (f"error: --block: run {run.run_id} has no block "
                                              "'b4-old' (its blocks: b2; `rayhpc grow` adds "
                                              "one)")

    down = invoke("down", "--run", run.run_id, "--site", "slurm", "--shared", shared,
                  env=env, timeout=60)
    assert down.returncode == 0, down.stdout + down.stderr
    assert sorted(down.stderr.splitlines()) == warnings
    assert log.read_text().splitlines() == ["scancel --batch --signal=TERM 42",
                                            "scancel --batch --signal=TERM 43"]
    assert "exit code 143" in down.stdout
    assert json.loads((run.paths.blocks / "b2.json").read_text())["released"] == "rayhpc down"


# -- records of the wrong type: named once, the command goes on


def test_status_lists_every_run_and_names_each_bad_record_once(tmp_path):
    """A status.json of the wrong type, a head.json whose time is NaN: each is one warning
    naming its file and field, and every run is still listed (they stopped `status` at the
    first, or gave a traceback)."""
    shared = tmp_path / "shared"
    lines = {}
    for suffix, bad in (("good", None), ("stat", "status"), ("head", "head")):
        spec = make_spec("slurm", shared=str(shared), image="/x.sif", nodes=2,
                         run_id=f"20260101-000000-{suffix}")
        paths = RunPaths(prepare_run_dir(spec))
        head = head_record("10.0.0.1", "node1", up_since=time.time() - 60).to_json()
        paths.head.write_text(json.dumps({**head, "time": float("nan")} if bad == "head"
                                         else head))
        paths.status.write_text(json.dumps({"joined": "all of them"} if bad == "status"
                                           else {"joined": 1, "expected": 2}))
        lines[suffix] = paths
    result = invoke("status", "--site", "slurm", "--shared", str(shared), env=NO_ENGINE,
                    timeout=60)
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == [
        "20260101-000000-good", "20260101-000000-head", "20260101-000000-stat"]
    assert "0/2 nodes joined" in result.stdout.splitlines()[2]  # the bad status: none read
    assert result.stderr.splitlines() == [
        f"rayhpc: warning: {lines['head'].head}: time: nan is out of range (a finite number "
        "within ±2**63): ignored",
        f"rayhpc: warning: {lines['stat'].status}: joined: str is not int: ignored"]


class EndedRun:
    def ended(self) -> str:
        return ""


def test_a_foreground_launchers_watch_goes_on_past_records_of_the_wrong_type(tmp_path):
    """The launcher's watch loop and its summary: a status.json of the wrong type is said once
    (not at every poll), and a timing.json whose group totals are of the wrong type is named
    in the summary (its format code crashed the launcher at the run's end)."""
    paths = RunPaths(tmp_path / "run")
    paths.dir.mkdir()
    paths.status.write_text(json.dumps({"joined": 1, "expected": "2"}))
    paths.timing.write_text(json.dumps({"t_submit": 1.0, "nodes_expected": 2,
                                        "groups": {"gpu": {"nodes": 2, "cpus": "many"}}}))
    out = io.StringIO()
    watcher = RunWatcher(paths.dir, out)
    for _ in range(3):
        watcher.poll()
    paths.exit_code.write_text("0\n")
    assert watcher.follow(EndedRun(), stop_timeout=1) == 0
    assert out.getvalue().splitlines() == [
        f"rayhpc: ignoring {paths.status}: expected: str is not int",
        f"rayhpc: run run: {paths.timing}: groups: gpu: cpus: str is not float, exit code 0"]


def test_timing_groups_and_block_counts_are_typed_too():
    with pytest.raises(RecordError, match=r"timing.json: blocks: b2: nodes: int is not list"):
        TimingRecord.from_json({"t_submit": 1.0, "blocks": {"b2": {"nodes": 5}}},
                               "timing.json")
    record = TimingRecord.from_json({"t_submit": 1.0, "groups": {"g": {"nodes": 2,
                                                                        "future": []}}}, "t")
    assert record.groups == {"g": {"nodes": 2, "future": []}}  # a newer writer's field kept


@pytest.mark.parametrize("data, message", [
    ({"t_submit": float("nan")}, "t_submit: nan is out of range"),
    ({"t_submit": float("inf")}, "t_submit: inf is out of range"),
    ({"t_submit": 1.0, "t_all_joined": 1e308}, r"t_all_joined: 1e\+308 is out of range"),
    ({"t_submit": 1.0, "nodes_expected": 10 ** 30}, "nodes_expected: 10000"),
    ({"t_submit": 1.0, "nodes_joined": -(2 ** 64)}, "nodes_joined: -1844"),
])
def test_a_number_no_clock_or_count_gives_is_refused_by_its_field(tmp_path, data, message):
    path = tmp_path / "timing.json"
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=message):
        read_record(path, TimingRecord)


@pytest.mark.parametrize("changes, message", [
    ({"name": "b"}, "name: 'b' is not a block's name"),
    ({"name": "b2/../x"}, "name: 'b2/../x' is not a block's name"),
    ({"job_id": "-1"}, "job_id: '-1' is not a job id"),
    ({"job_id": "42 43"}, "job_id: '42 43' is not a job id"),
    ({"nodes": -1}, "nodes: -1 is below zero"),
])
def test_a_block_record_is_checked_for_its_values(changes, message):
    with pytest.raises(RecordError, match=message):
        Block.from_json({**block("b2"), **changes}, "blocks/b2.json")
    for job_id in ("1234", "1234_5", "1234+0", "1234.pbs01", "1234[7].pbs01", ""):
        assert Block.from_json({**block("b2"), "job_id": job_id}, "b2.json").job_id == job_id


def test_a_run_directory_whose_spec_names_another_is_that_directorys_run(tmp_path):
    """spec.json is the containers' to rewrite: the run is the directory it was found in
    (its shared dir from there), and a spec naming another run id is not this run's."""
    spec = make_spec("slurm", shared=str(tmp_path / "shared"), image="/x.sif", nodes=2)
    paths = RunPaths(prepare_run_dir(spec))
    elsewhere = dataclasses.replace(spec, shared=tmp_path / "elsewhere")
    paths.spec.write_text(json.dumps(elsewhere.to_json(), default=str))
    assert Run.load(paths.dir).spec.run_dir == paths.dir
    other = dataclasses.replace(spec, run_id="20260101-000000-zzzz")
    paths.spec.write_text(json.dumps(other.to_json(), default=str))
    assert Run.load(paths.dir) is None


def test_logs_and_the_token_are_never_read_through_a_link(tmp_path):
    """`rayhpc logs` printed the file a linked driver.log pointed at; the token, read
    through a link, would go to the dashboard the containers run."""
    secret = tmp_path / "secret"
    secret.write_text("root's secret\n")
    secret.chmod(0o600)
    spec = make_spec("slurm", shared=str(tmp_path / "shared"), image="/x.sif", nodes=2,
                     driver="python d.py")
    paths = RunPaths(prepare_run_dir(spec))
    paths.driver_log.symlink_to(secret)
    paths.exit_code.write_text("0\n")
    result = invoke("logs", "--run", spec.run_id, "--site", "slurm", "--shared",
                    str(spec.shared), env=NO_ENGINE, timeout=60)
    assert result.returncode == 1 and "secret" not in result.stdout + result.stderr
    assert result.stderr == (f"rayhpc: error: {paths.driver_log}: a symbolic link in the run "
                             "directory: not followed\n")
    paths.auth_token.unlink()
    paths.auth_token.symlink_to(secret)
    with pytest.raises(UserError, match="token .*auth_token: a symbolic link"):
        Run.load(paths.dir).client()


# -- loops bounded by the input's size


def record_with_a_far_time(shared: Path, value: float) -> RunPaths:
    """The recorded 3-node run, its all-joined moment and a worker's join at ``value``."""
    spec = make_spec("local", shared=str(shared), nodes=3)
    paths = RunPaths(prepare_run_dir(spec))
    timing = json.loads((RECORDED / "timing.json").read_text())
    paths.timing.write_text(json.dumps({**timing, "t_all_joined": value}))
    nodes = json.loads((RECORDED / "nodes.json").read_text())
    nodes["worker-1"]["times"]["joined"] = value
    paths.nodes_file.write_text(json.dumps(nodes))
    return paths


def limit_memory() -> None:
    """Run with at most 2 GiB of address space (the unbounded loop took 15.5 GB)."""
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def test_report_of_a_time_far_past_the_run_is_refused_or_left_out_not_looped_over(tmp_path):
    """t_all_joined of 1e308 in timing.json made `rayhpc report` draw a tick every two hours
    until it ran out of memory: it is refused by its field; a time far past the run, but a
    number, is left out of the picture and named there."""
    paths = record_with_a_far_time(tmp_path / "a", 1e308)
    result = subprocess.run([*invoke_argv("report", "--run", paths.dir.name, "--shared",
                                          str(tmp_path / "a"))], capture_output=True,
                            text=True, timeout=60, preexec_fn=limit_memory)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr == (f"rayhpc: error: {paths.timing}: t_all_joined: 1e+308 is out of "
                             "range (a finite number within ±2**63)\n")
    paths = record_with_a_far_time(tmp_path / "b", 9e18)
    result = subprocess.run([*invoke_argv("report", "--run", paths.dir.name, "--shared",
                                          str(tmp_path / "b"))], capture_output=True,
                            text=True, timeout=60, preexec_fn=limit_memory)
    assert result.returncode == 0, result.stderr[-2000:]
    svg = paths.timeline.read_text()
    assert ("left out, not within 366 days of the submission: t_all_joined, worker-1&#x27;s "
            "joined</text>") in svg
    assert "3/3 nodes joined</text>" in svg  # no bring-up time from a moment left out


@pytest.mark.parametrize("late", [60.0, 3 * 86400.0, 300 * 86400.0])
def test_the_time_axis_has_at_most_max_ticks_whatever_the_span(late):
    timing = TimingRecord(t_submit=100.0, t_head_up=110.0, t_teardown_done=100.0 + late)
    svg = render_timeline("r", timing, {})
    ticks = svg.count('stroke="#eeeeee"')
    assert 2 <= ticks <= MAX_TICKS + 1, ticks


def test_read_blocks_orders_by_number_and_reads_each_file_once(tmp_path):
    paths = RunPaths(tmp_path)
    paths.blocks.mkdir()
    for name in ("b10", "b2", "b3"):
        write_json(paths.block_file(name, "json"), block(name))
    (paths.blocks / "b2.stop").write_text("rayhpc shrink\n")
    os.mkfifo(paths.blocks / "b7.json")  # not a regular file: said, never opened for reading
    problems: list[str] = []
    assert [b.name for b in read_blocks(paths, problems)] == ["b2", "b3", "b10"]
    assert problems == [f"{paths.blocks / 'b7.json'}: not a regular file: not read: left out"]
    assert stat.S_ISFIFO(os.lstat(paths.blocks / "b7.json").st_mode)
