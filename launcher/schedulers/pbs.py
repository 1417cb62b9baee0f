"""PBS Pro (ALCF Polaris, Aurora): #PBS, qsub, mpiexec (PALS / Cray MPICH)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from launcher.schedulers.base import Job, Scheduler, hms


class PBS(Scheduler):
    name = "pbs"
    launcher = "mpiexec"
    job_id_var = "PBS_JOBID"
    directive = "#PBS"

    def directives(self, job: Job) -> list[str]:
        select = f"select={job.nodes}"
        if job.extra.get("system"):
            select += f":system={job.extra['system']}"
        lines = [f"-N {job.name[:15]}", f"-l {select}", "-l place=scatter",
                 f"-l walltime={hms(job.walltime_s)}", f"-o {job.output}", "-j oe"]
        if job.extra.get("filesystems"):
            lines.append(f"-l filesystems={job.extra['filesystems']}")
        if job.queue:
            lines.append(f"-q {job.queue}")
        if job.account:
            lines.append(f"-A {job.account}")
        return [f"{self.directive} {line}" for line in lines]

    def launch_command(self, job: Job, command: list[str], options: list[str]) -> list[str]:
        return ["mpiexec", "-n", str(job.nodes), "--ppn", "1", "--cpu-bind", "none", *options,
                *command]

    def submit_command(self, script: str) -> tuple[list[str], bool]:
        return ["qsub", script], False

    def job_active_command(self, job_id: str) -> list[str]:
        return ["qstat", job_id]

    def allocated_nodes(self, environ: Mapping[str, str]) -> int | None:
        nodefile = environ.get("PBS_NODEFILE")
        if not nodefile or not Path(nodefile).is_file():
            return None
        return len({line.strip() for line in Path(nodefile).read_text().splitlines()
                    if line.strip()})
