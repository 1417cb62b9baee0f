"""IBM Spectrum LSF: #BSUB, bsub, and one task per host with blaunch (any LSF cluster), or
with jsrun where IBM CSM runs the nodes (`scheduler_options: {csm: true}`, e.g. OLCF Summit,
retired 2024-11-15).

Sources: IBM's LSF 10.1 command reference (https://www.ibm.com/docs/en/SSWRJV_10.1.0/
lsf_command_ref/: bsub.__w.1, bsub.wa.1, bsub.wt.1, bsub.n.1, bsub.gpu.1, blaunch.8, "bsub
command" and "job_script"), IBM's LSF admin guide ("Span string"), and OLCF's Summit guide
(olcf/olcf-user-docs systems/summit_user_guide.rst, "Batch Scripts", "Common jsrun Options").
"""

from __future__ import annotations

from collections.abc import Mapping

from rayhpc.launcher.schedulers.scheduler_interface import (
    Job,
    Scheduler,
    Shell,
    env_words,
    minutes,
    shell_join,
)

# The hosts of the job, one per line: LSB_MCPU_HOSTS is "host1 slots1 host2 slots2 ..." (IBM,
# "Environment variables set for job execution"). With CSM, the first is the launch node.
HOSTS = 'echo "$LSB_MCPU_HOSTS" | awk \'{for (i = 1; i < NF; i += 2) print $i}\''
# blaunch sets no rank variable that IBM's blaunch page names: the job script numbers the hosts
# itself (the first, where the script runs, is the head's) and passes the number on.
HOST_INDEX = "RAYHPC_HOST_INDEX"


def lsf_minutes(seconds: int) -> str:
    """bsub -W / -wt: [hour:]minute, rounded up to whole minutes."""
    hours, mins = divmod(minutes(seconds), 60)
    return f"{hours}:{mins:02d}"


class LSF(Scheduler):
    name = "lsf"
    title = "LSF"
    launcher = "blaunch"
    job_id_var = "LSB_JOBID"
    directive = "#BSUB"
    # jsrun's (CSM): not in IBM's or OLCF's stored docs: PyTorch Lightning and HPCToolkit read
    # JSM_NAMESPACE_RANK under jsrun; Spectrum MPI (Open MPI) sets OMPI_COMM_WORLD_RANK.
    rank_vars = ("JSM_NAMESPACE_RANK", "OMPI_COMM_WORLD_RANK")
    # The head's host: blaunch's first (the first execution host, where the script runs);
    # with CSM the first compute host after the launch node, rank 0 in jsrun's packed default
    # (OLCF Summit user guide, "Common jsrun Options": --launch_distribution default packed;
    # not stated for resource-set order, so workers fall back to head.json).
    head_host = f"{HOSTS} | head -n 1"
    env_passthrough = ("JSM_*", "OMPI_*", "PMIX_*", HOST_INDEX)
    options = {
        "csm": (bool,),  # true: IBM CSM nodes (bsub -nnodes, jsrun), e.g. OLCF Summit
        "gpu_request": (str,),  # gpu (default: bsub -gpu "num=N") or none
    }
    # bsub -gpu "num=num_gpus[/task | host]": "By default, the number is per host" (IBM,
    # "Submitting jobs that require GPU resources"); with CSM the GPUs come with the node.
    gpu_requests = ("gpu", "none")
    # OLCF's Summit guide: nodes are asked for by count alone (`#BSUB -nnodes`) and "All
    # resource sets are the same for a single jsrun" (olcf-tutorials jsrun_quick_start_guide);
    # a layout per kind of node takes compound -R requirements (IBM bsub -R: "compound
    # (applying to the specified number of slots)") and an ERF file (jsrun --erf_input, IBM
    # "erf_format": "Rank layout of both SPMD and MPMD applications").
    groups_unsupported = ("an LSF job here asks for one kind of host (bsub -n with "
                          "span[ptile=1], or -nnodes with CSM), so groups would need compound "
                          "-R requirements (and with CSM a jsrun ERF file), which rayhpc does "
                          "not write; run one image for every node, or split the work into "
                          "separate launches")
    # bsub -wa TERM -wt <grace>: "LSF sends the warning action to the job before the actual
    # control action is taken" (bsub.wa.1); the job script traps TERM.
    warns_before_walltime = True

    def requests_gpus(self, options: Mapping[str, object]) -> bool:
        return not options.get("csm") and super().requests_gpus(options)

    def task_rank_vars(self, options: Mapping[str, object]) -> tuple[str, ...]:
        return self.rank_vars if options.get("csm") else (HOST_INDEX,)

    def launcher_for(self, options: Mapping[str, object]) -> str:
        return "jsrun" if options.get("csm") else self.launcher

    def head_host_for(self, job: Job) -> str:
        return 'echo "$LSB_MCPU_HOSTS" | awk \'{print $3}\'' if job.extra.get("csm") \
            else self.head_host

    def directives(self, job: Job) -> list[str]:
        # -W [hour:]minute: "The format is [hours:]minutes, not [[hours:]minutes:]seconds"
        # (OLCF Summit guide).
        lines = [f"-J {job.name}", *self.host_directives(job),
                 f"-W {lsf_minutes(job.walltime_s)}", f"-o {job.output}", f"-e {job.output}",
                 # "A job warning action must be specified with a job action warning time"
                 # (bsub.wa.1); -wt '[hour:]minute' before the run limit (bsub.wt.1).
                 "-wa TERM", f"-wt {minutes(job.stop_grace_s)}"]
        if job.queue:
            lines.append(f"-q {job.queue}")
        if job.account:
            lines.append(f"-P {job.account}")
        return [f"{self.directive} {line}" for line in lines]

    def host_directives(self, job: Job) -> list[str]:
        if job.extra.get("csm"):
            return [f"-nnodes {job.nodes}"]  # OLCF Summit: "specified with only one hyphen"
        # bsub -n: the job's tasks (slots); "span[ptile=1]": one slot on each host (IBM
        # "Span string": ptile, "the number of processors on each host"), so -n N is N hosts.
        lines = [f"-n {job.nodes}", '-R "span[ptile=1]"']
        if job.exclusive:
            # bsub -x (IBM bsub.x.1): the job runs by itself on its hosts; "the queue must be
            # configured to allow exclusive jobs" (lsb.queues EXCLUSIVE=Y): a site setting
            # (`shared_nodes: false`), off in the generic lsf profile.
            lines.append("-x")
        if job.gpus:
            lines.append(f'-gpu "num={job.gpus}"')  # per host by default (see gpu_requests)
        return lines

    def launch_lines(self, job: Job, command: list[str], options: list[str]) -> list[str]:
        if job.extra.get("csm"):
            return super().launch_lines(job, command, options)
        # blaunch [host_name] command: starts command on a host of the job's allocation (IBM
        # blaunch.8; it "can be used only to launch tasks on remote hosts that are part of a
        # job allocation"). One per host, numbered in LSB_MCPU_HOSTS's order, all in the
        # background, and one PID to wait for: the subshell that waits for them all. IBM's
        # page does not say which environment the task gets: it is passed on the command line.
        task = ["blaunch", Shell('"$host"'), *options,
                *env_words((*job.exports, HOST_INDEX)), *command]
        return ["(",
                f"  {HOST_INDEX}=0",
                "  for host in $(" + HOSTS + "); do",
                f"    {shell_join(task)} &",
                f"    {HOST_INDEX}=$(({HOST_INDEX} + 1))",
                "  done",
                "  wait",
                ") &",
                "step=$!"]

    def launch_command(self, job: Job, command: list[str], options: list[str]) -> list[str]:
        # jsrun (CSM): one resource set per host (-r 1) with one task (-a 1), all its CPUs and
        # GPUs, the task bound to its whole resource set (-b rs). OLCF's defaults would give
        # one core (-c 1, -b packed:1) and no GPU (-g 0). ALL_CPUS / ALL_GPUS are not in the
        # stored IBM/OLCF docs; LLNL's Flux and RADICAL's scripts use `-c ALL_CPUS -g ALL_GPUS`.
        argv = ["jsrun", "-n", str(job.nodes), "-r", "1", "-a", "1", "-c", "ALL_CPUS"]
        if job.gpu:
            argv += ["-g", "ALL_GPUS"]
        return [*argv, "-b", "rs", *options, *command]

    def submit_command(self, script: str) -> tuple[list[str], bool]:
        # On standard input: IBM's "bsub command" page: without a command on the line "bsub
        # reads the job commands from standard input", and options there "if the line begins
        # with #BSUB". `bsub job_script` parses #BSUB lines only where lsf.conf sets
        # LSB_BSUB_PARSE_SCRIPT=Y (IBM, "job_script"), a cluster setting: stdin works on both.
        return ["bsub"], True

    def parse_job_id(self, output: str) -> str:
        # "Job <12345> is submitted to queue <batch>."
        start, end = output.find("<"), output.find(">")
        return output[start + 1:end] if 0 <= start < end else ""

    running_states = ("RUN",)
    finished_states = ("DONE", "EXIT")  # bjobs keeps finished jobs for a while

    def state_command(self, job_id: str) -> list[str]:
        return ["bjobs", "-noheader", "-o", "stat", job_id]

    def requeue_options(self) -> list[str]:
        # bsub -r (IBM bsub.r.1): "Reruns a job if the execution host or the system fails ...
        # LSF requeues the job in the same job queue with the same job ID". -o already appends
        # (bsub.o.1: "appends the standard output of the job to the specified file"; -oo
        # overwrites): every attempt's output stays.
        return ["-r"]

    def requeue_lines(self, job_script: str, job_id_file: str) -> list[str]:
        # brequeue (IBM brequeue.1): "Kills a running (RUN) ... job and returns it to the
        # queue ... The requeued job keeps the same job ID"; "You can use the brequeue command
        # only on jobs that you own".
        return ['brequeue "$LSB_JOBID"']

    def cancel_command(self, job_id: str, running: bool) -> list[str]:
        # bkill(1): "-s signal_value | signal_name: Sends the specified signal to specified
        # jobs"; without -s it sends SIGINT and SIGTERM, then SIGKILL after
        # JOB_TERMINATE_INTERVAL; "You cannot send arbitrary signals to a pending job ...
        # LSF does allow you to kill ... pending jobs" (IBM Spectrum LSF 10.1 command
        # reference, https://www.ibm.com/docs/en/SSWRJV_10.1.0/lsf_command_ref/bkill.1.html).
        if running:
            return ["bkill", "-s", "TERM", job_id]
        return ["bkill", job_id]

    def allocated_nodes(self, environ: Mapping[str, str],
                        options: Mapping[str, object] | None = None) -> int | None:
        return len(allocated_hosts(environ, bool((options or {}).get("csm")))) or None


def allocated_hosts(environ: Mapping[str, str], csm: bool = False) -> list[str]:
    """The hosts of the job we run in, in LSF's order, each once.

    Plain LSF: "LSF starts one controlling process for the parallel batch job on the first host
    in the host list" and LSB_HOSTS "contains the complete list of hosts that LSF has allocated
    to that job"; LSB_MCPU_HOSTS is the same list as "host_nameA num_processors1 host_nameB
    num_processors2..." (IBM Platform LSF 9.1.3, "How LSF runs parallel jobs", lsf_admin/
    parallel_jobs_about.html, as mirrored at www.hpc.dtu.dk/lsf931/; IBM Spectrum LSF 10.1,
    "Environment variables set for job execution", www.ibm.com/docs/en/spectrum-lsf/10.1.0?
    topic=variables-environment-set-job-execution: LSB_HOSTS "For parallel jobs, this includes
    multiple host names"). No launch host is named apart: the first host, where the
    job script runs, is one of the job's hosts (the blaunch loop starts a node there too), so it
    counts. LSB_HOSTS names a host once per slot; LSB_MCPU_HOSTS, read first, once with its
    slots. With CSM the first host is the launch node, not a compute node (as `head_host_for`
    takes the second): it does not count."""
    words = environ.get("LSB_MCPU_HOSTS", "").split()
    listed = words[0::2] if words and len(words) % 2 == 0 \
        else environ.get("LSB_HOSTS", "").split()
    hosts = list(dict.fromkeys(listed))
    return hosts[1:] if csm and len(hosts) > 1 else hosts
