#!/usr/bin/env python3
"""A stand-in for a launcher that cannot run here (PALS or Hydra mpiexec, Open MPI's mpirun,
pbsdsh, blaunch, jsrun, aprun): it reads the command line the job script gives the real tool,
refuses what the real tool would not take, and starts one task per host of the job, each
with exactly the environment site_nodes.yaml says the tool gives a task (its variables, and the
job script's environment only where the tool passes it), and nothing more.

The tasks travel over the test bed's Slurm (one `srun --overlap` step per host of the
emulated job's allocation, started with `env -i`): Slurm is the transport, none of its
variables reach a task. Usage (the shims made by emulation.py): launch_tasks.py TABLE LAUNCHER
SLURM_ENV_FILE ARGS...
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import yaml

# Per launcher: the options it takes that have a value, and those that do not (what the
# job script renders must be among them: the real tool refuses unknown options).
OPTIONS = {
    # PALS mpiexec (ALCF: -n, --ppn, --depth, --cpu-bind, --hostfile, --env, --envall)
    "pals": ({"-n", "--np", "--ppn", "--depth", "-d", "--cpu-bind", "--hostfile", "--env",
              "--genv"}, {"--envall", "--no-transfer", "--line-buffer"}),
    # Hydra mpiexec (mpiexec.hydra -help: -n, -ppn, -f, -hosts, -genv, -genvall)
    "hydra": ({"-n", "-np", "-ppn", "-f", "-hostfile", "-hosts", "-genv", "-env"},
              {"-genvall", "-envall", "-l"}),
    # Open MPI mpirun(1)
    "openmpi": ({"-n", "-np", "--np", "--map-by", "--hostfile", "-x", "--bind-to",
                 "--mca"}, {"--oversubscribe", "--tag-output"}),
    # pbsdsh(1B): -c copies, -n node, -s, -v, -o; then `--` and the program
    "pbsdsh": ({"-c", "-n"}, {"-s", "-v", "-o"}),
    # blaunch [-n] [-u host_file | -z host_name ... | host_name] command
    "blaunch": ({"-u"}, {"-n", "-no-shell"}),
    # jsrun (OLCF Summit guide "Common jsrun Options")
    "jsrun": ({"-n", "--nrs", "-r", "--rs_per_host", "-a", "--tasks_per_rs", "-c",
               "--cpu_per_rs", "-g", "--gpu_per_rs", "-b", "--bind", "-d",
               "--launch_distribution"}, set()),
    # aprun (ALCF Theta: -n, -N, --cc, -d, -j, -e)
    "aprun": ({"-n", "-N", "--cc", "-cc", "-d", "-j", "-e"}, {"-b", "-q"}),
}


def parse(launcher: str, argv: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """The options given and the command, as the launcher reads its command line."""
    with_value, flags = OPTIONS[launcher]
    given: dict[str, list[str]] = {}
    index = 0
    while index < len(argv):
        word = argv[index]
        if word == "--":
            return given, argv[index + 1:]
        if not word.startswith("-"):
            if launcher == "blaunch" and "host" not in given:
                given["host"] = [word]
                index += 1
                continue
            return given, argv[index:]
        name, _, inline = word.partition("=")
        if name in with_value:
            value = inline or argv[index + 1]
            index += 1 if inline else 2
            given.setdefault(name, []).append(value)
        elif name in flags:
            given.setdefault(name, []).append("")
            index += 1
        else:
            sys.exit(f"{launcher} (stand-in): unrecognized option {word!r}")
    sys.exit(f"{launcher} (stand-in): no command given")


def read_hosts(path: str) -> list[str]:
    """The hosts of a node file, each once, in order."""
    with open(path) as handle:
        return list(dict.fromkeys(line.strip() for line in handle if line.strip()))


def lsf_hosts(environ: dict[str, str]) -> list[str]:
    words = environ.get("LSB_MCPU_HOSTS", "").split()
    return list(dict.fromkeys(words[0::2]))


def placement(launcher: str, given: dict[str, list[str]], environ: dict[str, str]) -> list[str]:
    """The host of each task, by rank."""
    def count(*names: str) -> int | None:
        for name in names:
            if name in given:
                return int(given[name][-1])
        return None

    if launcher == "pbsdsh":
        # "for each line in the $PBS_NODEFILE"; -n: the one node of that index.
        with open(environ["PBS_NODEFILE"]) as handle:
            hosts = [line.strip() for line in handle if line.strip()]
        return [hosts[int(given["-n"][-1])]] if "-n" in given else hosts
    if launcher == "blaunch":
        return [given["host"][0]]
    if launcher == "jsrun":
        # CSM: the first host of LSB_MCPU_HOSTS is the launch node, not a compute node.
        hosts = lsf_hosts(environ)[1:]
        return hosts[:count("-n", "--nrs") or len(hosts)]
    if launcher == "aprun":
        hosts = read_hosts(environ["COBALT_NODEFILE"])
        return hosts[:count("-n") or len(hosts)]
    hostfile = next((given[name][-1] for name in ("--hostfile", "-f", "-hostfile")
                     if name in given), environ.get("PBS_NODEFILE", ""))
    hosts = read_hosts(hostfile)
    tasks = count("-n", "-np", "--np") or len(hosts)
    if tasks > len(hosts):
        sys.exit(f"{launcher} (stand-in): {tasks} tasks, one per node, on {len(hosts)} hosts")
    return hosts[:tasks]


def task_environment(row: dict, given: dict[str, list[str]], environ: dict[str, str],
                     rank: int, hosts: list[str], job_id: str) -> dict[str, str]:
    passes = row["passes_environment"]
    if passes is True:
        env = dict(environ)
    elif passes == "-x":
        env = {name: environ[name] for name in given.get("-x", []) if name in environ}
    else:
        env = {name: environ[name] for name in passes if name in environ}
    values = {"rank": rank, "size": len(hosts), "node": rank, "local_rank": 0,
              "local_size": 1, "host": hosts[rank], "job_id": job_id}
    env.update({name: str(value).format(**values) for name, value in row["task_env"].items()})
    return env


def main() -> int:
    table_path, launcher, slurm_env_file, *argv = sys.argv[1:]
    with open(table_path) as handle:
        row = yaml.safe_load(handle)["launchers"][launcher]
    given, command = parse(launcher, argv)
    environ = dict(os.environ)
    hosts = placement(launcher, given, environ)
    with open(slurm_env_file) as handle:
        transport = {**json.load(handle), "PATH": "/usr/bin:/bin"}
    steps = []
    for rank, host in enumerate(hosts):
        env = task_environment(row, given, environ, rank, hosts, transport["SLURM_JOB_ID"])
        words = [f"{name}={value}" for name, value in env.items()]
        steps.append(subprocess.Popen(
            ["srun", "--overlap", "--nodes=1", "--ntasks=1", f"--nodelist={host}",
             "--kill-on-bad-exit=0", "--export=NONE", "/usr/bin/env", "-i", *words, *command],
            env=transport))

    def forward(signum, _frame):
        for step in steps:
            step.send_signal(signum)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    return max(step.wait() for step in steps)


if __name__ == "__main__":
    sys.exit(main())
