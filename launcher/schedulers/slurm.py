"""Slurm: #SBATCH, sbatch, srun.

Sources: sbatch(1) and srun(1) (https://slurm.schedmd.com/sbatch.html, /srun.html; SchedMD/slurm
doc/man/man1/), and Ray's "Deploying on Slurm" (ray-project/ray
doc/source/cluster/vms/user-guides/community/slurm.rst: one task per node, --exclusive).
"""

from __future__ import annotations

from collections.abc import Mapping

from launcher.schedulers.base import Job, Scheduler, Shell, format_walltime, hms

QUEUE_OPTIONS = ("partition", "qos")


def slurm_time(seconds: int) -> str:
    """sbatch --time: HH:MM:SS, or days-hours:minutes:seconds from a day on."""
    return format_walltime(seconds) if seconds >= 86400 else hms(seconds)


class Slurm(Scheduler):
    name = "slurm"
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
        "gpus_per_node": (int,),
        "mem": (str, int),  # e.g. 0: all of each node's memory (sbatch --mem)
        "cpus_per_task": (int,),  # CPUs of the one task per node (default: the allocation's)
    }
    # sbatch --signal=B:TERM@<grace>: the batch shell gets SIGTERM before the time limit.
    warns_before_walltime = True

    def option_problem(self, options: Mapping[str, object]) -> str:
        queue_option = options.get("queue_option", "partition")
        if queue_option not in QUEUE_OPTIONS:
            return (f"queue_option: {queue_option!r} is not one of: {', '.join(QUEUE_OPTIONS)}")
        if queue_option == "qos" and "qos" in options:
            return "qos: the queue is the QOS here (queue_option: qos): set `queue`, not `qos`"
        return ""

    def directives(self, job: Job) -> list[str]:
        extra = job.extra
        lines = [f"--job-name={job.name}", f"--nodes={job.nodes}", "--ntasks-per-node=1",
                 f"--time={slurm_time(job.walltime_s)}", f"--output={job.output}",
                 # SIGTERM to the batch shell before the kill: the agents stop and keep logs.
                 # sbatch(1) --signal: "B:" signals only the batch shell.
                 f"--signal=B:TERM@{job.stop_grace_s}"]
        if job.exclusive:
            # Ray sizes its CPUs and object store from the node: the node must be ours alone.
            # sbatch(1) --exclusive: "The job allocation can not share nodes with other
            # running jobs"; memory is still only what was asked for ("To request all the
            # memory on a node, use --mem=0"): sites set `mem: 0` where that is the idiom.
            lines.append("--exclusive")
        if "mem" in extra:
            lines.append(f"--mem={extra['mem']}")
        if job.account:
            lines.append(f"--account={job.account}")
        if job.queue:
            lines.append(f"--{extra.get('queue_option', 'partition')}={job.queue}")
        for key in ("qos", "constraint"):
            if extra.get(key):
                lines.append(f"--{key}={extra[key]}")
        if extra.get("gpus_per_node"):
            lines.append(f"--gpus-per-node={extra['gpus_per_node']}")
        return [f"{self.directive} {line}" for line in lines]

    def prologue(self, job: Job) -> list[str]:
        if job.extra.get("cpus_per_task"):
            return []
        return [
            "# srun gives each task one CPU unless told: since Slurm 22.05 it does not inherit",
            "# --cpus-per-task (sbatch(1) --cpus-per-task NOTE). Every CPU the allocation has on",
            "# its smallest node: SLURM_JOB_CPUS_PER_NODE is CPU_count[(xnodes)][,...], e.g.",
            "# 72(x2),36 (sbatch(1) OUTPUT ENVIRONMENT).",
            "cpus=$(echo \"${SLURM_JOB_CPUS_PER_NODE:-1}\" | tr ',' '\\n' | sed 's/(.*//' "
            "| sort -n | head -n 1)",
        ]

    def launch_command(self, job: Job, command: list[str], options: list[str]) -> list[str]:
        cpus = job.extra.get("cpus_per_task")
        argv = ["srun", f"--nodes={job.nodes}", f"--ntasks={job.nodes}", "--ntasks-per-node=1",
                f"--cpus-per-task={cpus}" if cpus else Shell('--cpus-per-task="$cpus"'),
                # The one task per node may use every CPU it was given, unbound (srun(1)
                # --cpu-bind=none; "Used only when the task/affinity plugin is enabled").
                "--cpu-bind=none"]
        if job.extra.get("gpus_per_node"):
            argv.append(f"--gpus-per-node={job.extra['gpus_per_node']}")
        return [*argv, "--kill-on-bad-exit=0", *options, *command]

    def submit_command(self, script: str) -> tuple[list[str], bool]:
        return ["sbatch", "--parsable", script], False

    def parse_job_id(self, output: str) -> str:
        return super().parse_job_id(output).split(";")[0]  # --parsable: id[;cluster]

    def job_active_command(self, job_id: str) -> list[str]:
        # Empty once the job has left the queue; an error for a job id Slurm forgot.
        return ["squeue", "--noheader", "--jobs", job_id]

    running_states = ("RUNNING",)
    finished_states = ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
                       "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")

    def state_command(self, job_id: str) -> list[str]:
        return ["squeue", "--noheader", "--format=%T", "--jobs", job_id]

    def cancel_command(self, job_id: str, running: bool) -> list[str]:
        # scancel(1): "-b, --batch: Signal only the batch step (the shell script), but not any
        # other steps nor any children of the shell script. This is useful when the shell
        # script has to trap the signal..." (https://slurm.schedmd.com/scancel.html). A plain
        # scancel would signal srun's tasks too (and Apptainer's squashfuse): see README.
        if running:
            return ["scancel", "--batch", "--signal=TERM", job_id]
        return ["scancel", job_id]

    def allocated_nodes(self, environ: Mapping[str, str]) -> int | None:
        value = environ.get("SLURM_JOB_NUM_NODES") or environ.get("SLURM_NNODES")
        return int(value) if value and value.isdigit() else None
