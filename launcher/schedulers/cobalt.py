"""Cobalt (ALCF Theta, Cray XC40): #COBALT, qsub, aprun (ALPS)."""

from __future__ import annotations

from collections.abc import Mapping

from launcher.schedulers.base import Job, Scheduler, minutes


class Cobalt(Scheduler):
    name = "cobalt"
    launcher = "aprun"
    job_id_var = "COBALT_JOBID"
    directive = "#COBALT"

    def directives(self, job: Job) -> list[str]:
        lines = [f"-t {minutes(job.walltime_s)}", f"-n {job.nodes}", f"-o {job.output}",
                 f"-e {job.output}", f"--jobname {job.name}"]
        if job.queue:
            lines.append(f"-q {job.queue}")
        if job.account:
            lines.append(f"-A {job.account}")
        if job.extra.get("attrs"):
            lines.append(f"--attrs {job.extra['attrs']}")
        return [f"{self.directive} {line}" for line in lines]

    def launch_command(self, job: Job, command: list[str], options: list[str]) -> list[str]:
        return ["aprun", "-n", str(job.nodes), "-N", "1", "--cc", "none", *options, *command]

    def submit_command(self, script: str) -> tuple[list[str], bool]:
        return ["qsub", script], False

    running_states = ("running",)

    def state_command(self, job_id: str) -> list[str]:
        # "JobID  State" / "=====" / "12345  running"
        return ["qstat", "--header", "JobID:State", job_id]

    def parse_state(self, output: str) -> str:
        rows = [line.split() for line in output.strip().splitlines()]
        rows = [row for row in rows if len(row) == 2 and row[0].isdigit()]
        return rows[-1][1] if rows else ""

    def cancel_command(self, job_id: str, running: bool) -> list[str]:
        # Cobalt has no command that signals the job script alone: `qdel JOBID` is how ALCF
        # documents stopping a job (Cobalt Job Control on XC40,
        # https://www.alcf.anl.gov/user-guides/cobalt-job-control-xc40); the script gets
        # SIGTERM before the kill, and its trap asks the agents to stop, as on the walltime.
        return ["qdel", job_id]

    def allocated_nodes(self, environ: Mapping[str, str]) -> int | None:
        value = environ.get("COBALT_PARTSIZE") or environ.get("COBALT_JOBSIZE")
        return int(value) if value and value.isdigit() else None
