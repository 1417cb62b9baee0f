"""Run a launch on a batch system: submit from a login node, or run inside an allocation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from typing import TextIO

from containers.errors import UserError
from launcher.config import Site
from launcher.jobscript import render_job_script
from launcher.rundir import prepare_run_dir, remove_run_dir
from launcher.schedulers import SCHEDULERS, current_allocation
from launcher.spec import LaunchSpec
from launcher.watch import RunWatcher, summary

POLL_S = 1.0


class BatchLaunch:
    def __init__(self, spec: LaunchSpec, site: Site, out: TextIO | None = None):
        self.spec = spec
        self.site = site
        self.scheduler = SCHEDULERS[site.scheduler]
        self.out = out or sys.stdout
        self.script = spec.run_dir / "job.sh"

    def say(self, text: str) -> None:
        self.out.write(f"rayhpc: {text}\n")
        self.out.flush()

    def run(self, wait: bool = False) -> int:
        allocation = current_allocation(os.environ)
        if allocation is None:
            submit, _ = self.scheduler.submit_command(str(self.script))
            if not shutil.which(submit[0]):
                raise UserError(f"{submit[0]} not found: submit from a login node of "
                                f"{self.site.name}, or see the job script with --dry-run")
        self.spec.t_submit = time.time()
        prepare_run_dir(self.spec)
        self.script.write_text(render_job_script(self.spec, self.site))
        self.script.chmod(0o755)
        if allocation is not None:
            return self._run_here(allocation.name)
        job_id = self._submit()
        self.say(f"submitted job {job_id} to {self.scheduler.name}; run dir {self.spec.run_dir}")
        self.say(f"job output: {self.spec.run_dir}/job.out; driver output: "
                 f"{self.spec.run_dir}/driver.log")
        if not wait:
            return 0
        return self._follow(job_id)

    def _submit(self) -> str:
        cmd, on_stdin = self.scheduler.submit_command(str(self.script))
        result = subprocess.run(cmd, input=self.script.read_text() if on_stdin else None,
                                capture_output=True, text=True, cwd=self.spec.shared)
        job_id = self.scheduler.parse_job_id(result.stdout) if result.returncode == 0 else ""
        if not job_id:
            remove_run_dir(self.spec.run_dir)
            raise UserError(f"{cmd[0]} refused the job (exit {result.returncode}): "
                            f"{(result.stderr or result.stdout).strip()[-600:]}")
        (self.spec.run_dir / "job_id").write_text(job_id + "\n")
        return job_id

    def _run_here(self, scheduler: str) -> int:
        """Inside an allocation: the job script is the launch; run it and follow it."""
        self.say(f"inside a {scheduler} allocation: running {self.script} here")
        watcher = RunWatcher(self.spec.run_dir, self.out)
        with subprocess.Popen(["bash", str(self.script)]) as job:
            try:
                while job.poll() is None:
                    watcher.poll()
                    time.sleep(POLL_S / 5)
            except KeyboardInterrupt:
                job.terminate()
                job.wait()
        return self._finish(watcher)

    def _follow(self, job_id: str) -> int:
        watcher = RunWatcher(self.spec.run_dir, self.out)
        while watcher.exit_code() is None and self._active(job_id):
            watcher.poll()
            time.sleep(POLL_S)
        return self._finish(watcher)

    def _active(self, job_id: str) -> bool:
        result = subprocess.run(self.scheduler.job_active_command(job_id), capture_output=True,
                                text=True)
        return result.returncode == 0 and bool(result.stdout.strip())

    def _finish(self, watcher: RunWatcher) -> int:
        watcher.poll()
        watcher.flush()
        code = watcher.exit_code()
        error = watcher.error()
        if error:
            self.say(f"error: {error}")
        if code is None:
            self.say(f"the job ended without an exit code; see {self.spec.run_dir}/job.out")
            code = 1
        self.out.write(summary(self.spec.run_dir, code) + "\n")
        return code
