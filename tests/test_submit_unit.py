"""Submission and following for every scheduler, with recording stand-ins for sbatch/squeue,
PBS qsub/qstat, Cobalt qsub/qstat and bsub/bjobs on PATH (as tests/test_sif.py fakes
apptainer): job-id parsing, a refused submission leaves one clear error and no run directory,
and --wait follows the job to its end and returns the driver's exit code."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest

from rayhpc.common.user_error import UserError
from rayhpc.launcher.backends import watch
from rayhpc.launcher.backends.batch.submission import BatchLaunch
from rayhpc.launcher.resolve.config import load_site
from tests.specs import RUN_ID, make_spec

# One stand-in program for every command; it knows which one it is from its name and from
# $FAKE_SCHEDULER (PBS and Cobalt both have qsub and qstat).
FAKE = r'''
import json, os, re, sys
from pathlib import Path

name = Path(sys.argv[0]).name
log = Path(os.environ["FAKE_LOG"])
scheduler = os.environ["FAKE_SCHEDULER"]
stdin = sys.stdin.read() if name == "bsub" else ""
with open(log / "calls.jsonl", "a") as calls:
    calls.write(json.dumps([name, *sys.argv[1:]]) + "\n")
SUBMIT = {"slurm": "4242\n", "pbs": "1234.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov\n",
          "cobalt": 'Job routed to queue "debug-cache-quad".\nMemory mode set to cache quad '
                    'for queue debug-cache-quad\n295130\n',
          "lsf": "Job <98765> is submitted to queue <batch>.\n"}
if name in ("sbatch", "bsub") or (name == "qsub"):
    if os.environ.get("FAKE_REFUSE"):
        print(os.environ["FAKE_REFUSE"], file=sys.stderr)
        sys.exit(1)
    if stdin:
        (log / "bsub.stdin").write_text(stdin)
        run_dir = re.search(r"^export RAYHPC_RUN_DIR=(\S+)$", stdin, re.M).group(1)
    else:
        run_dir = str(Path(sys.argv[-1]).parent)
    (log / "run_dir").write_text(run_dir)
    print(os.environ.get("FAKE_SUBMIT_OUTPUT", SUBMIT[scheduler]), end="")
    sys.exit(0)
# The status command: the job is there; at the second look the job has run (the driver's
# output and exit code are in the run directory); after that it has left the queue.
count_file = log / "status.count"
count = int(count_file.read_text()) if count_file.exists() else 0
count_file.write_text(str(count + 1))
gone = count >= 2 or bool(os.environ.get("FAKE_GONE"))
if count == 1 and not os.environ.get("FAKE_GONE"):
    run_dir = Path((log / "run_dir").read_text())
    (run_dir / "driver.log").write_text("hello from the fake job\n")
    (run_dir / "exit_code").write_text("7\n")
if scheduler == "slurm":
    print("" if gone else "RUNNING")
elif scheduler == "pbs":
    if gone:
        print(f"qstat: {sys.argv[-1]} Job has finished, use -x or -H", file=sys.stderr)
        sys.exit(35)
    print("Job id            Name             User    Time Use S Queue\n"
          "----------------  ---------------- ------- -------- - -----\n"
          "1234.polaris-pbs* rayhpc-2026010   me      00:00:01 R debug")
elif scheduler == "cobalt":
    print("JobID   State\n=======================")
    if not gone:
        print("295130  running")
elif scheduler == "lsf":
    print("DONE" if gone else "RUN")
'''

CASES = {
    # site, the job id, the submit command (script path as {script}), the status command
    "slurm": ("slurm", "4242", ["sbatch", "--parsable", "{script}"],
              ["squeue", "--noheader", "--format=%T", "--jobs", "4242"]),
    "pbs": ("polaris", "1234.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov", ["qsub", "{script}"],
            ["qstat", "1234.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov"]),
    "cobalt": ("theta", "295130", ["qsub", "{script}"],
               ["qstat", "--header", "JobID:State", "295130"]),
    "lsf": ("lsf", "98765", ["bsub"], ["bjobs", "-noheader", "-o", "stat", "98765"]),
}
PROGRAMS = {"slurm": ("sbatch", "squeue"), "pbs": ("qsub", "qstat"),
            "cobalt": ("qsub", "qstat"), "lsf": ("bsub", "bjobs")}


@pytest.fixture
def fake_scheduler(tmp_path, monkeypatch):
    """Put the stand-ins for one scheduler first on PATH; returns (log dir, calls reader)."""
    def install(scheduler: str) -> Path:
        bin_dir, log = tmp_path / "bin", tmp_path / "log"
        bin_dir.mkdir()
        log.mkdir()
        for program in PROGRAMS[scheduler]:
            path = bin_dir / program
            path.write_text(f"#!{sys.executable}\n{FAKE}")
            path.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
        monkeypatch.setenv("FAKE_LOG", str(log))
        monkeypatch.setenv("FAKE_SCHEDULER", scheduler)
        for var in ("SLURM_JOB_ID", "PBS_JOBID", "COBALT_JOBID", "LSB_JOBID"):
            monkeypatch.delenv(var, raising=False)  # not inside an allocation
        monkeypatch.setattr(watch, "CHECK_EVERY_S", 0.05)
        monkeypatch.setattr(watch, "POLL_S", 0.02)
        return log
    return install


def calls(log: Path) -> list[list[str]]:
    path = log / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def launch_on(scheduler: str, shared: Path, wait: bool) -> tuple[int, str, Path]:
    site_name = CASES[scheduler][0]
    spec = make_spec(site_name, shared=str(shared), image=f"{shared}/ray.sif", account="P",
                     nodes=2, driver="python examples/hello_nodes.py")
    out = io.StringIO()
    code = BatchLaunch(spec, load_site(site_name), out).run(wait=wait)
    return code, out.getvalue(), spec.run_dir


@pytest.mark.parametrize("scheduler", sorted(CASES))
def test_submit_and_wait_returns_the_drivers_exit_code(tmp_path, fake_scheduler, scheduler):
    log = fake_scheduler(scheduler)
    shared = tmp_path / "shared"
    code, out, run_dir = launch_on(scheduler, shared, wait=True)
    _, job_id, submit, status = CASES[scheduler]
    assert code == 7, out
    assert f"rayhpc: submitted job {job_id} to {scheduler}; run dir {run_dir}\n" in out
    assert "hello from the fake job\n" in out
    assert out.rstrip().splitlines()[-1].endswith("exit code 7")
    assert (run_dir / "job_id").read_text() == job_id + "\n"
    made = calls(log)
    script = str(run_dir / "job.sh")
    assert made[0] == [arg.format(script=script) for arg in submit]
    assert made[1:] == [status] * (len(made) - 1) and len(made) >= 3
    if scheduler == "lsf":  # the script goes on bsub's standard input
        assert (log / "bsub.stdin").read_text() == (run_dir / "job.sh").read_text()


@pytest.mark.parametrize("scheduler", sorted(CASES))
def test_submit_without_wait_returns_at_once(tmp_path, fake_scheduler, scheduler):
    log = fake_scheduler(scheduler)
    code, out, run_dir = launch_on(scheduler, tmp_path / "shared", wait=False)
    assert code == 0
    assert f"job output: {run_dir}/job.out; driver output: {run_dir}/driver.log" in out
    assert len(calls(log)) == 1  # submitted, never asked about


@pytest.mark.parametrize("scheduler, refusal", [
    ("slurm", "sbatch: error: Batch job submission failed: Invalid account or "
              "account/partition combination specified"),
    ("pbs", "qsub: Account_Name is required to be set."),
    ("cobalt", "Usage: qsub [options] <executable> [<excutable options>]"),
    ("lsf", "Project P is not a valid project name. Job not submitted."),
])
def test_a_refused_submission_is_one_error_and_leaves_no_run(tmp_path, fake_scheduler,
                                                             monkeypatch, scheduler, refusal):
    fake_scheduler(scheduler)
    monkeypatch.setenv("FAKE_REFUSE", refusal)
    shared = tmp_path / "shared"
    with pytest.raises(UserError) as err:
        launch_on(scheduler, shared, wait=True)
    program = PROGRAMS[scheduler][0]
    said, hint = str(err.value).split("\n")
    assert said == f"{program} refused the job (exit 1): {refusal}"
    assert hint.startswith("check ") and str(load_site(CASES[scheduler][0]).path) in hint
    assert not (shared / "runs" / RUN_ID).exists()


@pytest.mark.parametrize("scheduler, refusal, setting", [
    # ALCF, docs/running-jobs/index.md, "Troubleshooting / Common Errors".
    ("pbs", "qsub: Job rejected by all possible destinations", "the queue"),
    ("pbs", "qsub: Account_Name is required to be set.", "the account"),
    ("pbs", "qsub: Resource: filesystems is required to be set.", "the file systems"),
    # Slurm's refusals of a partition that is a QOS (Frontier's debug), of a walltime.
    ("slurm", "sbatch: error: Batch job submission failed: Invalid partition name specified",
     "the queue"),
    ("slurm", "sbatch: error: Batch job submission failed: Requested time limit is invalid "
              "(missing or exceeds some limit)", "the walltime"),
    # LUMI, batch-job.md, "Specifying the account".
    ("slurm", "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy "
              "(job submit limit, user's size and/or time limits)", "the account"),
    ("slurm", "sbatch: error: something new", "the site settings the scheduler judges"),
])
def test_a_rejecting_scheduler_names_the_site_setting_to_check(tmp_path, fake_scheduler,
                                                               monkeypatch, scheduler,
                                                               refusal, setting):
    """A recording stand-in of qsub/sbatch that rejects: its own words, then one line naming
    the site setting to check; nothing submitted, no run directory, no traceback."""
    log = fake_scheduler(scheduler)
    monkeypatch.setenv("FAKE_REFUSE", refusal)
    shared = tmp_path / "shared"
    with pytest.raises(UserError) as err:
        launch_on(scheduler, shared, wait=False)
    said, hint = str(err.value).split("\n")
    assert said.endswith(f"refused the job (exit 1): {refusal}")
    assert hint.startswith(f"check {setting}"), hint
    assert [call[0] for call in calls(log)] == [PROGRAMS[scheduler][0]]  # one try, recorded
    assert not (shared / "runs" / RUN_ID).exists()


def test_submit_output_without_a_job_id_is_a_refusal(tmp_path, fake_scheduler, monkeypatch):
    fake_scheduler("lsf")
    monkeypatch.setenv("FAKE_SUBMIT_OUTPUT", "Request aborted by esub.\nTry again later.\n")
    with pytest.raises(UserError) as err:
        launch_on("lsf", tmp_path / "shared", wait=False)
    assert str(err.value).split("\n")[0] == ("bsub refused the job (exit 0): Request aborted "
                                              "by esub. | Try again later.")
    assert not (tmp_path / "shared/runs" / RUN_ID).exists()


@pytest.mark.parametrize("scheduler", sorted(CASES))
def test_a_job_that_leaves_the_queue_without_an_exit_code(tmp_path, fake_scheduler,
                                                         monkeypatch, scheduler):
    fake_scheduler(scheduler)
    monkeypatch.setenv("FAKE_GONE", "1")
    code, out, run_dir = launch_on(scheduler, tmp_path / "shared", wait=True)
    job_id = CASES[scheduler][1]
    assert code == 1
    assert (f"rayhpc: job {job_id} left the queue without an exit code; see "
            f"{run_dir}/job.out\n") in out
