"""PBS Pro and OpenPBS: #PBS, qsub, and one of four ways to start one task per node.

Not Torque: its qsub asks for nodes as `-l nodes=N:ppn=M` (Torque 4 docs, "Requesting
resources"), and it reads select= as an opaque string that places nothing; its pbsdsh's rank
variable is PBS_VNODENUM, not OpenPBS's PBS_NODENUM.

The site's `scheduler_options.launcher` picks it: `pbsdsh` (the default: it comes with PBS
itself and needs no MPI), `hydra` (MPICH / Intel MPI mpiexec), `openmpi` (Open MPI mpirun) or
`pals` (Cray PALS mpiexec, ALCF Polaris and Aurora). Their flags differ: PALS's `--ppn` and
`--cpu-bind` are refused by the others. Sources: OpenPBS qsub(1B), pbs_resources(7B) and
pbsdsh(1B) and src/resmom/start_exec.c (openpbs/openpbs doc/man1/), ALCF
user guides (argonne-lcf/user-guides docs/running-jobs/job-and-queue-scheduling.md,
docs/polaris/running-jobs/index.md), Intel MPI's Hydra reference (mpiexec.hydra) and Open MPI's
mpirun(1).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from rayhpc.common.user_error import UserError
from rayhpc.launcher.contract import RunPaths
from rayhpc.launcher.schedulers.scheduler_interface import (
    COMMON_REJECTIONS,
    Job,
    Scheduler,
    Shell,
    choice_problem,
    env_words,
    filesystem_names,
    shell_join,
)
from rayhpc.launcher.times import hms

# Where a grouped job's script keeps each group's host file (on the node running the script,
# where mpiexec reads it).
HOSTS_DIR = "$hosts_dir"
NODEFILE = Shell('"$PBS_NODEFILE"')


class TaskLauncher:
    """How one task per node starts in a PBS job: the command, and the task's rank variables."""
    name = ""
    program = ""
    rank_vars: tuple[str, ...] = ()
    # Why it cannot run node groups (one launch per group on its own host file); "" : it can.
    groups_unsupported = ""

    def command(self, nodes: int, hostfile: str | None, exports: tuple[str, ...],
                options: list[str], command: list[str]) -> list[str]:
        """One task on each of ``nodes`` hosts (those of ``hostfile``; None: the job's)."""
        raise NotImplementedError


class Pals(TaskLauncher):
    # PALS mpiexec: -n total ranks, --ppn ranks per node, --cpu-bind (ALCF Polaris docs,
    # "Running MPI+OpenMP Applications"); --hostfile (default $PBS_NODEFILE: ALCF Polaris
    # "Running Jobs", mpiexec options). `none`: the one rank per node is not bound to a core
    # (the PALS man page is not in the stored docs; ALCF's Balsam uses cpu_bind "none" on
    # Polaris). PALS sets both rank variables (SchedMD/slurm src/plugins/mpi/cray_shasta/
    # mpi_cray_shasta.c, Slurm's emulation of PALS: PALS_RANKID is the global task id; PMI_RANK
    # too). ALCF's Aurora docs use PALS_RANKID (docs/aurora/data-science/frameworks/dask.md),
    # its Polaris docs PMI_RANK.
    name, program = "pals", "mpiexec"
    rank_vars = ("PALS_RANKID", "PMI_RANK")

    def command(self, nodes: int, hostfile: str | None, exports: tuple[str, ...],
                options: list[str], command: list[str]) -> list[str]:
        hosts = ["--hostfile", Shell(hostfile)] if hostfile else []
        return ["mpiexec", "-n", str(nodes), "--ppn", "1", *hosts, "--cpu-bind", "none",
                *options, *command]


class Hydra(TaskLauncher):
    # Intel MPI / MPICH Hydra: `mpiexec -n <processes> -ppn <processes per node> -f <hostfile>`
    # (Intel MPI Developer Guide, "Running an MPI Program"; mpiexec.hydra reference). Hydra
    # passes the launching environment to the tasks by default (Intel oneMKL guide, "Setting
    # Environment Variables on a Cluster") and sets PMI_RANK in each (Intel MPI reference,
    # "Environment Variables Not Propagated by Hydra": PMI_RANK is the task's own).
    name, program = "hydra", "mpiexec"
    rank_vars = ("PMI_RANK",)

    def command(self, nodes: int, hostfile: str | None, exports: tuple[str, ...],
                options: list[str], command: list[str]) -> list[str]:
        return ["mpiexec", "-n", str(nodes), "-ppn", "1", "-f",
                Shell(hostfile) if hostfile else NODEFILE, *options, *command]


class OpenMPI(TaskLauncher):
    # Open MPI mpirun(1): --map-by ppr:N:resource maps N processes per resource (ppr:1:node:
    # one per node), --hostfile the hosts; remote processes get the environment variables named
    # with -x ("Export the specified environment variables to the remote nodes"), not the
    # caller's whole environment. Open MPI sets OMPI_COMM_WORLD_RANK in every process (Open MPI
    # docs, "Environment variables set for MPI applications").
    name, program = "openmpi", "mpirun"
    rank_vars = ("OMPI_COMM_WORLD_RANK",)

    def command(self, nodes: int, hostfile: str | None, exports: tuple[str, ...],
                options: list[str], command: list[str]) -> list[str]:
        passed = [word for name in exports for word in ("-x", name)]
        return ["mpirun", "-n", str(nodes), "--map-by", "ppr:1:node", "--hostfile",
                Shell(hostfile) if hostfile else NODEFILE, *passed, *options, *command]


class Pbsdsh(TaskLauncher):
    # pbsdsh(1B) (OpenPBS, PBS Pro): comes with PBS, starts the
    # program through PBS's Task Manager "for each line in the $PBS_NODEFILE" (one per host
    # here: select's chunks have one MPI rank each, place=scatter), all at once, and waits for
    # them; "The double dash must precede the program". Its tasks do not get the job script's
    # environment (OpenPBS src/cmds/pbsdsh.c spawns them with no environment of its own:
    # tm_spawn(..., NULL, ...)), so the agent's variables go on the command line (`env`).
    # Rank: the MOM sets PBS_NODENUM in every task it starts for the job (OpenPBS
    # src/resmom/start_exec.c, bld_env_variables "PBS_NODENUM"): the index of the task's host
    # in the job's host list, 0 on the first (mother superior, where the script runs). One task
    # per host here, so it is the rank. Not PBS_TASKNUM (a per-host task id, printed "%8.8X"
    # with the node in its high bits: src/resmom/mom_comm.c) nor PBS_VNODENUM (Torque's; OpenPBS
    # never sets it, and every agent exited "no rank" on an emulated OpenPBS node).
    name, program = "pbsdsh", "pbsdsh"
    rank_vars = ("PBS_NODENUM",)
    groups_unsupported = ("pbsdsh starts one program on every host of the job (or on one, -n), "
                          "not a group's share of them; set scheduler_options: {launcher: "
                          "hydra} (or openmpi, pals) to run node groups")

    def command(self, nodes: int, hostfile: str | None, exports: tuple[str, ...],
                options: list[str], command: list[str]) -> list[str]:
        return ["pbsdsh", "-v", *options, "--", *env_words(exports), *command]


LAUNCHERS: dict[str, TaskLauncher] = {cls.name: cls() for cls in (Pbsdsh, Hydra, OpenMPI, Pals)}
DEFAULT_LAUNCHER = "pbsdsh"


def task_launcher(options: Mapping[str, object]) -> TaskLauncher:
    return LAUNCHERS[str(options.get("launcher", DEFAULT_LAUNCHER))]


class PBS(Scheduler):
    name = "pbs"
    title = "PBS"
    rejections = (
        # ALCF, docs/running-jobs/index.md, "Troubleshooting / Common Errors": "qsub: Job
        # rejected by all possible destinations" means the "walltime or node count do not fall
        # within the ranges" of the production execution queues.
        (r"rejected by all possible destinations", "queue"),
        # ALCF, same page, "qsub": "qsub: Account_Name is required to be set."
        (r"Account_Name is required", "account"),
        # ALCF, same page, "Specifying Filesystems": "qsub: Resource: filesystems is required
        # to be set."
        (r"filesystems? is required|filesystems", "filesystems"),
        *COMMON_REJECTIONS)
    launcher = Pbsdsh.program
    job_id_var = "PBS_JOBID"
    directive = "#PBS"
    # Every launcher's (the site's own is named to the agent: task_rank_vars).
    rank_vars = tuple(dict.fromkeys(var for launcher in LAUNCHERS.values()
                                    for var in launcher.rank_vars))
    # Rank 0 runs on the first host of $PBS_NODEFILE, which every launcher here reads (PALS
    # and Hydra: the default or given host file; pbsdsh: its lines in order).
    head_host = 'head -n 1 "$PBS_NODEFILE"'
    # What podman-hpc's --mpi module passes for PALS tasks (NERSC/podman-hpc
    # etc/modules.d/mpich.yaml: `-e PALS_*`, `-e PMI_*`), and the other launchers' variables.
    env_passthrough = ("PALS_*", "PMI_*", "OMPI_*", "PBS_*")
    # pbs_resources(7B): ngpus, "number of GPUs" a chunk asks for; none where the GPUs come
    # with the node (ALCF's select asks for nodes only: `gpu_request: none`).
    gpu_requests = ("ngpus", "none")
    options = {
        "launcher": (str,),  # pbsdsh (default), hydra, openmpi or pals: see TaskLauncher
        "gpu_request": (str,),  # ngpus (default) or none
        "system": (str,),  # select=N:system=<name> (ALCF: polaris, aurora)
        "filesystems": (str,),  # file systems always asked for, colon-separated (ALCF)
        # path prefix -> file system name: the shared dir's and the image's file systems are
        # added to `filesystems` (ALCF holds jobs whose file systems are not declared)
        "filesystem_mounts": (dict,),
    }

    def option_problem(self, options: Mapping[str, object]) -> str:
        return (super().option_problem(options)
                or choice_problem(options, "launcher", tuple(LAUNCHERS)))

    def task_rank_vars(self, options: Mapping[str, object]) -> tuple[str, ...]:
        return task_launcher(options).rank_vars

    def launcher_for(self, options: Mapping[str, object]) -> str:
        return task_launcher(options).program

    def groups_problem(self, options: Mapping[str, object]) -> str:
        return task_launcher(options).groups_unsupported

    def directives(self, job: Job) -> list[str]:
        select = "select=" + chunk(job.nodes, job.extra, job.gpus)
        if job.groups:
            # One chunk per group, the head's first: pbs_resources(7B) "Requesting Resources
            # in Chunks": "-l select=[<N>:]<chunk>[+[<N>:]<chunk> ...]", "No spaces are
            # allowed between chunks"; ALCF "Resource Selection and Job Placement" asks for
            # nodes of two systems this way ("...:gputype=A100+32:ncpus=64:...").
            select = "select=" + "+".join(chunk(group.nodes, group.extra, group.gpus)
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
        return task_launcher(job.extra).command(job.nodes, None, job.exports, options, command)

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
        launcher = task_launcher(job.extra)
        launches = [
            "  " + shell_join(launcher.command(group.nodes, f'"{HOSTS_DIR}/{group.name}"',
                                               job.exports, options, group.command)) + " &"
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

    def requeue_options(self) -> list[str]:
        # qsub(1B) -r y: the job is rerunnable: PBS runs it again itself when its node fails
        # (the server's node_fail_requeue) or a preemption requeues it.
        return ["-r y"]

    def requeue_lines(self, job_script: str, job_id_file: str) -> list[str]:
        # A job cannot qrerun itself: OpenPBS's server refuses a rerun request without operator
        # or manager privilege (src/server/req_rerun.c, req_rerunjob: PBSE_PERM). It submits
        # its own script again instead, to start once this job has ended (qsub(1B) -W
        # depend=afterany:<job>: "after jobs jobid have terminated, with or without errors");
        # the run's job id becomes the new job's.
        return [f'next=$(qsub -W depend=afterany:"$PBS_JOBID" {job_script}) && '
                f'echo "$next" > {job_id_file}']

    def cancel_command(self, job_id: str, running: bool) -> list[str]:
        # qsig(1B): "The qsig command requests that a signal be sent to executing batch jobs.
        # The signal is sent to the session leader of the job" (the job script), and is
        # refused for a job that is not running; qdel(1B) removes a queued job (a running one
        # would get SIGTERM, then SIGKILL after the queue's delay).
        # (PBS Professional Reference Guide, qsig and qdel; https://linux.die.net/man/1/qsig)
        if running:
            return ["qsig", "-s", "TERM", job_id]
        return ["qdel", job_id]

    def allocated_nodes(self, environ: Mapping[str, str],
                        options: Mapping[str, object] | None = None) -> int | None:
        nodefile = environ.get("PBS_NODEFILE")
        if not nodefile or not Path(nodefile).is_file():
            return None
        return len({line.strip() for line in Path(nodefile).read_text().splitlines()
                    if line.strip()})


def chunk(nodes: int, extra: Mapping, gpus: int) -> str:
    """`<nodes>[:system=<name>][:ngpus=<gpus>]`: one chunk of select (pbs_resources(7B),
    "Requesting Resources in Chunks"; ALCF's `select=2:system=polaris`)."""
    text = f"{nodes}"
    if extra.get("system"):
        text += f":system={extra['system']}"
    return text + (f":ngpus={gpus}" if gpus else "")
