"""PBS Pro with Cray PALS (ALCF Polaris, Aurora; HPE Cray EX): #PBS, qsub, PALS mpiexec.

The launch command is Cray PALS's mpiexec (`--ppn`, `--cpu-bind`): other mpiexecs (Open MPI,
MPICH/Intel Hydra) take other flags. Sources: ALCF user guides (argonne-lcf/user-guides
docs/running-jobs/job-and-queue-scheduling.md, docs/polaris/running-jobs/index.md) and OpenPBS's
qsub(1B) and pbs_resources(7B) (openpbs/openpbs doc/man1/).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from launcher.schedulers.base import Job, Scheduler, filesystem_names, hms


class PBS(Scheduler):
    name = "pbs"
    launcher = "mpiexec"
    job_id_var = "PBS_JOBID"
    directive = "#PBS"
    # PALS sets both (SchedMD/slurm src/plugins/mpi/cray_shasta/mpi_cray_shasta.c, Slurm's
    # emulation of PALS: PALS_RANKID is the global task id; PMI_RANK too). ALCF's Aurora docs
    # use PALS_RANKID (docs/aurora/data-science/frameworks/dask.md), its Polaris docs PMI_RANK.
    rank_vars = ("PALS_RANKID", "PMI_RANK")
    # Rank 0 runs on the first host of mpiexec's host file, $PBS_NODEFILE by default (ALCF
    # Polaris "Running Jobs", mpiexec options: "--hostfile (the default is --hostfile
    # $PBS_NODEFILE)").
    head_host = 'head -n 1 "$PBS_NODEFILE"'
    # What podman-hpc's --mpi module passes for PALS tasks (NERSC/podman-hpc
    # etc/modules.d/mpich.yaml: `-e PALS_*`, `-e PMI_*`).
    env_passthrough = ("PALS_*", "PMI_*")
    options = {
        "system": (str,),  # select=N:system=<name> (ALCF: polaris, aurora)
        "filesystems": (str,),  # file systems always asked for, colon-separated (ALCF)
        # path prefix -> file system name: the shared dir's and the image's file systems are
        # added to `filesystems` (ALCF holds jobs whose file systems are not declared)
        "filesystem_mounts": (dict,),
    }

    def directives(self, job: Job) -> list[str]:
        select = f"select={job.nodes}"
        if job.extra.get("system"):
            select += f":system={job.extra['system']}"
        # qsub(1B): place=[arrangement][:sharing]; scatter: one chunk per host; excl: "Only
        # this job uses the vnodes chosen" (Ray sizes itself from the whole node).
        place = "scatter:excl" if job.exclusive else "scatter"
        lines = [f"-N {job.name[:15]}", f"-l {select}", f"-l place={place}",
                 # pbs_resources(7B) walltime: a duration; ALCF: walltime=HH:MM:SS.
                 f"-l walltime={hms(job.walltime_s)}", f"-o {job.output}", "-j oe"]
        always = [n for n in str(job.extra.get("filesystems") or "").split(":") if n]
        names = filesystem_names(job.paths, always, job.extra.get("filesystem_mounts") or {})
        if names:
            lines.append(f"-l filesystems={':'.join(names)}")
        if job.queue:
            lines.append(f"-q {job.queue}")
        if job.account:
            lines.append(f"-A {job.account}")
        return [f"{self.directive} {line}" for line in lines]

    def launch_command(self, job: Job, command: list[str], options: list[str]) -> list[str]:
        # PALS mpiexec: -n total ranks, --ppn ranks per node, --cpu-bind (ALCF Polaris docs,
        # "Running MPI+OpenMP Applications"). `none`: the one rank per node is not bound to a
        # core (the PALS man page is not in the stored docs; ALCF's Balsam uses cpu_bind
        # "none" on Polaris).
        return ["mpiexec", "-n", str(job.nodes), "--ppn", "1", "--cpu-bind", "none", *options,
                *command]

    def submit_command(self, script: str) -> tuple[list[str], bool]:
        # qsub(1B): prints "<sequence number>.<server name>".
        return ["qsub", script], False

    def job_active_command(self, job_id: str) -> list[str]:
        # qstat exits non-zero for a job that has finished (without -x) or is unknown.
        return ["qstat", job_id]

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
