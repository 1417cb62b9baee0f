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

    running_states = ("R",)
    finished_states = ("F",)

    def state_command(self, job_id: str) -> list[str]:
        # "Job id  Name  User  Time Use  S  Queue": the state is the fifth column.
        return ["qstat", job_id]

    def parse_state(self, output: str) -> str:
        rows = [line.split() for line in output.strip().splitlines()]
        row = rows[-1] if rows else []
        state = row[4] if len(row) >= 6 and not set(row[0]) <= {"-"} else ""
        return "" if state in self.finished_states else state

    def cancel_command(self, job_id: str, running: bool) -> list[str]:
        # qsig(1B): "The qsig command requests that a signal be sent to executing batch jobs.
        # The signal is sent to the session leader of the job" (the job script), and is
        # refused for a job that is not running; qdel(1B) removes a queued job (a running one
        # would get SIGTERM, then SIGKILL after the queue's delay).
        # (PBS Professional Reference Guide, qsig and qdel; https://linux.die.net/man/1/qsig)
        if running:
            return ["qsig", "-s", "TERM", job_id]
        return ["qdel", job_id]

    def allocated_nodes(self, environ: Mapping[str, str]) -> int | None:
        nodefile = environ.get("PBS_NODEFILE")
        if not nodefile or not Path(nodefile).is_file():
            return None
        return len({line.strip() for line in Path(nodefile).read_text().splitlines()
                    if line.strip()})
