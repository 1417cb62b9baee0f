"""Slurm: #SBATCH, sbatch, srun."""

from __future__ import annotations

from collections.abc import Mapping

from launcher.schedulers.base import Job, Scheduler, hms


class Slurm(Scheduler):
    name = "slurm"
    launcher = "srun"
    job_id_var = "SLURM_JOB_ID"
    directive = "#SBATCH"

    def directives(self, job: Job) -> list[str]:
        lines = [f"--job-name={job.name}", f"--nodes={job.nodes}", "--ntasks-per-node=1",
                 f"--time={hms(job.walltime_s)}", f"--output={job.output}",
                 # SIGTERM to the batch shell before the kill: the agents stop and keep logs.
                 f"--signal=B:TERM@{job.stop_grace_s}"]
        if job.account:
            lines.append(f"--account={job.account}")
        if job.queue:
            lines.append(f"--partition={job.queue}")
        for key in ("qos", "constraint"):
            if job.extra.get(key):
                lines.append(f"--{key}={job.extra[key]}")
        if job.extra.get("gpus_per_node"):
            lines.append(f"--gpus-per-node={job.extra['gpus_per_node']}")
        return [f"{self.directive} {line}" for line in lines]

    def launch_command(self, job: Job, command: list[str], options: list[str]) -> list[str]:
        return ["srun", f"--nodes={job.nodes}", f"--ntasks={job.nodes}", "--ntasks-per-node=1",
                "--kill-on-bad-exit=0", *options, *command]

    def submit_command(self, script: str) -> tuple[list[str], bool]:
        return ["sbatch", "--parsable", script], False

    def parse_job_id(self, output: str) -> str:
        return super().parse_job_id(output).split(";")[0]  # --parsable: id[;cluster]

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
