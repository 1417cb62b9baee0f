"""--restarts without an engine: when a run goes on, the attempts kept apart (the launcher's
Python and the job script's shell, run here for real in bash), the requeue lines of each
scheduler (golden), what `rayhpc status` and the timeline say, and the refusals."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from rayhpc.launcher.backends.batch.jobscript import (
    attempt_lines,
    render_job_script,
    requeue_lines,
    script_files,
)
from rayhpc.launcher.backends.rundir import prepare_run_dir
from rayhpc.launcher.contract import (
    RunPaths,
    TimingRecord,
    attempt_numbers,
    begin_attempt,
    current_attempt,
    ended_attempts,
    restart_reason,
    write_record,
)
from rayhpc.launcher.resolve.config import load_site
from rayhpc.launcher.runs.run import Run, status_line
from rayhpc.launcher.schedulers import SCHEDULERS
from rayhpc.launcher.timeline import attempt_notes, render_timeline
from tests.cli import invoke
from tests.golden import assert_golden
from tests.specs import make_spec

SHARED = "/lus/PROJ/shared"


def spec_with(restarts: int = 1, on_failure: bool = False, tmp: Path | None = None):
    spec = make_spec("local", restarts=restarts, restart_on_failure=on_failure)
    return dataclasses.replace(spec, shared=tmp) if tmp else spec


# -- whether the run goes on (the head's decision)

@pytest.mark.parametrize("stop, code, finished, on_failure, attempt, goes_on", [
    ("job script: walltime or cancel", 143, False, False, 1, True),   # the walltime warning
    ("job script: walltime in 30 s", 143, False, False, 1, True),     # a PBS job's own timer
    ("walltime: 600 s less stop_grace 60 s", 143, False, False, 1, True),  # the local head's
    ("job script: walltime or cancel", 143, False, False, 2, False),  # no restarts left
    ("rayhpc down", 143, False, False, 1, False),                      # the user's stop
    ("head: head is tearing down", 0, True, False, 1, False),          # the driver finished
    ("head: head is tearing down", 3, True, False, 1, False),          # it failed: not asked
    ("head: head is tearing down", 3, True, True, 1, True),            # --restart-on-failure
    ("job script: walltime or cancel", 0, True, True, 1, False),       # it finished first
    ("head: head is tearing down", 1, False, True, 1, True),           # the launch failed
])
def test_the_run_goes_on_only_when_its_allocation_ended_first(stop, code, finished,
                                                               on_failure, attempt, goes_on):
    reason = restart_reason(spec_with(1, on_failure), attempt, stop, code, finished)
    assert bool(reason) == goes_on, reason


# -- the attempts kept apart: the launcher's Python and the job script's shell

def attempt_script(spec) -> str:
    """The rendered lines that claim an attempt (Slurm's), as the job script runs them."""
    return "\n".join(["set -u", *attempt_lines(spec, SCHEDULERS["slurm"], script_files(spec))])


def one_attempts_files(paths: RunPaths, attempt: int) -> None:
    """What an attempt's head and nodes leave at the top of the run directory."""
    for path in (paths.head, paths.driver_log, paths.exit_code, paths.stop, paths.restarting):
        path.write_text(f"attempt {attempt}\n")
    (paths.logs / "head.log").write_text(f"attempt {attempt}\n")


@pytest.mark.parametrize("how", ["python", "job script"])
def test_each_attempt_claims_its_number_and_keeps_the_one_before(tmp_path, how):
    spec = spec_with(2, tmp=tmp_path)
    paths = RunPaths(prepare_run_dir(spec))
    (paths.dir / "elsewhere").write_text("not the run's")
    script = attempt_script(spec)
    outputs = []
    for attempt in (1, 2, 3):
        if how == "python":
            assert begin_attempt(paths, "42") == attempt
        else:
            result = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                                    env={**os.environ, "RAYHPC_RUN_DIR": str(paths.dir),
                                         "SLURM_JOB_ID": "42", "PATH": "/usr/bin:/bin"})
            assert result.returncode == 0, result.stderr
            outputs.append(result.stdout)
        assert current_attempt(paths) == attempt
        one_attempts_files(paths, attempt)
        if attempt == 2:  # a link left at the top moves as a link; its target is not touched
            paths.connect.symlink_to(paths.dir / "elsewhere")
    assert attempt_numbers(paths) == [1, 2, 3]
    for attempt in (1, 2):
        kept = paths.attempt_dir(attempt)
        assert (kept / "head.json").read_text() == f"attempt {attempt}\n"
        assert (kept / "logs" / "head.log").read_text() == f"attempt {attempt}\n"
        assert (kept / "started").read_text().split()[1] == "42"
    assert (paths.attempt_dir(2) / "connect.txt").is_symlink()
    assert (paths.dir / "elsewhere").read_text() == "not the run's"
    assert paths.head.read_text() == "attempt 3\n"  # the current attempt's, at the top
    assert paths.nodes.is_dir() and paths.logs.is_dir()
    if how == "job script":
        assert outputs[-1].strip() == "rayhpc: attempt 3 of 3 (job 42)"


def test_the_job_script_ends_at_once_when_started_past_the_last_attempt(tmp_path):
    """Where the scheduler reran the job once more by itself (PBS, LSF cannot be told not to):
    no agent starts; the run ends, saying why."""
    spec = spec_with(1, tmp=tmp_path)
    paths = RunPaths(prepare_run_dir(spec))
    for _ in range(2):
        begin_attempt(paths)
    result = subprocess.run(["bash", "-c", attempt_script(spec)], capture_output=True, text=True,
                            env={**os.environ, "RAYHPC_RUN_DIR": str(paths.dir),
                                 "SLURM_JOB_ID": "42"})
    assert result.returncode == 1
    assert "after the run's last attempt (--restarts 1): the run ends here" in result.stderr
    assert paths.read_exit_code() == 1 and "the run ends here" in paths.read_error()


# Each scheduler's requeue command, as a stand-in on PATH that records its arguments and
# prints what the real one prints (qsub: the new job's id), and the job's own variables.
REQUEUE_STANDINS = {
    "slurm": ("scontrol", {"SLURM_JOB_ID": "42"}, "requeue 42"),
    "pbs": ("qsub", {"PBS_JOBID": "42.pbs"}, "-W depend=afterany:42.pbs {run_dir}/job.sh"),
    "lsf": ("brequeue", {"LSB_JOBID": "42"}, "42"),
}


@pytest.mark.parametrize("scheduler", sorted(REQUEUE_STANDINS))
def test_the_job_script_requeues_only_when_the_head_said_the_run_goes_on(tmp_path, scheduler):
    """The requeue lines run the scheduler's command when `restarting` is there, and nothing
    otherwise. A PBS job submits itself again (OpenPBS refuses qrerun to a job's owner:
    src/server/req_rerun.c) and its new id becomes the run's. A refused requeue ends the run
    (the marker goes, so its exit code stands)."""
    program, variables, expected = REQUEUE_STANDINS[scheduler]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / program).write_text(f'#!/bin/sh\necho "$@" >> {calls}\n'
                                   '[ -n "${FAIL:-}" ] && exit 1\necho 43.pbs\n')
    (bin_dir / program).chmod(0o755)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "job_id").write_text("42\n")
    script = "\n".join(requeue_lines(SCHEDULERS[scheduler]))
    env = {**os.environ, **variables, "RAYHPC_RUN_DIR": str(run_dir),
           "PATH": f"{bin_dir}:/usr/bin:/bin"}
    subprocess.run(["bash", "-c", script], env=env, check=True)
    assert not calls.exists()
    (run_dir / "restarting").write_text("attempt 1 ended: x; attempt 2 of 2 follows\n")
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert calls.read_text() == expected.format(run_dir=run_dir) + "\n"
    assert "rayhpc: attempt 1 ended: x; attempt 2 of 2 follows" in done.stdout
    assert (run_dir / "job_id").read_text() == ("43.pbs\n" if scheduler == "pbs" else "42\n")
    refused = subprocess.run(["bash", "-c", script], env={**env, "FAIL": "1"},
                             capture_output=True, text=True)
    assert "could not be put back in the queue" in refused.stderr
    assert not (run_dir / "restarting").exists()


@pytest.mark.parametrize("site, image", [("slurm", "/lus/PROJ/ray.sif"),
                                         ("polaris", "/eagle/PROJ/ray.sif"),
                                         ("lsf", "/gpfs/PROJ/ray.sif")])
def test_requeue_lines_of_each_scheduler_golden(site, image):
    spec = make_spec(site, shared=SHARED, account="PROJ", walltime="01:00:00", image=image,
                     nodes=2, restarts=2)
    script = render_job_script(spec, load_site(site))
    assert_golden(f"job.{site}-restarts.sh", script)
    scheduler = SCHEDULERS[load_site(site).scheduler]
    for option in scheduler.requeue_options():
        assert f"{scheduler.directive} {option}\n" in script
    assert "attempt 3 of 3" not in script and 'if [ "$attempt" -gt 3 ]; then' in script
    # Without --restarts the script is as before: no attempt, no requeue.
    plain = render_job_script(dataclasses.replace(spec, restarts=0), load_site(site))
    assert "attempts" not in plain and "restarting" not in plain


# -- what the host side reads and says

def test_the_exit_code_of_an_attempt_that_goes_on_is_not_the_runs(tmp_path):
    paths = RunPaths(tmp_path)
    paths.exit_code.write_text("143\n")
    paths.restarting.write_text("attempt 1 ended: its allocation ended; attempt 2 follows\n")
    assert paths.read_exit_code() is None
    paths.restarting.unlink()
    assert paths.read_exit_code() == 143


def test_status_and_the_timeline_show_the_attempts(tmp_path):
    spec = dataclasses.replace(make_spec("local", restarts=2), shared=tmp_path)
    paths = RunPaths(prepare_run_dir(spec))
    begin_attempt(paths, "")
    write_record(paths.timing, TimingRecord(t_submit=1.0, t_teardown_done=time.time() + 90))
    paths.restarting.write_text("attempt 1 ended: its allocation ended (job script: walltime "
                                "or cancel); attempt 2 of 3 follows\n")
    begin_attempt(paths, "")
    begin_attempt(paths, "")  # attempt 2 left no word: its nodes were lost
    ended = ended_attempts(paths)
    assert [a.number for a in ended] == [1, 2]
    assert ended[0].why == "its allocation ended (job script: walltime or cancel)"
    assert ended[1].why.startswith("no word from its head")
    run = Run.load(paths.dir)
    line = status_line(run)
    assert "attempt 3 of 3" in line.splitlines()[0]
    assert re.search(r"attempt 1 of 3: [\d.]+ ?\w+, ended: its allocation ended \(job "
                     r"script: walltime or cancel\) \(started", line), line
    assert "attempt 2 of 3: " in line and "no word from its head" in line
    svg = render_timeline(run.run_id, TimingRecord(t_submit=1.0, t_head_up=2.0),
                          {}, attempt_notes(ended, 2))
    assert "this run started 3 times" in svg and "attempt 2 of 3" in svg


# -- refusals: one line, exit 2, nothing submitted or made

@pytest.mark.parametrize("args, says", [
    (["--restarts=-1"], "--restarts: '-1': must be 0 or more"),
    (["--restarts", "two"], "--restarts: 'two': not a valid value"),
    (["--site", "theta", "--account", "P", "--image", "/x.sif", "--restarts", "1"],
     "--restarts: site theta runs Cobalt: a Cobalt job cannot put itself back in the queue"),
    (["--site", "slurm", "--image", "/x.sif", "--restarts", "1", "--checkpoint-dir", "/tmp/c"],
     "--checkpoint-dir: /tmp/c is outside the shared dir"),
    (["--restart-on-failure"], "--restart-on-failure: a failed driver is started again "
     "within the run's restarts, and it has none; give --restarts N too"),
    (["--restarts", "1", "--detach", "--interactive"],
     "--restarts: a detached local cluster has no launcher left to start it again"),
])
def test_bad_restart_settings_are_refused_with_one_line(tmp_path, args, says):
    result = invoke("launch", "--shared", str(tmp_path / "shared"), *args, "--dry-run"
                    if "--detach" not in args else "--nodes=1", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0], result.stderr
    assert not (tmp_path / "shared" / "runs").exists()


def test_restarts_inside_an_allocation_are_refused(tmp_path):
    """Inside an allocation the launch runs in it: nothing could requeue it."""
    result = invoke("launch", "--site", "slurm", "--image", "/x.sif", "--restarts", "1",
                    "--shared", str(tmp_path), "--dry-run", cwd=tmp_path,
                    env={"SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "2"})
    assert result.returncode == 2
    assert "--restarts: inside a Slurm allocation" in result.stderr


def test_the_driver_gets_its_attempt_and_checkpoint_dir():
    """RAYHPC_CHECKPOINT_DIR: in the shared dir, one per run (every attempt the same)."""
    spec = make_spec("local", restarts=1)
    assert spec.checkpoints == spec.shared / "checkpoints" / spec.run_id
    given = make_spec("local", restarts=1, checkpoint_dir="ckpt/a")
    assert given.checkpoints == given.shared / "ckpt" / "a"


def test_a_link_planted_for_an_attempts_directory_is_not_followed(tmp_path):
    """The containers can write the run directory: attempts/1 made a link (to a directory the
    launcher, maybe root, may write) gets none of the run's files."""
    spec = spec_with(1, tmp=tmp_path / "shared")
    paths = RunPaths(prepare_run_dir(spec))
    begin_attempt(paths)
    one_attempts_files(paths, 1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    paths.attempt_dir(1).rename(tmp_path / "moved")
    paths.attempt_dir(1).symlink_to(elsewhere)
    with pytest.raises(OSError):
        begin_attempt(paths)
    assert list(elsewhere.iterdir()) == []
    assert paths.head.read_text() == "attempt 1\n"  # left where it was


@pytest.mark.parametrize("started", ["1e308 42", "nan 42", "inf", "-5 42", "17 $(reboot)"])
def test_a_crafted_start_time_is_not_a_time(tmp_path, started):
    """attempts/<n>/started is written where the containers can write: `rayhpc status` and
    the timeline read a time a clock could show, or none, and a job id that is one."""
    spec = dataclasses.replace(make_spec("local", restarts=1), shared=tmp_path)
    paths = RunPaths(prepare_run_dir(spec))
    begin_attempt(paths)
    begin_attempt(paths)
    (paths.attempt_dir(1) / "started").write_text(started + "\n")
    (paths.attempt_dir(1) / "timing.json").symlink_to("/etc/passwd")
    ended = ended_attempts(paths)
    assert len(ended) == 1 and ended[0].started in (0.0, 17.0)
    assert ended[0].job_id in ("", "42")
    assert "attempt 1 of 2" in status_line(Run.load(paths.dir))
