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

    running_states = ("RUN",)
    finished_states = ("DONE", "EXIT")

    def state_command(self, job_id: str) -> list[str]:
        return ["bjobs", "-noheader", "-o", "stat", job_id]

    def cancel_command(self, job_id: str, running: bool) -> list[str]:
        # bkill(1): "-s signal_value | signal_name: Sends the specified signal to specified
        # jobs"; without -s it sends SIGINT and SIGTERM, then SIGKILL after
        # JOB_TERMINATE_INTERVAL; "You cannot send arbitrary signals to a pending job ...
        # LSF does allow you to kill ... pending jobs" (IBM Spectrum LSF 10.1 command
        # reference, https://www.ibm.com/docs/en/SSWRJV_10.1.0/lsf_command_ref/bkill.1.html).
        if running:
            return ["bkill", "-s", "TERM", job_id]
        return ["bkill", job_id]

    def allocated_nodes(self, environ: Mapping[str, str]) -> int | None:
        # LSB_MCPU_HOSTS: "launch 1 node1 42 node2 42": compute hosts after the launch node.
        words = environ.get("LSB_MCPU_HOSTS", "").split()
        hosts = {words[i] for i in range(0, len(words) - 1, 2)}
        return len(hosts) - 1 if len(hosts) > 1 else (len(hosts) or None)
