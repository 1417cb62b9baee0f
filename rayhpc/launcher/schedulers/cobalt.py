"""Cobalt (ALCF Theta, Cray XC40; retired at the end of 2023): #COBALT, qsub, aprun (ALPS).

Source: argonne-lcf/user-guides docs/theta/queueing-and-running-jobs/job-and-queue-scheduling.md
and example-job-scripts.md, as of commit 0d85cf70 (2024-02-26), the last before ALCF removed the
Theta pages.
"""

from __future__ import annotations

from collections.abc import Mapping

from rayhpc.launcher.schedulers.scheduler_interface import Job, Scheduler, filesystem_names, minutes


class Cobalt(Scheduler):
    name = "cobalt"
    title = "Cobalt"
    launcher = "aprun"
    job_id_var = "COBALT_JOBID"
    requeue_unsupported = ("a Cobalt job cannot put itself back in the queue (ALCF's Cobalt "
                           "qsub has no rerun option, and no requeue command is documented "
                           "for users)")
    directive = "#COBALT"
    # ALPS's rank of the task (not in the stored ALCF docs; Cray's aprun sets it).
    rank_vars = ("ALPS_APP_PE",)
    env_passthrough = ("ALPS_*", "PMI_*")
    options = {
        "attrs": (str,),  # --attrs, colon-separated (e.g. mcdram=cache:numa=quad)
        "filesystems": (str,),  # file systems always asked for, comma-separated (ALCF)
        "filesystem_mounts": (dict,),  # path prefix -> file system name (see PBS)
    }
    # ALCF's Theta guide ("Submit a job": `qsub -A <project_name> -t <mins> -n <nodes> --mode
    # script`, attributes such as `--attrs mcdram=cache:numa=quad` for the whole job) has one
    # node count of one kind per job, and no per-group syntax.
    groups_unsupported = ("a Cobalt job asks for one count of one kind of node (qsub -n, "
                          "--attrs for the whole job), so groups would need separate jobs or "
                          "a split of $COBALT_NODEFILE with one aprun per part, which rayhpc "
                          "does not do; run one image for every node, or split the work into "
                          "separate launches")

    def directives(self, job: Job) -> list[str]:
        # "-t time - running time (-t 5 for 5 minutes ...)": whole minutes, rounded up.
        lines = [f"-t {minutes(job.walltime_s)}", f"-n {job.nodes}", f"-o {job.output}",
                 f"-e {job.output}", f"--jobname {job.name}"]
        if job.queue:
            lines.append(f"-q {job.queue}")
        if job.account:
            lines.append(f"-A {job.account}")
        # "Specifying Filesystems": `--attrs filesystems=home,grand` (comma-delimited); other
        # attrs follow, colon-delimited. Without it "the job will be tagged as requesting all
        # filesystems" (and held while any is down).
        always = [n for n in str(job.extra.get("filesystems") or "").split(",") if n]
        names = filesystem_names(job.paths, always, job.extra.get("filesystem_mounts") or {})
        attrs = [f"filesystems={','.join(names)}"] if names else []
        if job.extra.get("attrs"):
            attrs.append(job.extra["attrs"])
        if attrs:
            lines.append(f"--attrs {':'.join(attrs)}")
        return [f"{self.directive} {line}" for line in lines]

    def launch_command(self, job: Job, command: list[str], options: list[str]) -> list[str]:
        # One PE per node (-N 1), unbound: ALCF's docs/theta/programming-models/openmp-theta.md
        # (argonne-lcf/user-guides commit 0d85cf70, the last copy of the Theta pages): "Another
        # option is to use `--cc none`".
        return ["aprun", "-n", str(job.nodes), "-N", "1", "--cc", "none", *options, *command]

    def submit_command(self, script: str) -> tuple[list[str], bool]:
        return ["qsub", script], False

    def parse_job_id(self, output: str) -> str:
        # qsub may print informational lines first ("Job routed to queue ...", ALCF's
        # affinity-theta.md transcript): the job id is the last number.
        numbers = [word for word in output.split() if word.isdigit()]
        return numbers[-1] if numbers else ""

    running_states = ("running",)

    def state_command(self, job_id: str) -> list[str]:
        # "JobID  State" / "=====" / "12345  running"; the header is printed whether or not
        # the job is still there.
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

    def allocated_nodes(self, environ: Mapping[str, str],
                        options: Mapping[str, object] | None = None) -> int | None:
        # COBALT_JOBSIZE: ALCF's example-job-scripts.md ("COBALT_JOBSIZE (nodes)");
        # COBALT_PARTSIZE: ALCF's qmcpack.md runs `aprun -n $COBALT_PARTSIZE -N 1`
        # (argonne-lcf/user-guides commit 0d85cf70, docs/theta/applications-and-libraries/).
        value = environ.get("COBALT_PARTSIZE") or environ.get("COBALT_JOBSIZE")
        return int(value) if value and value.isdigit() else None
