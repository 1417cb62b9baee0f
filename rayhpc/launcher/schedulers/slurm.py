"""Slurm: #SBATCH, sbatch, srun.

Sources: sbatch(1) and srun(1) (https://slurm.schedmd.com/sbatch.html, /srun.html; SchedMD/slurm
doc/man/man1/), and Ray's "Deploying on Slurm" (ray-project/ray
doc/source/cluster/vms/user-guides/community/slurm.rst: one task per node, --exclusive).

A launch with node groups is a heterogeneous job, one component per group, the head's first
("HJ" below: Slurm's "Heterogeneous Job Support", https://slurm.schedmd.com/heterogeneous_jobs.html,
SchedMD/slurm doc/html/heterogeneous_jobs.shtml, as of Slurm 24.11). The cluster must allow steps
that span components (slurm.conf SchedulerParameters: enable_hetjob_steps, the default since
Slurm 20.02; disable_hetjob_steps turns them off) and schedule with the backfill plugin (HJ
"Limitations": "Heterogeneous jobs are only scheduled by the backfill scheduler plugin").
"""

from __future__ import annotations

from collections.abc import Mapping

from rayhpc.launcher.schedulers.scheduler_interface import COMMON_REJECTIONS, Job, Scheduler, Shell
from rayhpc.launcher.times import format_walltime

QUEUE_OPTIONS = ("partition", "qos")


def smallest_cpus(name: str, variable: str) -> str:
    """A job script line setting ``name`` to the CPUs of the smallest node in a Slurm CPU
    list variable (CPU_count[(xnodes)][,...], e.g. 72(x2),36)."""
    return (f"{name}=$(echo \"${{{variable}:-1}}\" | tr ',' '\\n' | sed 's/(.*//' "
            "| sort -n | head -n 1)")


def gpu_option(extra: Mapping, gpus: int) -> list[str]:
    """The option asking for ``gpus`` GPUs per node (none for 0), in the form the site's
    `gpu_request` picks. sbatch(1)/srun(1) --gpus-per-node: GPUs "on each node included in the
    job's resource allocation"; --gres: generic consumable resources per node as
    name[[:type]:count], e.g. gpu:4, the form of clusters that configure GPUs only as GRES
    (Slurm "Generic Resource (GRES) Scheduling"). The two are mutually exclusive (sbatch(1)
    --gpus-per-node NOTE): one is rendered, never both."""
    if not gpus:
        return []
    if extra.get("gpu_request", GPU_REQUESTS[0]) == "gres":
        return [f"--gres=gpu:{gpus}"]
    return [f"--gpus-per-node={gpus}"]


GPU_REQUESTS = ("gpus-per-node", "gres", "none")


class Slurm(Scheduler):
    name = "slurm"
    title = "Slurm"
    has_qos = True
    rejections = (
        # Slurm's own refusals (sbatch: error: Batch job submission failed: ...): "Invalid
        # partition name specified", "Invalid qos specification", "Invalid account or
        # account/partition combination specified", "Requested time limit is invalid (missing
        # or exceeds some limit)". LUMI, batch-job.md, "Specifying the account": a job without
        # --account gets "Job violates accounting/QOS policy".
        (r"[Ii]nvalid partition|[Ii]nvalid qos", "queue"),
        (r"[Ii]nvalid account|accounting/QOS policy", "account"),
        *COMMON_REJECTIONS)
    launcher = "srun"
    job_id_var = "SLURM_JOB_ID"
    directive = "#SBATCH"
    # srun(1) OUTPUT ENVIRONMENT: SLURM_PROCID "The MPI rank (or relative process ID) of the
    # current process".
    rank_vars = ("SLURM_PROCID",)
    # Task 0 runs on the allocation's first node: srun distributes tasks in blocks by default
    # (srun(1) --distribution, slurm.schedmd.com/srun.html#OPT_distribution; OLCF Frontier user
    # guide, "Srun": "-m ... The default values are block:cyclic:cyclic"); `scontrol show
    # hostnames` expands SLURM_JOB_NODELIST (sbatch(1) OUTPUT ENVIRONMENT).
    head_host = 'scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1'
    # What podman-hpc's own --mpi module passes for Slurm tasks (NERSC/podman-hpc
    # etc/modules.d/mpich.yaml: `-e SLURM_*`).
    env_passthrough = ("SLURM_*",)
    options = {
        "queue_option": (str,),  # how `queue` is asked for: partition (default) or qos (NERSC)
        "qos": (str,),
        "constraint": (str,),
        # how GPUs are asked for: gpus-per-node (default), gres, or none (come with the node)
        "gpu_request": (str,),
        "mem": (str, int),  # e.g. 0: all of each node's memory (sbatch --mem)
        "cpus_per_task": (int,),  # CPUs of the one task per node (default: the allocation's)
    }
    # sbatch --signal=B:TERM@<grace>: the batch shell gets SIGTERM before the time limit.
    warns_before_walltime = True

    gpu_requests = GPU_REQUESTS

    def option_problem(self, options: Mapping[str, object]) -> str:
        if super().option_problem(options):
            return super().option_problem(options)
        queue_option = options.get("queue_option", "partition")
        if queue_option not in QUEUE_OPTIONS:
            return (f"queue_option: {queue_option!r} is not one of: {', '.join(QUEUE_OPTIONS)}")
        if queue_option == "qos" and "qos" in options:
            return "qos: the queue is the QOS here (queue_option: qos): set `queue`, not `qos`"
        return ""

    def directives(self, job: Job) -> list[str]:
        return self.prefixed(self.component_options(job, job.nodes, job.queue, job.extra,
                                                    job.gpus, first=True))

    def head_host_for(self, job: Job) -> str:
        if not job.groups:
            return self.head_host
        # HJ "Environment Variables": the job's variables are "set independently for each
        # component of the job by appending "_HET_GROUP_" and a sequence number", e.g.
        # SLURM_JOB_NODELIST_HET_GROUP_0; the head's group is component 0, and its task 0
        # (global rank 0) runs on its first node.
        return 'scontrol show hostnames "$SLURM_JOB_NODELIST_HET_GROUP_0" | head -n 1'

    def render_directives(self, job: Job) -> list[str]:
        if not job.groups:
            return super().render_directives(job)
        # The site's raw directives go with the first component: HJ "Submitting Jobs": "Some
        # options should be specified only in the first hetjob component" (the batch script
        # runs there; licenses and --mail-type are the leader's alone).
        components = self.component_directives(job)
        lines = [*components[0], *self.restart_directives(job), *self.site_directives(job)]
        for component in components[1:]:
            # HJ "Submitting Jobs": "Each component should be separated by a line containing
            # the line "#SBATCH hetjob"".
            lines += [f"{self.directive} hetjob", *component]
        return lines

    def component_directives(self, job: Job) -> list[list[str]]:
        """The directives of each component of a heterogeneous job (one per group, the head's
        first). Job-wide options only in the first: HJ "Submitting Jobs" ("--job-name [is]
        propagated"; an --output given later leaves "the first hetjob component (where the
        batch script executes) using the default output file name"). Per component what
        is not propagated (HJ's list of propagated options leaves out --nodes, --partition,
        --constraint, --gpus-per-node and --exclusive) and what a group may change (its own
        --qos, --mem)."""
        return [self.prefixed(self.component_options(job, group.nodes, group.queue, group.extra,
                                                     group.gpus, first=index == 0))
                for index, group in enumerate(job.groups)]

    def component_options(self, job: Job, nodes: int, queue: str, extra: Mapping,
                          gpus: int, first: bool) -> list[str]:
        """The options of the job, or of one component of a heterogeneous job (``first``: the
        one that carries the job-wide options; ``gpus``: per node)."""
        job_wide = [f"--time={format_walltime(job.walltime_s)}", f"--output={job.output}",
                    # SIGTERM to the batch shell before the kill: the agents stop and keep
                    # logs. sbatch(1) --signal: "B:" signals only the batch shell.
                    f"--signal=B:TERM@{job.stop_grace_s}"] if first else []
        return [*([f"--job-name={job.name}"] if first else []), f"--nodes={nodes}",
                "--ntasks-per-node=1", *job_wide,
                *self.node_directives(job, queue, extra, gpus, first)]

    def node_directives(self, job: Job, queue: str, extra: Mapping, gpus: int,
                        first: bool) -> list[str]:
        """--exclusive, --mem, --account (first component only), the queue, --qos,
        --constraint, the GPUs: of the job, or of one group (``gpus``: per node)."""
        lines = []
        if job.exclusive:
            # Ray sizes its CPUs and object store from the node: the node must be ours alone.
            # sbatch(1) --exclusive: "The job allocation can not share nodes with other
            # running jobs"; memory is still only what was asked for (sbatch(1) --mem, NOTE: a
            # size of zero "grants the job access to all of the memory on each node"): sites
            # set `mem: 0` where that is the idiom.
            lines.append("--exclusive")
        if "mem" in extra:
            lines.append(f"--mem={extra['mem']}")
        if job.account and first:
            lines.append(f"--account={job.account}")
        if queue:
            lines.append(f"--{extra.get('queue_option', 'partition')}={queue}")
        for key in ("qos", "constraint"):
            if extra.get(key):
                lines.append(f"--{key}={extra[key]}")
        return lines + gpu_option(extra, gpus)

    def prologue(self, job: Job) -> list[str]:
        if job.groups:
            return self.group_prologue(job)
        if job.extra.get("cpus_per_task"):
            return []
        return [
            "# srun gives each task one CPU unless told: since Slurm 22.05 it does not inherit",
            "# --cpus-per-task (Slurm 22.05 release notes: srun no longer reads",
            "# SLURM_CPUS_PER_TASK). Every CPU the allocation has on",
            "# its smallest node: SLURM_JOB_CPUS_PER_NODE is CPU_count[(xnodes)][,...], e.g.",
            "# 72(x2),36 (sbatch(1) OUTPUT ENVIRONMENT).",
            smallest_cpus("cpus", "SLURM_JOB_CPUS_PER_NODE"),
        ]

    def group_prologue(self, job: Job) -> list[str]:
        counted = [(index, group) for index, group in enumerate(job.groups)
                   if not group.extra.get("cpus_per_task")]
        if not counted:
            return []
        return [
            "# srun gives each task one CPU unless told: since Slurm 22.05 it does not inherit",
            "# --cpus-per-task (Slurm 22.05 release notes: srun no longer reads",
            "# SLURM_CPUS_PER_TASK). Every CPU each component has",
            "# on its smallest node: SLURM_JOB_CPUS_PER_NODE_HET_GROUP_<n> (HJ \"Environment",
            "# Variables\") is CPU_count[(xnodes)][,...], e.g. 72(x2),36 (sbatch(1) OUTPUT",
            "# ENVIRONMENT).",
            *(smallest_cpus(f"cpus_{index}", f"SLURM_JOB_CPUS_PER_NODE_HET_GROUP_{index}")
              + f"  # {group.name}" for index, group in counted),
        ]

    def launch_command(self, job: Job, command: list[str], options: list[str]) -> list[str]:
        if job.groups:
            # One step over every component: srun(1) SYNOPSIS "srun [OPTIONS(0)...
            # [executable(0) [args(0)...]]] [ : [OPTIONS(N)...]] executable(N)"; HJ "Job
            # Steps": this "includes the ability to execute different applications and
            # arguments for each job component", and the tasks are "combined into one
            # MPI_COMM_WORLD with non-overlapping task IDs" (SLURM_PROCID is global: the
            # head's group, component 0, holds rank 0). --het-group names each segment's
            # component (srun(1) --het-group) rather than leaning on the order.
            argv: list[str] = ["srun"]
            for index, group in enumerate(job.groups):
                if index:
                    argv.append(":")
                argv += [f"--het-group={index}",
                         *self.task_options(group.nodes, group.extra, group.gpus,
                                            Shell(f'--cpus-per-task="$cpus_{index}"')),
                         *options, *group.command]
            return argv
        return ["srun", *self.task_options(job.nodes, job.extra, job.gpus,
                                           Shell('--cpus-per-task="$cpus"')),
                *options, *command]

    def task_options(self, nodes: int, extra: Mapping, gpus: int,
                     counted_cpus: str) -> list[str]:
        """srun's options for one task per node on ``nodes`` nodes (of the job, or of one
        group) with ``gpus`` GPUs each, asked for as in the job's directives."""
        cpus = extra.get("cpus_per_task")
        argv = [f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1",
                f"--cpus-per-task={cpus}" if cpus else counted_cpus,
                # The one task per node may use every CPU it was given, unbound (srun(1)
                # --cpu-bind=none; "Used only when the task/affinity plugin is enabled").
                "--cpu-bind=none"]
        return [*argv, *gpu_option(extra, gpus), "--kill-on-bad-exit=0"]

    def requeue_options(self) -> list[str]:
        # sbatch(1) --requeue: "the batch job should be eligible for requeuing. The job may be
        # requeued explicitly by a system administrator, after node failure, or upon preemption
        # by a higher priority job. When a job is requeued, the batch script is initiated from
        # its beginning." --open-mode=append: "Open the output and error files using append
        # or truncate mode as specified" (the default is JobFileAppend's: truncate, which
        # would lose the attempts before).
        return ["--requeue", "--open-mode=append"]

    def requeue_lines(self, job_script: str, job_id_file: str) -> list[str]:
        # scontrol(1) requeue: "Requeue a running, suspended or finished Slurm batch job into
        # pending state" (a job's owner may: submitit requeues its jobs so). The same job id.
        return ['scontrol requeue "$SLURM_JOB_ID"']

    def last_attempt_lines(self) -> list[str]:
        # scontrol(1) update: "Requeue=<0|1> Stipulates whether a job should be requeued after
        # a node failure: 0 for no, 1 for yes."
        return ['scontrol update JobId="$SLURM_JOB_ID" Requeue=0']

    def submit_command(self, script: str) -> tuple[list[str], bool]:
        return ["sbatch", "--parsable", script], False

    def parse_job_id(self, output: str) -> str:
        return super().parse_job_id(output).split(";")[0]  # --parsable: id[;cluster]

    running_states = ("RUNNING",)
    finished_states = ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
                       "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")

    def state_command(self, job_id: str) -> list[str]:
        # Empty once the job has left the queue; an error for a job id Slurm forgot.
        return ["squeue", "--noheader", "--format=%T", "--jobs", job_id]

    def cancel_command(self, job_id: str, running: bool) -> list[str]:
        # scancel(1): "-b, --batch: Signal only the batch step (the shell script), but not any
        # other steps nor any children of the shell script. This is useful when the shell
        # script has to trap the signal..." (https://slurm.schedmd.com/scancel.html). A plain
        # scancel would signal srun's tasks too (and Apptainer's squashfuse): see README.
        if running:
            return ["scancel", "--batch", "--signal=TERM", job_id]
        return ["scancel", job_id]

    def allocated_nodes(self, environ: Mapping[str, str],
                        options: Mapping[str, object] | None = None) -> int | None:
        value = environ.get("SLURM_JOB_NUM_NODES") or environ.get("SLURM_NNODES")
        return int(value) if value and value.isdigit() else None

    def allocation_problem(self, groups: int, environ: Mapping[str, str]) -> str:
        # The grouped script's step spans one component per group: the allocation must be a
        # heterogeneous job of as many components (HJ: SLURM_HET_SIZE "Set to count of
        # components in heterogeneous job"; unset in a job of one component).
        size = environ.get("SLURM_HET_SIZE", "")
        if not groups or size == str(groups):
            return ""
        has = f"a heterogeneous job of {size} components" if size else "not a heterogeneous job"
        return (f"a launch with {groups} node groups runs as a heterogeneous job of {groups} "
                f"components, and this allocation is {has}; launch from a login node (sbatch "
                "makes the job), or drop the groups")
