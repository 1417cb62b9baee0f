#!/usr/bin/env python3
"""Stand-ins for the batch commands that cannot run here (PBS qsub/qstat/qsig/qdel, Cobalt
qsub/qstat/qdel, LSF bsub/bjobs/bkill), run on the test bed's login node; and, as `job`, the
batch shell of the job they make.

A submission reads the script's directives the way the real command does (node count,
walltime, output file), and makes the job on the test bed's Slurm (sbatch, the partition of
the emulated site's nodes: $EMULATED_PARTITION). That job runs `batch.py job`, which gives
the script exactly what site_nodes.yaml says the scheduler gives a job script (its node file,
job id and LSB_/PBS_/COBALT_ variables, a login environment, the launcher stand-ins on PATH)
and no SLURM_* variable, and runs it. Usage (the shims made by emulation.py):
batch.py TABLE SCHEDULER COMMAND ARGS...
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent  # on the login node; sbatch runs a copy of this file


def directives(text: str, prefix: str) -> list[str]:
    """The words of every directive line, as the scheduler reads them."""
    words: list[str] = []
    for line in text.splitlines():
        if line.startswith(prefix):
            words += re.findall(r'"[^"]*"|\S+', line[len(prefix):])
    return [word.strip('"') for word in words]


def option(words: list[str], *names: str) -> list[str]:
    return [words[i + 1] for i, word in enumerate(words[:-1]) if word in names]


def job_request(scheduler: str, text: str) -> dict:
    """Nodes, walltime (s), output file and job name from the script's directives."""
    if scheduler == "pbs":
        words = directives(text, "#PBS")
        resources = dict(item.split("=", 1) for value in option(words, "-l")
                         for item in [value] if "=" in item)
        chunks = resources.get("select", "1").split("+")
        nodes = sum(int(chunk.split(":")[0]) for chunk in chunks)
        h, m, s = (resources.get("walltime", "00:10:00").split(":") + ["0", "0"])[:3]
        walltime = int(h) * 3600 + int(m) * 60 + int(s)
        return {"nodes": nodes, "walltime": walltime, "output": option(words, "-o")[-1],
                "name": option(words, "-N")[-1], "queue": (option(words, "-q") or [""])[-1]}
    if scheduler == "cobalt":
        words = directives(text, "#COBALT")
        return {"nodes": int(option(words, "-n")[-1]),
                "walltime": int(option(words, "-t")[-1]) * 60,
                "output": option(words, "-o")[-1],
                "name": (option(words, "--jobname") or ["cobalt"])[-1], "queue": ""}
    words = directives(text, "#BSUB")
    nodes = int((option(words, "-n") or option(words, "-nnodes"))[-1])
    minutes = option(words, "-W")[-1].split(":")
    walltime = (int(minutes[0]) * 60 + int(minutes[1]) if len(minutes) == 2
                else int(minutes[0])) * 60
    return {"nodes": nodes, "walltime": walltime, "output": option(words, "-o")[-1],
            "name": option(words, "-J")[-1], "queue": (option(words, "-q") or [""])[-1],
            "csm": "-nnodes" in words}


def submit(table: str, scheduler: str, args: list[str]) -> int:
    if scheduler == "lsf":
        text = sys.stdin.read()  # bsub reads the job from standard input
        handle, path = tempfile.mkstemp(prefix="bsub-", suffix=".sh",
                                        dir=os.environ["EMULATED_SPOOL"])
        os.write(handle, text.encode())
        os.close(handle)
        script = path
    else:
        script = args[-1]
        text = Path(script).read_text()
    request = job_request(scheduler, text)
    # With IBM CSM the batch script runs on a launch node of its own, and jsrun starts the
    # tasks on the job's compute nodes (OLCF Summit guide, "Batch Scripts"): one more node.
    nodes = request["nodes"] + (1 if request.get("csm") else 0)
    minutes = max(1, -(-request["walltime"] // 60)) + 1
    result = subprocess.run(
        ["sbatch", "--parsable", f"--nodes={nodes}", "--ntasks-per-node=1",
         f"--time={minutes}", f"--output={request['output']}", "--exclusive",
         f"--partition={os.environ['EMULATED_PARTITION']}", f"--job-name={request['name']}",
         str(HERE / "batch.py"), table, scheduler, "job", os.environ["EMULATED_LAUNCHER"],
         json.dumps(request), str(Path(script).resolve()), os.getcwd()],
        capture_output=True, text=True)
    if result.returncode:
        sys.stderr.write(result.stderr)
        return result.returncode
    job_id = result.stdout.strip().split(";")[0]
    if scheduler == "pbs":
        print(f"{job_id}.pbs")
    elif scheduler == "cobalt":
        print(job_id)
    else:
        print(f"Job <{job_id}> is submitted to queue <{request['queue'] or 'normal'}>.")
    return 0


def slurm_state(job: str) -> str:
    result = subprocess.run(["squeue", "--noheader", "--format=%T", "--jobs", job.split(".")[0]],
                            capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else ""


def state(scheduler: str, args: list[str]) -> int:
    job = args[-1]
    slurm = slurm_state(job)
    if scheduler == "pbs":
        word = {"RUNNING": "R", "PENDING": "Q", "COMPLETING": "E"}.get(slurm, "")
        if not word:
            print(f"qstat: {job} Job has finished, use -x or -H to obtain historical job "
                  "information", file=sys.stderr)
            return 35
        print("Job id            Name             User              Time Use S Queue")
        print("----------------  ---------------- ----------------  -------- - -----")
        print(f"{job:<17} rayhpc           ray               00:00:00 {word} workq")
        return 0
    if scheduler == "cobalt":
        word = {"RUNNING": "running", "PENDING": "queued", "COMPLETING": "exiting"}.get(slurm)
        print("JobID  State\n=============")
        if word:
            print(f"{job}  {word}")
        return 0
    word = {"RUNNING": "RUN", "PENDING": "PEND", "COMPLETING": "RUN"}.get(slurm)
    if not word:
        print(f"Job <{job}> is not found")
        return 255
    print(word)
    return 0


def cancel(args: list[str]) -> int:
    job = args[-1].split(".")[0]
    signalled = "-s" in args and args[args.index("-s") + 1] in ("TERM", "SIGTERM", "15")
    running = slurm_state(job) == "RUNNING"
    # qdel/bkill of a running job: SIGTERM to the job script first, as the real ones do.
    argv = ["scancel", "--batch", "--signal=TERM", job] if signalled or running \
        else ["scancel", job]
    return subprocess.run(argv).returncode


def hostnames() -> list[str]:
    result = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]],
                            capture_output=True, text=True, check=True)
    return result.stdout.split()


def run_job(table_path: str, scheduler: str, launcher: str, request_json: str, script: str,
            workdir: str) -> None:
    """The emulated job's batch shell: the scheduler's environment for the job script."""
    table = yaml.safe_load(Path(table_path).read_text())
    standins = Path(table_path).parent / "standins"
    request = json.loads(request_json)
    job_id = os.environ["SLURM_JOB_ID"]
    spool = Path(tempfile.mkdtemp(prefix=f"emulated-{job_id}-"))
    hosts = hostnames()
    # The test bed's Slurm carries the tasks (launch_tasks.py): its variables are kept here,
    # for srun alone.
    slurm = {name: value for name, value in os.environ.items() if name.startswith("SLURM_")}
    (spool / "slurm.json").write_text(json.dumps(slurm))
    nodefile = spool / "nodefile"
    nodefile.write_text("".join(f"{host}\n" for host in hosts))
    bin_dir = spool / "bin"
    bin_dir.mkdir()
    for name, row in table["launchers"].items():
        if name in (launcher,) or (name not in ("pals", "hydra") and
                                   scheduler_has(scheduler, name)):
            for program in row["programs"]:
                shim = bin_dir / program
                shim.write_text(f"#!/bin/sh\nexec python3 {standins / 'launch_tasks.py'} "
                                f"{table_path} {name} {spool / 'slurm.json'} \"$@\"\n")
                shim.chmod(0o755)
    # Site modules: `module` exists on every site (standins/bin/module).
    (bin_dir / "module").symlink_to(standins / "bin" / "module")
    # LSB_MCPU_HOSTS: "hostA slots hostB slots ..." (one slot per host: span[ptile=1]); with
    # CSM the launch node comes first, then the compute nodes.
    slots = [(host, 1) for host in hosts]
    values = {"job_id": job_id, "name": request["name"], "nodefile": str(nodefile),
              "workdir": workdir, "queue": request.get("queue") or "workq",
              "nodes": len(hosts), "hosts": " ".join(hosts),
              "hosts_slots": " ".join(f"{host} {count}" for host, count in slots)}
    home = os.environ.get("HOME", "/home/ray")
    env = {"HOME": home, "USER": os.environ.get("USER", "ray"),
           "LOGNAME": os.environ.get("USER", "ray"), "SHELL": "/bin/bash",
           "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin"}
    env.update({name: str(value).format(**values)
                for name, value in table["schedulers"][scheduler]["job_env"].items()})
    os.chdir(workdir)
    os.execve("/bin/bash", ["bash", script], env)


def scheduler_has(scheduler: str, launcher: str) -> bool:
    return launcher in {"pbs": ("pbsdsh", "openmpi"), "lsf": ("blaunch", "jsrun"),
                        "cobalt": ("aprun",)}[scheduler]


def main() -> int:
    table, scheduler, command, *args = sys.argv[1:]
    if command == "job":
        run_job(table, scheduler, *args)
    if command in ("qsub", "bsub"):
        return submit(table, scheduler, args)
    if command in ("qstat", "bjobs"):
        return state(scheduler, args)
    if command in ("qdel", "qsig", "bkill"):
        return cancel(args)
    sys.exit(f"batch stand-in: unknown command {command}")


if __name__ == "__main__":
    sys.exit(main())
