"""Run a launch on a batch system: submit from a login node, or run inside an allocation."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import TextIO

from common.errors import UserError
from launcher.agent import RunPaths
from launcher.config import Site
from launcher.jobscript import render_job_script
from launcher.rundir import prepare_run_dir, remove_run_dir
from launcher.schedulers import SCHEDULERS, Scheduler, current_allocation
from launcher.spec import LaunchSpec
from launcher.watch import RunWatcher


class BatchLaunch:
    def __init__(self, spec: LaunchSpec, site: Site, out: TextIO | None = None):
        self.spec = spec
        self.site = site
        self.scheduler = SCHEDULERS[site.scheduler]
        self.paths = RunPaths(spec.run_dir)
        self.watcher = RunWatcher(spec.run_dir, out)

    def run(self, wait: bool = False) -> int:
        allocation = current_allocation(os.environ)
        if allocation is None:
            submit, _ = self.scheduler.submit_command(str(self.paths.job_script))
            if not shutil.which(submit[0]):
                raise UserError(f"{submit[0]} not found: submit from a login node of "
                                f"{self.site.name}, or see the job script with --dry-run")
        prepare_run_dir(self.spec)
        self.paths.job_script.write_text(render_job_script(self.spec, self.site))
        self.paths.job_script.chmod(0o755)
        if allocation is not None:
            self.watcher.say(f"inside a {allocation.name} allocation: running "
                             f"{self.paths.job_script} here")
            with subprocess.Popen(["bash", str(self.paths.job_script)]) as job:
                return self.watcher.follow(InAllocation(job, self.watcher),
                                           self.spec.stop_timeout)
        job_id = self._submit()
        self.watcher.say(f"submitted job {job_id} to {self.scheduler.name}; run dir "
                         f"{self.paths.dir}")
        self.watcher.say(f"job output: {self.paths.job_output}; driver output: "
                         f"{self.paths.driver_log}")
        if not wait:
            return 0
        return self.watcher.follow(Submitted(self.scheduler, job_id, self.watcher),
                                   self.spec.stop_timeout)

    def _submit(self) -> str:
        script = self.paths.job_script
        cmd, on_stdin = self.scheduler.submit_command(str(script))
        result = subprocess.run(cmd, input=script.read_text() if on_stdin else None,
                                capture_output=True, text=True, cwd=self.spec.shared)
        job_id = self.scheduler.parse_job_id(result.stdout) if result.returncode == 0 else ""
        if not job_id:
            remove_run_dir(self.paths.dir)
            said = " | ".join(line.strip() for line in
                              (result.stderr or result.stdout).strip().splitlines())
            raise UserError(f"{cmd[0]} refused the job (exit {result.returncode}): "
                            f"{said[-600:] or 'no job id in its output'}")
        self.paths.job_id.write_text(job_id + "\n")
        return job_id


def ended_without_code(watcher: RunWatcher, why: str) -> int:
    watcher.say(f"{why} without an exit code; see {watcher.paths.job_output}")
    return 1


class InAllocation:
    """The job script running here, inside an allocation (`FollowedRun`)."""

    def __init__(self, job: subprocess.Popen, watcher: RunWatcher):
        self.job = job
        self.watcher = watcher

    def ended(self) -> str:
        return "" if self.job.poll() is None else "the job script ended"

    def gone(self, why: str) -> int:
        return ended_without_code(self.watcher, why)

    def stop(self, signum: int, again: bool) -> bool:
        # The job script traps TERM and asks the agents to stop (the stop file).
        if self.job.poll() is None:
            (self.job.kill if again else self.job.terminate)()
        return not again


class Submitted:
    """A submitted job, followed from the login node (`FollowedRun`)."""

    def __init__(self, scheduler: Scheduler, job_id: str, watcher: RunWatcher):
        self.scheduler = scheduler
        self.job_id = job_id
        self.watcher = watcher

    def ended(self) -> str:
        return "" if self.scheduler.job_active(self.job_id) else \
            f"job {self.job_id} left the queue"

    def gone(self, why: str) -> int:
        return ended_without_code(self.watcher, why)

    def stop(self, signum: int, again: bool) -> bool:
        # Following is only watching: the job runs on.
        self.watcher.say(f"stopped following; job {self.job_id} runs on (the run directory "
                         "keeps its output)")
        return False
