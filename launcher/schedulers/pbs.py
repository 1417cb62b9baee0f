"""PBS Pro with Cray PALS (ALCF Polaris, Aurora; HPE Cray EX): #PBS, qsub, PALS mpiexec.

The launch command is Cray PALS's mpiexec (`--ppn`, `--cpu-bind`): other mpiexecs (Open MPI,
MPICH/Intel Hydra) take other flags. Sources: ALCF user guides (argonne-lcf/user-guides
docs/running-jobs/job-and-queue-scheduling.md, docs/polaris/running-jobs/index.md) and OpenPBS's
qsub(1B) and pbs_resources(7B) (openpbs/openpbs doc/man1/).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from containers.errors import UserError
from launcher.contract import RunPaths
from launcher.schedulers.base import Job, Scheduler, Shell, filesystem_names, shell_join
from launcher.times import hms

# Where a grouped job's script keeps each group's host file (on the node running the script,
# where mpiexec reads it).
HOSTS_DIR = "$hosts_dir"


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
        if job.groups:
            # One chunk per group, the head's first: pbs_resources(7B) "Requesting Resources
            # in Chunks": "-l select=[<N>:]<chunk>[+[<N>:]<chunk> ...]", "No spaces are
            # allowed between chunks"; ALCF "Resource Selection and Job Placement" asks for
            # nodes of two systems this way ("...:gputype=A100+32:ncpus=64:...").
            select = "select=" + "+".join(
                f"{group.nodes}" + (f":system={group.extra['system']}"
                                    if group.extra.get("system") else "")
                for group in job.groups)
            queues = {group.queue for group in job.groups}
            if len(queues) > 1:
                named = ", ".join(f"{group.name}: {group.queue or '(none)'}"
                                  for group in job.groups)
                raise UserError(f"groups: queue: a PBS job runs in one queue, the groups ask "
                                f"for several ({named}); give every group the same queue, or "
                                "none (the launch's --queue)")
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
        queue = job.groups[0].queue if job.groups else job.queue
        if queue:
            lines.append(f"-q {queue}")
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

    def prologue(self, job: Job) -> list[str]:
        if not job.groups:
            return []
        total = sum(group.nodes for group in job.groups)
        paths = RunPaths("$RAYHPC_RUN_DIR")
        message = (f"rayhpc: the job has fewer than {total} hosts in $PBS_NODEFILE; the groups "
                   "need " + " + ".join(f"{group.name} {group.nodes}" for group in job.groups))
        lines = [
            "# Each group's hosts, in a host file of its own: ALCF \"Multi-node Ensemble",
            "# Calculations Example\" (argonne-lcf/user-guides docs/running-jobs/",
            "# example-job-scripts.md) splits $PBS_NODEFILE and gives each mpiexec its part",
            "# (--hostfile). Group by group, the head's first, each takes the next hosts of",
            "# $PBS_NODEFILE (each host once, in the file's order).",
            "# NOTE: that the node file lists the hosts of select's chunks in chunk order is",
            "# not in the documentation we follow (pbs_resources(7B), ALCF's guides). Where the",
            "# groups' chunks differ (system=...), check it on the site once: compare",
            "# `qstat -f $PBS_JOBID` (exec_vnode, in chunk order) with $PBS_NODEFILE.",
            "hosts_dir=$(mktemp -d)",
            f"awk '!seen[$0]++' \"$PBS_NODEFILE\" > \"{HOSTS_DIR}/all\"",
            f"if [ \"$(wc -l < \"{HOSTS_DIR}/all\")\" -lt {total} ]; then",
            f"  echo \"{message}\" | tee \"{paths.error}\" >&2",
            f"  echo 1 > \"{paths.exit_code}\"",
            "  exit 1",
            "fi",
        ]
        first = 1
        for group in job.groups:
            last = first + group.nodes - 1
            lines.append(f"sed -n '{first},{last}p' \"{HOSTS_DIR}/all\" > "
                         f"\"{HOSTS_DIR}/{group.name}\"")
            first = last + 1
        return lines

    def launch_lines(self, job: Job, command: list[str], options: list[str]) -> list[str]:
        if not job.groups:
            return super().launch_lines(job, command, options)
        # One mpiexec per group on its host file, all in the background, and one PID to wait
        # for: the subshell that waits for them all (ALCF's ensemble example: `&` per
        # mpiexec, then `wait`). Each mpiexec counts its ranks from 0: the agents outside the
        # head's group are told --role worker.
        launches = [
            "  " + shell_join(["mpiexec", "-n", str(group.nodes), "--ppn", "1", "--hostfile",
                               Shell(f'"{HOSTS_DIR}/{group.name}"'), "--cpu-bind", "none",
                               *options, *group.command]) + " &"
            for group in job.groups]
        return ["(", *launches, "  wait", '  rm -rf "$hosts_dir"  # node-local, made above', ") &",
                "step=$!"]

    def submit_command(self, script: str) -> tuple[list[str], bool]:
        # qsub(1B): prints "<sequence number>.<server name>".
        return ["qsub", script], False

    running_states = ("R",)
    finished_states = ("F",)

    def state_command(self, job_id: str) -> list[str]:
        # "Job id  Name  User  Time Use  S  Queue": the state is the fifth column. qstat exits
        # non-zero for a job that has finished (without -x) or is unknown.
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
