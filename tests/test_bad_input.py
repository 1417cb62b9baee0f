"""Bad input through the real command line: each case exits 2 with one `error:` line naming the
flag, file or field and the fix, no traceback, and nothing left running or half-written."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest

from rayhpc.launcher.backends.local.compose import RUN_LABEL
from tests.cli import invoke
from tests.conftest import TEST_IMAGE
from tests.specs import make_spec

pytestmark = pytest.mark.docker


SITE_FILE = "{shared}/mysite.yaml"

# Runs that `submit`, `logs`, `status` and `down` find (their files; {shared}: the shared dir).
FINISHED, STARTING, HPC_UP, DRIVER_RUN = ("20260101-000000-fini", "20260101-000000-strt",
                                         "20260101-000000-hpcu", "20260101-000000-drvr")


def run_files(run_id: str, site: str = "local", up: bool = True, exit_code: str = "",
              **cli: object) -> dict:
    spec = make_spec(site, run_id=run_id, image="/x.sif", nodes=3, **cli).to_json()
    spec["shared"] = "{shared}"
    files = {f"runs/{run_id}/spec.json": json.dumps(spec),
             f"runs/{run_id}/status.json": json.dumps({"joined": 3 if up else 1,
                                                       "expected": 3, "lost": []}),
             f"runs/{run_id}/auth_token": "0" * 64,
             f"runs/{run_id}/nodes/head.json": json.dumps({"state": "joined", "ip": "10.9.9.9"})}
    if up:
        files[f"runs/{run_id}/connect.txt"] = "# up\n"
    if exit_code:
        files[f"runs/{run_id}/exit_code"] = exit_code + "\n"
    return files


FINISHED_RUN = run_files(FINISHED, exit_code="143")
RUNS = {**FINISHED_RUN, **run_files(STARTING, up=False), **run_files(HPC_UP, site="slurm"),
        **run_files(DRIVER_RUN, driver="python x.py")}


class Case(NamedTuple):
    name: str
    args: list  # the command line; {shared} is the test's shared dir
    env: dict  # extra environment
    expected: str  # what the one error line must say
    site_text: str | bytes = ""  # written to SITE_FILE first, when given
    files: dict | None = None  # {path in the shared dir: text} made first
    links: dict | None = None  # {path in the shared dir: where the link points} made first


CASES = [
    Case("unknown site", ["launch", "--site", "thetaa"], {},
         "unknown site 'thetaa' (--site); known sites: aurora, frontier, local"),
    Case("malformed site yaml", ["launch", "--site", SITE_FILE], {},
         "mysite.yaml: not valid YAML", site_text="scheduler: [local"),
    Case("mistyped site key", ["launch", "--site", SITE_FILE], {},
         "mysite.yaml: nodez: unknown key; did you mean 'nodes'?",
         site_text="scheduler: local\nruntime: docker\nnodez: 2\n"),
    Case("wrong runtime for site", ["launch", "--site", SITE_FILE], {},
         "runtime: 'docker' cannot run on scheduler 'slurm'; one of: apptainer, singularity",
         site_text="scheduler: slurm\nruntime: docker\n"),
    Case("nodes 0", ["launch", "--nodes", "0"], {}, "--nodes: '0': must be 1 or more"),
    Case("nodes negative", ["launch", "--nodes", "-2"], {}, "--nodes: '-2': must be 1 or more"),
    Case("nodes from env", ["launch"], {"RAYHPC_NODES": "many"},
         "$RAYHPC_NODES: 'many': not a valid value"),
    Case("missing driver file", ["launch", "--driver", "python nope.py"], {},
         "--driver: nope.py not found in the shared directory"),
    Case("empty driver", ["launch", "--driver", ""], {}, "--driver: '': must not be empty"),
    Case("unparsable driver", ["launch", "--driver", "python 'unclosed"], {},
         "--driver: cannot parse"),
    Case("shared not writable", ["launch", "--shared", "{shared}/locked"], {},
         "--shared: {shared}/locked is not a writable directory"),
    Case("temp dir too long", ["launch"], {"RAYHPC_TEMP_DIR": "/tmp/" + "x" * 70},
         "temp_dir: /tmp/xxxx"),
    Case("bad shm size", ["launch", "--shm-size", "lots"], {},
         "--shm-size: 'lots': must be a size like 512m or 2g"),
    Case("join timeout 0", ["launch", "--join-timeout", "0"], {},
         "--join-timeout: '0': must be 1 or more"),
    Case("image missing", ["launch", "--image", "rayhpc-test/absent:0"], {},
         "--image: rayhpc-test/absent:0 is not on this Docker engine; build it with "
         "`rayhpc build`"),
    Case("no docker engine", ["launch"], {"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
         "no Docker engine reachable at unix:///nonexistent/docker.sock"),
    Case("compose missing", ["launch"], {"PATH": "/nonexistent"},
         "docker compose not found: install the compose plugin"),
    Case("dry run on local", ["launch", "--dry-run"], {},
         "--dry-run: the local site submits no job script"),
    Case("bad walltime", ["launch", "--site", "slurm", "--walltime", "soon", "--dry-run"], {},
         "--walltime: 'soon': must be a walltime in one of Slurm's forms: MM, MM:SS, HH:MM:SS, "
         "D-HH, D-HH:MM or D-HH:MM:SS"),
    Case("ambiguous walltime", ["launch", "--site", "slurm", "--walltime", "1:75", "--dry-run"],
         {}, "--walltime: '1:75': ambiguous: its seconds (75) must be below 60 in Slurm's forms"),
    Case("walltime within the stop grace", ["launch", "--site", "slurm", "--walltime", "1",
                                            "--dry-run"], {},
         "--walltime: 00:01:00 leaves no time to run: the agents are told to stop 60 s "
         "(stop_grace) before the end; give a longer walltime"),
    Case("walltime in a site file", ["launch", "--site", SITE_FILE, "--dry-run"], {},
         "mysite.yaml: walltime: '2:60:00': ambiguous: its minutes (60) must be below 60",
         site_text="scheduler: slurm\nruntime: apptainer\nwalltime: 2:60:00\n"),
    Case("missing account", ["launch", "--site", "polaris", "--image", "{shared}/fake.sif"],
         {}, "--account: site polaris refuses jobs without a project to charge; give --account "
             "PROJECT, set RAYHPC_ACCOUNT=PROJECT, or put `account: PROJECT` in the site file "),
    Case("no queue for the nodes", ["launch", "--site", "aurora", "--account", "P", "--nodes",
                                    "40", "--walltime", "1-02", "--image",
                                    "{shared}/fake.sif"], {},
         "--nodes 40 --walltime 1-02:00:00: no queue of site aurora's queue table (ALCF, "),
    Case("sif on podman-hpc", ["launch", "--site", "perlmutter", "--image",
                               "{shared}/fake.sif"], {},
         "--image: podman-hpc runs an image name, not a file ({shared}/fake.sif); give the "
         "image's name as `podman-hpc images` lists it (after `podman-hpc pull NAME` or "
         "`podman-hpc migrate NAME`)"),
    Case("image name on apptainer", ["launch", "--site", "slurm", "--image", "rayhpc/ray:1",
                                     "--dry-run"], {},
         "--image: apptainer runs a SIF file, not rayhpc/ray:1; give the SIF path"),
    Case("unknown scheduler option", ["launch", "--site", SITE_FILE], {},
         "mysite.yaml: scheduler_options: qoss: unknown key; did you mean 'qos'?",
         site_text="scheduler: slurm\nruntime: apptainer\nscheduler_options:\n  qoss: x\n"),
    Case("launcher the scheduler does not have", ["launch", "--site", SITE_FILE, "--image",
                                                  "/x.sif", "--dry-run"], {},
         "mysite.yaml: scheduler_options: launcher: 'srun' is not one of: pbsdsh, hydra, "
         "openmpi, pals",
         site_text="scheduler: pbs\nruntime: apptainer\nscheduler_options:\n  launcher: srun\n"),
    Case("one intel opt-out alone", ["launch", "--site", SITE_FILE, "--image", "/x.sif",
                                     "--dry-run"], {},
         "site mysite: environment: RAY_EXPERIMENTAL_NOSET_ZE_AFFINITY_MASK without "
         "RAY_EXPERIMENTAL_NOSET_ONEAPI_DEVICE_SELECTOR: Ray selects each task's Intel GPU "
         "with ZE_AFFINITY_MASK since ray-project/ray PR 64440",
         site_text="scheduler: pbs\nruntime: apptainer\ngpu: intel\nenvironment:\n"
                   "  RAY_EXPERIMENTAL_NOSET_ZE_AFFINITY_MASK: '1'\n"),
    Case("unknown queue limit", ["launch", "--site", SITE_FILE], {},
         "mysite.yaml: queues: debug: max_nodez: unknown key; did you mean 'max_nodes'?",
         site_text="scheduler: pbs\nruntime: apptainer\nqueues:\n  debug: {max_nodez: 2}\n"),
    Case("intel gpu on podman-hpc", ["launch", "--site", SITE_FILE], {},
         "mysite.yaml: gpu: 'intel': runtime podman-hpc cannot pass intel GPUs into its "
         "containers (it passes: nvidia)",
         site_text="scheduler: slurm\nruntime: podman-hpc\ngpu: intel\n"),
    Case("hpc site without image", ["launch", "--site", "slurm"], {},
         "--image: site slurm runs apptainer: give the image to run"),
    Case("sif missing", ["launch", "--site", "slurm", "--image", "{shared}/nope.sif"], {},
         "--image: {shared}/nope.sif is not a file; give the SIF path"),
    Case("no sbatch here", ["launch", "--site", "slurm", "--image", "{shared}/fake.sif"], {},
         "sbatch not found: submit from a login node of slurm"),
    Case("unknown recipe", ["build", "--recipe", "nosuch"], {},
         "unknown recipe 'nosuch' (--recipe); known recipes: apptainer, ray, vllm"),
    # Issue 31: recipes that extend others, packages added for one build.
    Case("recipe extending itself", ["build", "--recipe", "{shared}/me.yaml"], {},
         "{shared}/me.yaml: extends: the recipe extends itself "
         "({shared}/me.yaml -> {shared}/me.yaml)",
         files={"me.yaml": "name: me\nextends: me.yaml\n"}),
    Case("recipe extending a tool", ["build", "--recipe", "{shared}/t.yaml"], {},
         "{shared}/t.yaml: extends: ", files={"t.yaml": "name: t\nextends: apptainer\n"}),
    Case("pip asks for another ray", ["build", "--pip", "ray==2.9.0"], {},
         "--pip: 'ray==2.9.0' excludes the base's Ray 2.60.0"),
    Case("requirements option line", ["build", "--requirements", "{shared}/req.txt"], {},
         "--requirements: {shared}/req.txt:2: '--index-url https://x/simple' is a pip option",
         files={"req.txt": "six\n--index-url https://x/simple\n"}),
    Case("unknown variant", ["build", "--variant", "tpu"], {},
         "no variant 'tpu'; choose one of: cpu, gpu (--variant)"),
    Case("ca bundle missing", ["build", "--ca-bundle", "/nonexistent/ca.pem"], {},
         "CA bundle /nonexistent/ca.pem (from --ca-bundle) cannot be read"),
    Case("base cannot be pulled", ["build", "--base", "rayhpc-test/no-such-base:1"], {},
         "rayhpc-test/no-such-base:1 is not here and cannot be pulled"),
    Case("convert missing tag", ["convert", "--image", "rayhpc-test/never:0", "--out", "{shared}"],
         {}, "--image: rayhpc-test/never:0 is not on this Docker engine"),
    Case("down unknown run", ["down", "--run", "19990101-000000-0000"], {},
         "--run: no containers or networks of run '19990101-000000-0000' here"),
    # Interactive clusters: launch flags, and runs that cannot take the command.
    Case("interactive with a driver", ["launch", "--interactive", "--driver", "python x.py"],
         {}, "--interactive: an interactive cluster runs no --driver; drop one of them"),
    Case("detach with a driver", ["launch", "--detach", "--driver", "python x.py"], {},
         "--detach: only an interactive cluster (no --driver) is left running"),
    Case("detach on an hpc site", ["launch", "--site", "slurm", "--detach"], {},
         "--detach: HPC launches return once the job is submitted (--wait: once its cluster "
         "is up); drop --detach"),
    Case("submit unknown run", ["submit", "--run", "19990101-000000-0000", "--shared",
                                "{shared}", "--", "python", "x.py"], {},
         "--run: no run '19990101-000000-0000' in {shared}/runs (latest there: none); give "
         "--shared DIR where it was launched"),
    Case("logs unknown run", ["logs", "--run", "19990101-000000-0000", "--shared", "{shared}"],
         {}, "--run: no run '19990101-000000-0000' in {shared}/runs (latest there: 20260101",
         files=RUNS),
    Case("status unknown run", ["status", "--run", "19990101-000000-0000", "--shared",
                                "{shared}"], {}, "--run: no run '19990101-000000-0000' in",
         files=RUNS),
    Case("down unknown run with runs there", ["down", "--run", "19990101-000000-0000",
                                              "--shared", "{shared}"], {},
         "--run: no containers or networks of run '19990101-000000-0000' here, and no run "
         "'19990101-000000-0000' in {shared}/runs", files=RUNS),
    Case("submit without a run", ["submit", "--", "python", "x.py"], {},
         "--run: give the run id (`rayhpc status` lists the runs)"),
    Case("submit finished run", ["submit", "--run", FINISHED, "--shared", "{shared}", "--",
                                 "python", "x.py"], {},
         f"--run: run {FINISHED} has finished (exit code 143); launch a new cluster",
         files=RUNS),
    Case("status finished run", ["status", "--run", FINISHED, "--shared", "{shared}"], {},
         f"--run: run {FINISHED} has finished: 0/? nodes", files=RUNS),
    Case("down finished run", ["down", "--run", FINISHED, "--shared", "{shared}"], {},
         f"--run: run {FINISHED} has finished: 0/? nodes", files=RUNS),
    Case("submit before the cluster is up", ["submit", "--run", STARTING, "--shared",
                                             "{shared}", "--", "python", "x.py"], {},
         f"--run: the cluster of run {STARTING} is not up yet (1/3 nodes joined); wait for "
         f"{{shared}}/runs/{STARTING}/connect.txt", files=RUNS),
    Case("submit without a command", ["submit", "--run", FINISHED, "--shared", "{shared}"], {},
         "missing command after --: `rayhpc submit --run ID -- python my_job.py ...`",
         files=RUNS),
    Case("submit with nothing after --", ["submit", "--run", FINISHED, "--shared", "{shared}",
                                          "--"], {}, "missing command after --", files=RUNS),
    Case("submit working dir outside the shared dir on an hpc site",
         ["submit", "--run", HPC_UP, "--site", "slurm", "--shared", "{shared}",
          "--working-dir", "/etc", "--", "python", "x.py"], {},
         "--working-dir: /etc is outside the shared directory {shared}, which is all the nodes "
         "of site slurm see; put it there (e.g. {shared}/etc) and pass that", files=RUNS),
    Case("submit working dir missing", ["submit", "--run", HPC_UP, "--site", "slurm",
                                        "--shared", "{shared}", "--working-dir", "/nonexistent",
                                        "--", "python", "x.py"], {},
         "--working-dir: /nonexistent is not a directory", files=RUNS),
    Case("submit to a driver run", ["submit", "--run", DRIVER_RUN, "--shared", "{shared}",
                                    "--", "python", "x.py"], {},
         f"--run: run {DRIVER_RUN} runs its own driver, not Ray jobs", files=RUNS),
    Case("logs of an unknown node", ["logs", "--run", FINISHED, "--shared", "{shared}",
                                     "--node", "nope"], {},
         f"--node: run {FINISHED} has no node 'nope'; its nodes: head", files=RUNS),
    Case("logs follow of every job", ["logs", "--run", HPC_UP, "--site", "slurm", "--shared",
                                      "{shared}", "--follow"], {},
         "--follow: an interactive cluster runs many jobs; give one with --job ID", files=RUNS),
    Case("logs of an unknown job", ["logs", "--run", FINISHED, "--shared", "{shared}", "--job",
                                    "raysubmit_nope"], {},
         "--job: no output of job 'raysubmit_nope' in run " + FINISHED, files=RUNS),
    # Hardening: values that used to give a traceback, do nothing, or fail late.
    Case("image reference upper case", ["launch", "--image", "Rayhpc/Ray:1"], {},
         "--image: 'Rayhpc/Ray:1' is not a valid image reference; use [registry/]name[:tag]"),
    Case("image reference tag then path", ["launch", "--image", "name:tag/x"], {},
         "--image: 'name:tag/x' is not a valid image reference"),
    Case("image reference bad digest", ["launch", "--image", "ray@sha256:abc"], {},
         "--image: 'ray@sha256:abc' is not a valid image reference"),
    Case("convert bad reference", ["convert", "--image", "name:tag/x", "--out", "{shared}"], {},
         "--image: 'name:tag/x' is not a valid image reference"),
    Case("site file not utf-8", ["launch", "--site", SITE_FILE], {},
         "mysite.yaml: not UTF-8 text (byte 49); save it as UTF-8 YAML",
         site_text="scheduler: local\nruntime: docker\ndescription: caf\xe9\n".encode("latin-1")),
    Case("site file is a directory", ["launch", "--site", "{shared}"], {},
         "site file {shared} is a directory (--site); give the site YAML file in it"),
    Case("runs is a file", ["launch"], {},
         "--shared: {shared}/runs is a file, not the directory of runs; move it away",
         files={"runs": "not a directory"}),
    Case("shared dir the containers cannot write", ["launch", "--shared", "{shared}/mine"], {},
         "--shared: {shared}/mine is not writable by the containers' user (uid 1000; it is "
         "owned by uid 0, mode 0o755); `chown 1000 {shared}/mine`", files={"mine/.keep": ""}),
    Case("setup on the local site", ["launch", "--site", SITE_FILE], {},
         "mysite.yaml: setup: not used on a local site (it takes: environment, groups, platform); "
         "remove it",
         site_text="scheduler: local\nruntime: docker\nsetup: [module load x]\n"),
    Case("driver as a yaml list", ["launch", "--site", SITE_FILE], {},
         "mysite.yaml: driver: ['python', 'x.py']: must be one string, not a list",
         site_text="scheduler: local\nruntime: docker\ndriver: [python, x.py]\n"),
    Case("shm size 0", ["launch", "--shm-size", "0"], {}, "--shm-size: '0': must be more than 0"),
    Case("driver linked out of the shared dir", ["launch", "--driver", "python link.py"], {},
         "--driver: link.py is a link to /etc/hostname, outside the shared directory",
         links={"link.py": "/etc/hostname"}),
    # Node groups (issue 13).
    Case("two head groups", ["launch", "--group", "a:1,head=true", "--group", "b:1,head=true"],
         {}, "--group: groups a and b both say head: true; the head runs in exactly one group"),
    Case("no head group", ["launch", "--group", "cpu:1", "--group", "gpu:2"], {},
         "--group: no group holds the head: mark one `head: true` (or name it head)"),
    Case("group of 0 nodes", ["launch", "--site", SITE_FILE], {},
         "mysite.yaml: groups: gpu: nodes: 0: a group has 1 node or more",
         site_text="scheduler: local\nruntime: docker\ngroups:\n  head: {nodes: 1}\n"
                   "  gpu: {nodes: 0}\n"),
    Case("unknown group key", ["launch", "--site", SITE_FILE], {},
         "mysite.yaml: groups: head: imgae: unknown key; did you mean 'image'?",
         site_text="scheduler: local\nruntime: docker\ngroups:\n  head: {nodes: 1, imgae: x}\n"),
    Case("gpu group on an engine without GPUs",
         ["launch", "--group", "head:1", "--group", "gpu:1,gpu=nvidia"], {},
         "group gpu: gpu: nvidia: this Docker engine has no such GPUs"),
    Case("gpu group the site's runtime cannot pass", ["launch", "--site", SITE_FILE,
                                                      "--dry-run"], {},
         "mysite.yaml: groups: gpu: gpu: 'amd': runtime shifter cannot pass amd GPUs",
         site_text="scheduler: slurm\nruntime: shifter\ngroups:\n  head: {nodes: 1}\n"
                   "  gpu: {nodes: 2, gpu: amd}\n"),
    Case("groups on a scheduler that cannot run them",
         ["launch", "--site", "theta", "--dry-run", "--image", "/x.sif", "--group", "head:1",
          "--group", "big:2"], {}, "--group: site theta runs cobalt, which cannot run node "
                                   "groups: "),
    Case("nodes and groups", ["launch", "--nodes", "3", "--group", "head:1", "--group",
                              "worker:1"], {},
         "--nodes: the node groups give the node count (head 1 + worker 1 = 2); drop --nodes"),
    Case("group flag without a node count", ["launch", "--group", "gpu"], {},
         "--group: 'gpu': give NAME:NODES[:IMAGE][,KEY=VALUE...]"),
    # Issue 22: refused before anything is created. (An absent image as well: were the node
    # count not refused first, the launch would still stop before creating a container.)
    Case("more local nodes than the machine holds", ["launch", "--nodes", "5000", "--image",
                                                     "rayhpc-test/absent:0", "--driver",
                                                     "echo hi"], {},
         "--nodes: 5000 local nodes do not fit on this machine: each takes 2.5 GiB (--shm-size "
         "2g and 512 MiB for Ray)"),
    Case("build tag upper case", ["build", "--tag", "UPPER/Case:tag"], {},
         "--tag: 'UPPER/Case:tag' is not a valid image reference"),
    # Issue 29: the autoscaler's seconds (a negative or NaN period grew a block, then died on
    # time.sleep), and --queue where no queue exists.
    *(Case(f"autoscale {flag} {value}", ["autoscale", "--run", HPC_UP, "--site", "slurm",
                                         "--shared", "{shared}", flag, value], {},
           f"{flag}: '{value}' is not a number of seconds", files=RUNS)
      for flag, value in (("--period", "-1"), ("--period", "nan"), ("--period", "0"),
                          ("--period", "abc"), ("--up-after", "xyz"), ("--idle-after", "-5"),
                          ("--up-after", "inf"))),
    Case("queue on the local site", ["launch", "--queue", "bogus"], {},
         "--queue: site local has no queues (its nodes start at once on this machine); drop "
         "--queue"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(docker_api, shared_dir, case):
    locked = shared_dir / "locked"
    locked.mkdir()
    subprocess.run(["chattr", "+i", str(locked)], check=True)
    (shared_dir / "fake.sif").write_text("not really a SIF")
    site = Path(SITE_FILE.format(shared=shared_dir))
    if isinstance(case.site_text, bytes):
        site.write_bytes(case.site_text)
    elif case.site_text:
        site.write_text(case.site_text)
    for name, text in (case.files or {}).items():
        (shared_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (shared_dir / name).write_text(text.replace("{shared}", str(shared_dir)))
    for name, target in (case.links or {}).items():
        (shared_dir / name).symlink_to(target)
    args = [a.format(shared=shared_dir) for a in case.args]
    before = snapshot(shared_dir / "runs")
    if args[0] == "launch" and "--shared" not in args:
        args += ["--shared", str(shared_dir)]
    if args[0] == "launch" and "--image" not in args and "--site" not in args:
        args += ["--image", TEST_IMAGE]
    try:
        result = invoke(*args, env=case.env, timeout=120)
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert case.expected.format(shared=shared_dir) in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert snapshot(shared_dir / "runs") == before, "the runs changed"
    ours = [c["Names"][0] for c in docker_api.containers(all=True, filters={"label": RUN_LABEL})
            if str(shared_dir) in c["Command"]]
    assert ours == [], f"containers of this test's runs: {ours}"
    assert not list(shared_dir.glob(".rayhpc-*")) and not list(shared_dir.glob("*.sif.json"))


def snapshot(runs: Path) -> dict:
    """Every file under runs/ with its content: nothing made, changed or removed."""
    if not runs.is_dir():
        return {}
    return {str(p.relative_to(runs)): p.read_bytes() if p.is_file() else None
            for p in sorted(runs.rglob("*"))}
