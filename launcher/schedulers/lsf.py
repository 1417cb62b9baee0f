"""LSF (IBM Spectrum LSF with jsrun, e.g. Summit-class machines): #BSUB, bsub, jsrun."""

from __future__ import annotations

from collections.abc import Mapping

from launcher.schedulers.base import Job, Scheduler, minutes


class LSF(Scheduler):
    name = "lsf"
    launcher = "jsrun"
    job_id_var = "LSB_JOBID"
    directive = "#BSUB"

    def directives(self, job: Job) -> list[str]:
        hours, mins = divmod(minutes(job.walltime_s), 60)
        lines = [f"-J {job.name}", f"-nnodes {job.nodes}", f"-W {hours}:{mins:02d}",
                 f"-o {job.output}", f"-e {job.output}"]
        if job.queue:
            lines.append(f"-q {job.queue}")
        if job.account:
            lines.append(f"-P {job.account}")
        return [f"{self.directive} {line}" for line in lines]

    def launch_command(self, job: Job, command: list[str], options: list[str]) -> list[str]:
        return ["jsrun", "-n", str(job.nodes), "-r", "1", "-a", "1", "-c", "ALL_CPUS", *options,
                *command]

    def submit_command(self, script: str) -> tuple[list[str], bool]:
        return ["bsub"], True  # #BSUB lines are read only from standard input

    def parse_job_id(self, output: str) -> str:
        # "Job <12345> is submitted to queue <batch>."
        start, end = output.find("<"), output.find(">")
        return output[start + 1:end] if 0 <= start < end else ""

    def job_active_command(self, job_id: str) -> list[str]:
        return ["bjobs", "-noheader", "-o", "stat", job_id]

    def allocated_nodes(self, environ: Mapping[str, str]) -> int | None:
        # LSB_MCPU_HOSTS: "launch 1 node1 42 node2 42": compute hosts after the launch node.
        words = environ.get("LSB_MCPU_HOSTS", "").split()
        hosts = {words[i] for i in range(0, len(words) - 1, 2)}
        return len(hosts) - 1 if len(hosts) > 1 else (len(hosts) or None)
