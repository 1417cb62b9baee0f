"""A scheduler plugs in with one module and one registry line: a throwaway Flux-shaped
scheduler, defined here (its module) and registered with one line (`SCHEDULERS[...] = ...`,
as a real one is listed in `launcher/schedulers/__init__.py`), passes the checks every
registered scheduler passes and renders a job script through the batch backend. Nothing else
in the package learns its name."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from rayhpc.launcher.backends import backend_for
from rayhpc.launcher.backends.batch.rejections import rejection_hint
from rayhpc.launcher.backends.batch.submission import submit_script
from rayhpc.launcher.contract import RANK_VARS_ENV
from rayhpc.launcher.resolve.config import load_site
from rayhpc.launcher.schedulers import SCHEDULERS, Job, Scheduler, allocated_nodes
from rayhpc.launcher.schedulers.scheduler_interface import minutes
from tests.specs import make_spec

# -- the throwaway scheduler's module (Flux's batch commands, in shape only: not a site's)

class Flux(Scheduler):
    name = "flux"
    title = "Flux"
    launcher = "flux run"
    job_id_var = "FLUX_JOB_ID"
    directive = "#FLUX:"
    rank_vars = ("FLUX_TASK_RANK",)
    running_states = ("R", "RUN")

    def directives(self, job: Job) -> list[str]:
        lines = [f"--nodes={job.nodes}", f"--time-limit={minutes(job.walltime_s)}m",
                 f"--job-name={job.name}", f"--output={job.output}"]
        if job.queue:
            lines.append(f"--queue={job.queue}")
        return self.prefixed(lines)

    def launch_command(self, job: Job, command: list[str], options: list[str]) -> list[str]:
        return ["flux", "run", "-N", str(job.nodes), "--tasks-per-node=1", *options, *command]

    def submit_command(self, script: str) -> tuple[list[str], bool]:
        return ["flux", "batch", script], False

    def state_command(self, job_id: str) -> list[str]:
        return ["flux", "jobs", "--no-header", "--format={state}", job_id]

    def cancel_command(self, job_id: str, running: bool) -> list[str]:
        return ["flux", "cancel", job_id]

    def allocated_nodes(self, environ: Mapping[str, str],
                        options: Mapping[str, object] | None = None) -> int | None:
        value = environ.get("FLUX_JOB_NNODES", "")
        return int(value) if value.isdigit() else None


FLUX_SITE = """\
name: fluxy
description: a Flux-shaped test site
scheduler: flux
runtime: apptainer
walltime: "00:30:00"
"""


@pytest.fixture
def flux(monkeypatch, tmp_path) -> Path:
    """The one registry line; the site file a user of it would write."""
    monkeypatch.setitem(SCHEDULERS, "flux", Flux())
    site = tmp_path / "fluxy.yaml"
    site.write_text(FLUX_SITE)
    return site


# -- what every registered scheduler must do (the generic checks)

def scheduler_problems(scheduler: Scheduler) -> list[str]:
    """Why ``scheduler`` does not fill the interface the rest of rayhpc relies on."""
    problems = [f"{attr} is empty" for attr in ("name", "title", "launcher", "job_id_var",
                                                 "directive", "rank_vars", "running_states")
                if not getattr(scheduler, attr)]
    job = Job(name="rayhpc-x", nodes=3, walltime_s=3600, output="/r/job.out", queue="q")
    directives = scheduler.render_directives(job)
    if not directives or not all(line.startswith(scheduler.directive) for line in directives):
        problems.append(f"directives not all under {scheduler.directive}: {directives}")
    if scheduler.launch_command(job, ["agent"], [])[-1] != "agent":
        problems.append("the launch command does not end with the node's command")
    submit, on_stdin = scheduler.submit_command("/r/job.sh")
    if not submit or ("/r/job.sh" in submit) == on_stdin:
        problems.append(f"submit command {submit} (script on stdin: {on_stdin})")
    if scheduler.parse_job_id("") != "":
        problems.append("no submit output is a job id")
    if scheduler.parse_state("") != "":
        problems.append("no state output is not ''")
    for running in (True, False):
        cancel = scheduler.cancel_command("42", running=running)
        if "42" not in cancel:
            problems.append(f"cancel (running={running}) names no job: {cancel}")
    if not scheduler.state_command("42"):
        problems.append("no state command")
    if not scheduler.in_allocation({scheduler.job_id_var: "42"}) or \
            scheduler.in_allocation({}):
        problems.append(f"in_allocation does not follow ${scheduler.job_id_var}")
    if not all(isinstance(p, str) and s for p, s in scheduler.rejections):
        problems.append("rejections are not (pattern, setting) pairs")
    return problems


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_registered_scheduler_fills_the_interface(name):
    assert scheduler_problems(SCHEDULERS[name]) == []


def test_the_flux_shaped_scheduler_fills_the_interface():
    assert scheduler_problems(Flux()) == []


def test_the_flux_shaped_scheduler_renders_a_job_script(flux, tmp_path):
    site = load_site(str(flux))
    spec = make_spec(str(flux), shared=str(tmp_path / "shared"), image="/x.sif", nodes=2,
                     queue="pdebug")
    backend = backend_for(site)
    assert backend.name == "batch" and backend.node_launcher(site) == "flux run"
    script = backend.dry_run(spec, site)
    assert script.startswith("#!/bin/bash\n#FLUX: --nodes=2\n#FLUX: --time-limit=30m\n")
    assert "#FLUX: --queue=pdebug\n" in script
    assert f"export {RANK_VARS_ENV}=FLUX_TASK_RANK\n" in script
    assert "flux run -N 2 --tasks-per-node=1 " in script
    assert allocated_nodes({"FLUX_JOB_ID": "f1", "FLUX_JOB_NNODES": "4"}, "flux", {}) == 4


def test_the_flux_shaped_scheduler_submits_with_its_own_command(flux, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "flux.log"
    fake = bin_dir / "flux"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\necho "Invalid partition" >&2\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    site = load_site(str(flux))
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\n")
    with pytest.raises(Exception, match="Invalid partition") as refused:
        submit_script(SCHEDULERS["flux"], script, tmp_path, site)
    assert log.read_text() == f"batch {script}\n"
    # Its refusals are read with its own patterns: Slurm's words are not Flux's.
    assert "check the queue" not in str(refused.value)
    assert rejection_hint("unknown queue pdebug", "fluxy", str(flux),
                          SCHEDULERS["flux"].rejections).startswith("check the queue")


def test_a_site_of_an_unregistered_scheduler_is_refused_by_the_registry(tmp_path):
    site = tmp_path / "fluxy.yaml"
    site.write_text(FLUX_SITE)
    with pytest.raises(Exception, match="scheduler: 'flux' is not supported; one of: local, "):
        backend_for(load_site(str(site)))
