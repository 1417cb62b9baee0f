"""LSF with jsrun (IBM Spectrum LSF + CSM, e.g. OLCF Summit): #BSUB, bsub, jsrun.

Sources: IBM's bsub reference (https://www.ibm.com/docs/en/SSWRJV_10.1.0/lsf_command_ref/
bsub.__w.1.html, bsub.wa.1.html, bsub.wt.1.html) and OLCF's Summit guide (olcf/olcf-user-docs
systems/summit_user_guide.rst, "Batch Scripts", "Common jsrun Options").
"""

from __future__ import annotations

from collections.abc import Mapping

from launcher.schedulers.base import Job, Scheduler, minutes


def lsf_minutes(seconds: int) -> str:
    """bsub -W / -wt: [hour:]minute, rounded up to whole minutes."""
    hours, mins = divmod(minutes(seconds), 60)
    return f"{hours}:{mins:02d}"


class LSF(Scheduler):
    name = "lsf"
    launcher = "jsrun"
    job_id_var = "LSB_JOBID"
    directive = "#BSUB"
    # Not in IBM's or OLCF's stored docs: PyTorch Lightning and HPCToolkit read
    # JSM_NAMESPACE_RANK under jsrun; Spectrum MPI (Open MPI) sets OMPI_COMM_WORLD_RANK.
    rank_vars = ("JSM_NAMESPACE_RANK", "OMPI_COMM_WORLD_RANK")
    # The first compute host: LSB_MCPU_HOSTS lists the launch node first, then the compute
    # hosts with their slot counts (as allocated_nodes below reads it). Rank 0 on it is jsrun's
    # packed default (OLCF Summit user guide, "Common jsrun Options": --launch_distribution
    # default packed); not stated for resource-set order, so workers fall back to head.json.
    head_host = 'echo "$LSB_MCPU_HOSTS" | awk \'{print $3}\''
    env_passthrough = ("JSM_*", "OMPI_*", "PMIX_*")
    options: dict[str, tuple[type, ...]] = {}
    # OLCF's Summit guide: nodes are asked for by count alone (`#BSUB -nnodes`) and "All
    # resource sets are the same for a single jsrun" (olcf-tutorials jsrun_quick_start_guide);
    # a layout per kind of node takes compound -R requirements (IBM bsub -R: "compound
    # (applying to the specified number of slots)") and an ERF file (jsrun --erf_input, IBM
    # "erf_format": "Rank layout of both SPMD and MPMD applications").
    groups_unsupported = ("an LSF/jsrun job here asks for nodes by count alone (bsub -nnodes) "
                          "and one jsrun runs the same resource set on every node, so groups "
                          "would need compound -R requirements and a jsrun ERF file "
                          "(--erf_input), which rayhpc does not write; run one image for every "
                          "node, or split the work into separate launches")
    # bsub -wa TERM -wt <grace>: "LSF sends the warning action to the job before the actual
    # control action is taken" (bsub.wa.1); the job script traps TERM.
    warns_before_walltime = True

    def directives(self, job: Job) -> list[str]:
        # -W [hour:]minute: "The format is [hours:]minutes, not [[hours:]minutes:]seconds"
        # (OLCF Summit guide); -nnodes "specified with only one hyphen".
        lines = [f"-J {job.name}", f"-nnodes {job.nodes}", f"-W {lsf_minutes(job.walltime_s)}",
                 f"-o {job.output}", f"-e {job.output}",
                 # "A job warning action must be specified with a job action warning time"
                 # (bsub.wa.1); -wt '[hour:]minute' before the run limit (bsub.wt.1).
                 "-wa TERM", f"-wt {minutes(job.stop_grace_s)}"]
        if job.queue:
            lines.append(f"-q {job.queue}")
        if job.account:
            lines.append(f"-P {job.account}")
        return [f"{self.directive} {line}" for line in lines]

    def launch_command(self, job: Job, command: list[str], options: list[str]) -> list[str]:
        # One resource set per host (-r 1) with one task (-a 1), all its CPUs and GPUs, the
        # task bound to its whole resource set (-b rs). OLCF's defaults would give one core
        # (-c 1, -b packed:1) and no GPU (-g 0). ALL_CPUS / ALL_GPUS are not in the stored
        # IBM/OLCF docs; LLNL's Flux and RADICAL's scripts use `-c ALL_CPUS -g ALL_GPUS`.
        argv = ["jsrun", "-n", str(job.nodes), "-r", "1", "-a", "1", "-c", "ALL_CPUS"]
        if job.gpu:
            argv += ["-g", "ALL_GPUS"]
        return [*argv, "-b", "rs", *options, *command]

    def submit_command(self, script: str) -> tuple[list[str], bool]:
        return ["bsub"], True  # #BSUB lines are read only from standard input

    def parse_job_id(self, output: str) -> str:
        # "Job <12345> is submitted to queue <batch>."
        start, end = output.find("<"), output.find(">")
        return output[start + 1:end] if 0 <= start < end else ""

    running_states = ("RUN",)
    finished_states = ("DONE", "EXIT")  # bjobs keeps finished jobs for a while

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
