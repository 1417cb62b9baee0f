"""End to end on a real Slurm cluster (the test bed: a controller and two compute nodes in
containers): `rayhpc launch` on the login node submits with sbatch, srun starts the node agent
in Apptainer from the SIF on each node, and everything ends cleanly."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from rayhpc.launcher.resolve.groups import image_label
from rayhpc.launcher.runtimes import runtime
from rayhpc.launcher.runtimes.apptainer import versions_from_inspect
from tests import PROJECT_ROOT
from tests.launching import archived
from tests.test_elastic import BIG_JOB
from tests.testbed.harness import ALL_NODES, COMPUTE_NODES, SlurmTestbed

pytestmark = pytest.mark.docker
SITE = PROJECT_ROOT / "tests/testbed/site.yaml"
RAY_PROCESSES = "raylet|gcs_server|ray::|dashboard|default_worker|node_agent.pyz"


def launch(bed: SlurmTestbed, *args: str,
           wait: bool = True) -> tuple[subprocess.CompletedProcess, Path | None]:
    """`rayhpc launch` on the login node, as the cluster user; ``wait``: follow the job."""
    result = bed.exec("controller", "python3", "-m", "invoke", "-r", str(PROJECT_ROOT), "launch",
                      "--site", str(SITE), "--shared", str(bed.shared),
                      "--image", f"{bed.shared}/ray.sif", *(["--wait"] if wait else []), *args,
                      user="ray", workdir=str(bed.shared))
    match = re.search(r"run dir (\S+)", result.stdout)
    return result, Path(match.group(1)) if match else None


def assert_nothing_left(bed: SlurmTestbed, wait_s: float = 30) -> None:
    """The queue empties (within wait_s) and no Ray process is left on any node."""
    deadline = time.monotonic() + wait_s
    while bed.exec("controller", "squeue", "--noheader").stdout.strip():
        assert time.monotonic() < deadline, "the job is still in the queue"
        time.sleep(1)
    for node in ALL_NODES:
        left = bed.exec(node, "pgrep", "-a", "-f", RAY_PROCESSES).stdout.strip()
        assert left == "", f"Ray processes left on {node}: {left}"


def test_two_node_ray_cluster_under_sbatch_and_srun(testbed, tmp_path):
    result, run_dir = launch(testbed, "--nodes", "2", "--driver",
                             "python examples/hello_nodes.py --ray-address={address}")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:] + _job_out(run_dir)
    assert re.search(r"rayhpc: submitted job \d+ to slurm", result.stdout)
    assert "hello from 2 nodes: node1, node2" in result.stdout
    assert (run_dir / "exit_code").read_text().strip() == "0"
    job_script = (run_dir / "job.sh").read_text()
    assert "#SBATCH --nodes=2" in job_script and "srun --nodes=2" in job_script
    assert f"apptainer exec --no-home --bind {testbed.shared}" in job_script
    for node in COMPUTE_NODES:
        assert "raylet.out" in archived(run_dir, node), f"no logs from {node}"
    timing = json.loads((run_dir / "timing.json").read_text())
    assert timing["nodes_joined"] == timing["nodes_expected"] == 2
    # The head drew the run's timeline: a row per node, the head's own times among them.
    timeline = (run_dir / "timeline.svg").read_text()
    assert "2/2 nodes joined" in timeline and ">node2</text>" in timeline
    assert "<title>the head</title>" not in timeline  # rows of their own below 40 nodes
    shutil.copy(run_dir / "timeline.svg", tmp_path)  # kept with pytest's temp dirs, to look at
    assert_nothing_left(testbed)


def test_job_exit_code_is_the_drivers(testbed):
    result, run_dir = launch(testbed, "--driver", "python -c 'import sys; sys.exit(3)'")
    assert result.returncode == 3, result.stdout[-3000:] + _job_out(run_dir)
    assert (run_dir / "exit_code").read_text().strip() == "3"
    assert_nothing_left(testbed)


def test_walltime_stops_a_driver_and_an_interactive_cluster_cleanly(testbed):
    """Two jobs past a 2-minute limit at once (one limit waited out for both): a driver that
    sleeps past it on two nodes, and an interactive cluster on the third. Slurm's warning
    (B:TERM, 30 s before, or up to 60 s earlier, as Slurm documents) reaches the agents
    through the job script; they stop the driver and Ray on every node and keep the logs,
    before Slurm's own kill; the interactive cluster ends the same way (143)."""
    up, interactive = launch(testbed, "--interactive", "--walltime", "2", "--nodes", "1")
    assert up.returncode == 0, up.stdout[-3000:] + _job_out(interactive)
    interactive_started = time.monotonic()
    driver = "python -c 'import time; print(\"sleeping\", flush=True); time.sleep(600)'"
    started = time.monotonic()
    result, run_dir = launch(testbed, "--walltime", "2", "--driver", driver)
    took = time.monotonic() - started
    assert run_dir is not None, result.stdout + result.stderr
    assert "sleeping" in result.stdout
    assert result.returncode == 143, result.stdout[-3000:] + _job_out(run_dir)
    assert "DUE TO TIME LIMIT" not in _job_out(run_dir), "Slurm had to kill the job"
    assert took < 120 + 30, f"the job took {took:.0f} s: the walltime signal did not stop it"
    deadline = time.monotonic() + 60
    while not (interactive / "exit_code").exists():
        assert time.monotonic() < deadline, "the walltime did not end it" + _job_out(interactive)
        time.sleep(1)
    assert time.monotonic() - interactive_started < 120 + 60
    assert (interactive / "exit_code").read_text().strip() == "143", _job_out(interactive)
    assert "DUE TO TIME LIMIT" not in _job_out(interactive), "Slurm had to kill the job"
    for directory, count in ((run_dir, 2), (interactive, 1)):
        records = json.loads((directory / "nodes.json").read_text())
        assert len(records) == count, records
        for node, record in records.items():
            assert record["state"] == "stopped", record
            assert "raylet.out" in archived(directory, node), f"no logs from {node}"
    assert_nothing_left(testbed, wait_s=60)


def test_scancel_of_the_batch_script_stops_every_node_and_keeps_the_logs(testbed):
    """The clean way to stop a running job (README): `scancel --batch --signal=TERM` reaches the
    job script's trap only, as the walltime warning does; the agents stop the driver and Ray on
    every node and keep the logs. (A plain `scancel` signals every process of the step at once,
    Apptainer's squashfuse too, and the containers lose their file system mid-teardown.)"""
    driver = "python -c 'import time; print(\"sleeping\", flush=True); time.sleep(600)'"
    submitted, run_dir = launch(testbed, "--driver", driver, wait=False)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = re.search(r"submitted job (\d+) to slurm", submitted.stdout).group(1)
    deadline = time.monotonic() + 180
    while "sleeping" not in _read(run_dir / "driver.log"):
        assert time.monotonic() < deadline, "the driver never started" + _job_out(run_dir)
        time.sleep(0.5)
    cancelled = testbed.exec("controller", "scancel", "--batch", "--signal=TERM", job_id,
                             user="ray")
    assert cancelled.returncode == 0, cancelled.stderr
    assert_nothing_left(testbed, wait_s=60)
    assert (run_dir / "exit_code").read_text().strip() == "143", _job_out(run_dir)
    for node in COMPUTE_NODES:
        assert "raylet.out" in archived(run_dir, node), f"no logs from {node}"
        record = json.loads((run_dir / "nodes.json").read_text())[node]
        assert record["state"] == "stopped", record


def test_num_gpus_0_renders_the_cpu_job_script_and_runs(testbed):
    """`--num-gpus 0` asks the scheduler for nothing: its job script is the one without
    `--num-gpus` (the dry run's, but for the run id), and it runs."""
    result, run_dir = launch(testbed, "--num-gpus", "0", "--driver",
                             "python examples/hello_nodes.py --ray-address={address}")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr + _job_out(run_dir)
    assert "hello from 2 nodes: node1, node2" in result.stdout
    dry = cli(testbed, "launch", "--site", str(SITE), "--shared", str(testbed.shared),
              "--image", f"{testbed.shared}/ray.sif", "--dry-run", "--driver",
              "python examples/hello_nodes.py --ray-address={address}")
    assert dry.returncode == 0, dry.stderr
    dry_run_id = re.search(r"# Rendered by rayhpc for run (\S+) ", dry.stdout).group(1)
    assert (run_dir / "job.sh").read_text() == dry.stdout.replace(dry_run_id, run_dir.name)
    assert "gpu" not in (run_dir / "job.sh").read_text().lower()
    assert_nothing_left(testbed)


def test_a_worker_whose_preflight_fails_is_refused_by_name(testbed):
    """The site's environment puts a node-local Python tree on PYTHONPATH (as a site module
    would); on node2 it holds another Ray's package metadata (what `pip install --target` of
    Ray 2.59.0 leaves there). Both nodes run the same SIF, so the login node's image check
    passes; node2's preflight, run by the node program in the container, sees Ray 2.59.0 and
    refuses: the launch fails by that node's name at once, exit 1, nothing left."""
    tree = "/tmp/rayhpc-site-python"  # node-local: Apptainer binds the node's /tmp
    info = f"{tree}/ray-2.59.0.dist-info"
    made = testbed.exec("node2", "sh", "-c", f"mkdir -p {info} && printf 'Metadata-Version: "
                        f"2.1\\nName: ray\\nVersion: 2.59.0\\n' > {info}/METADATA && "
                        f"chmod -R a+rX {tree}")
    assert made.returncode == 0, made.stderr
    site = testbed.shared / "site-python.yaml"
    site.write_text(SITE.read_text() + f"environment:\n  PYTHONPATH: {tree}\n")
    site.chmod(0o644)
    try:
        started = time.monotonic()
        result = testbed.exec(
            "controller", "python3", "-m", "invoke", "-r", str(PROJECT_ROOT), "launch",
            "--site", str(site), "--shared", str(testbed.shared), "--image",
            f"{testbed.shared}/ray.sif", "--wait", "--join-timeout", "240", "--driver",
            "python examples/hello_nodes.py",
            user="ray", workdir=str(testbed.shared))
        took = time.monotonic() - started
        run_dir = Path(re.search(r"run dir (\S+)", result.stdout).group(1))
        assert result.returncode == 1, result.stdout[-4000:] + result.stderr + _job_out(run_dir)
        error = (run_dir / "error").read_text().strip()
        assert re.fullmatch(r"preflight on node2: versions: Ray 2\.59\.0, Python \S+ here, Ray "
                            r"2\.60\.0, Python \S+ on the head; Ray refuses nodes of another "
                            r"version: run one image \(or images of the same Ray and Python\) "
                            r"on every node", error), error
        assert f"rayhpc: error: {error}" in result.stdout + result.stderr
        assert (run_dir / "exit_code").read_text().strip() == "1"
        assert not (run_dir / "driver.log").exists()
        assert json.loads((run_dir / "nodes.json").read_text())["node2"]["state"] == "failed"
        assert took < 150, f"the refusal took {took:.0f} s (join timeout 240 s)"
        assert_nothing_left(testbed)
    finally:
        site.unlink(missing_ok=True)
        testbed.exec("node2", "rm", "-rf", tree)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _job_out(run_dir: Path | None) -> str:
    if run_dir is None or not (run_dir / "job.out").exists():
        return ""
    return "\n--- job.out ---\n" + (run_dir / "job.out").read_text()[-4000:]


def test_node_groups_run_as_a_heterogeneous_job(testbed):
    """`--group head:1:ray.sif --group worker:1:ray-worker.sif,resources.trainer=1`: a
    heterogeneous job of two 1-node components, one srun step whose segments run each group's
    SIF. ray-worker.sif is a copy of ray.sif under another name (the test bed has one Ray
    image; what matters is that each node runs the file its group names, seen in its image
    label). The driver (tests/drivers/groups_probe.py) reads each node's group and image labels
    from ray.nodes() and places a task needing the worker group's `trainer` resource."""
    shared = testbed.shared
    # The login node's apptainer reads the SIF's version labels, as the launch does to
    # compare the groups' images (launcher/runtimes/apptainer.py): the real output parses.
    inspect = testbed.exec("controller", *runtime("apptainer").inspect_command(
        f"{shared}/ray.sif"), user="ray", workdir=str(shared))
    assert inspect.returncode == 0, inspect.stderr
    versions = versions_from_inspect(inspect.stdout)
    assert versions and versions["ray"].startswith("2."), inspect.stdout[-2000:]
    shutil.copyfile(shared / "ray.sif", shared / "ray-worker.sif")
    (shared / "ray-worker.sif").chmod(0o644)
    shutil.copyfile(PROJECT_ROOT / "tests/drivers/groups_probe.py", shared / "groups_probe.py")
    (shared / "groups_probe.py").chmod(0o644)
    try:
        result, run_dir = launch(testbed, "--group", f"head:1:{shared}/ray.sif",
                                 "--group", f"worker:1:{shared}/ray-worker.sif,"
                                            "resources.trainer=1",
                                 "--driver", "python groups_probe.py")
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-4000:] + _job_out(run_dir)
        job_script = (run_dir / "job.sh").read_text()
        assert "#SBATCH hetjob\n" in job_script and " : --het-group=1 " in job_script
        head = re.search(r"^group head on (node[12]): image (\S+)$", result.stdout, re.M)
        worker = re.search(r"^group worker on (node[12]): image (\S+)$", result.stdout, re.M)
        assert head and worker, result.stdout[-3000:]
        assert head.group(1) != worker.group(1)
        assert head.group(2) == image_label(f"{shared}/ray.sif")
        assert worker.group(2) == image_label(f"{shared}/ray-worker.sif")
        assert f"trainer task ran on {worker.group(1)}" in result.stdout.splitlines()
        assert (run_dir / "exit_code").read_text().strip() == "0"
        for node in COMPUTE_NODES:
            assert "raylet.out" in archived(run_dir, node), f"no logs from {node}"
        assert_nothing_left(testbed)
    finally:
        for name in ("ray-worker.sif", "groups_probe.py"):
            (shared / name).unlink(missing_ok=True)


def test_inside_an_allocation_it_runs_directly(testbed):
    """`rayhpc launch` in a batch job of our own: no sbatch, the allocation's 2 nodes."""
    inner = (f"python3 -m invoke -r {PROJECT_ROOT} launch --site {SITE} --shared "
             f"{testbed.shared} --image {testbed.shared}/ray.sif --driver "
             "'python examples/hello_nodes.py --ray-address={address}'")
    output = testbed.shared / "allocation.out"
    submitted = testbed.exec("controller", "sbatch", "--parsable", "--nodes=2",
                             "--ntasks-per-node=1", f"--output={output}", "--wrap", inner,
                             user="ray", workdir=str(testbed.shared))
    assert submitted.returncode == 0, submitted.stderr
    assert_nothing_left(testbed, wait_s=180)
    text = output.read_text()
    assert "rayhpc: inside a slurm allocation: running" in text, text[-3000:]
    assert "hello from 2 nodes: node1, node2" in text, text[-3000:]
    assert re.search(r"2/2 nodes, bring-up [\d.]+ s, .* exit code 0$", text.strip()), text[-2000:]


def cli(bed: SlurmTestbed, *args: str) -> subprocess.CompletedProcess:
    """`invoke ARGS` on the login node as the cluster user, for a run in the shared dir."""
    return bed.exec("controller", "python3", "-m", "invoke", "-r", str(PROJECT_ROOT), *args,
                    user="ray", workdir=str(bed.shared))


def test_interactive_cluster_stays_up_takes_jobs_and_goes_down_cleanly(testbed):
    """Submitted from the login node without a driver: --wait returns once both nodes joined
    (connect.txt says how to reach the head, with the SSH tunnel through the login node);
    it serves a Ray Serve application on the cluster network (`--serve`, docs/serving.md)
    that answers a request from the login node; `rayhpc submit` from the login node runs a
    Ray job on both nodes; `rayhpc status` shows the job running with 2/2 nodes and that the
    endpoint answers; `rayhpc down` cancels it the clean way (exit 143, the logs of every
    node, an empty queue, no Ray left)."""
    result, run_dir = launch(testbed, "--interactive", "--serve", "examples.serve_echo:app",
                             "--serve-bind", "network")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:] + _job_out(run_dir)
    run_id = run_dir.name
    job_id = re.search(r"submitted job (\d+) to slurm", result.stdout).group(1)
    connect = (run_dir / "connect.txt").read_text()
    assert connect in result.stdout
    head = json.loads((run_dir / "head.json").read_text())
    dashboard = f"{head['ip']}:{head['dashboard_port']}"
    assert f"export RAY_ADDRESS=http://{dashboard}\n" in connect
    assert f"ssh -N -L 8265:{dashboard} ray@controller" in connect
    assert f"job {job_id} keeps the cluster up until its walltime" in result.stdout
    # The endpoint, from the login node: on the head's cluster address, port 8000.
    endpoint = f"http://{head['ip']}:8000"
    assert f"export RAYHPC_ENDPOINT={endpoint}\n" in connect
    assert f"ssh -N -L 8000:{head['ip']}:8000 ray@controller" in connect
    answer = testbed.exec("controller", "python3", "-c", "import urllib.request; print(urllib"
                          f".request.urlopen('{endpoint}/?text=from-login').read().decode())",
                          user="ray")
    assert json.loads(answer.stdout)["echo"] == "from-login", answer.stdout + answer.stderr
    time.sleep(5)  # it stays up with nothing to do
    assert (run_dir / "exit_code").exists() is False

    job = cli(testbed, "submit", "--run", run_id, "--shared", str(testbed.shared), "--",
              "python", "examples/hello_nodes.py")
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "hello from 2 nodes: node1, node2" in job.stdout
    assert re.search(r"rayhpc: job raysubmit_\w+ succeeded, exit code 0", job.stdout)

    status = cli(testbed, "status", "--run", run_id, "--shared", str(testbed.shared))
    assert status.returncode == 0, status.stderr
    assert re.match(rf"{run_id}  testbed  up \(interactive\)  2/2 nodes joined  up \d+:\d\d:\d\d"
                    rf"  job {job_id} RUNNING  ~0:0\d:\d\d left of 00:05:00\n"
                    rf"  endpoint {endpoint}/: answers \(HTTP 200\)$",
                    status.stdout.strip()), status.stdout

    down = cli(testbed, "down", "--run", run_id, "--shared", str(testbed.shared))
    assert down.returncode == 0, down.stdout + down.stderr + _job_out(run_dir)
    assert f"scancel --batch --signal=TERM {job_id}: job {job_id} (RUNNING) told to stop" \
        in down.stdout
    assert re.search(rf"run {run_id}: 2/2 nodes, .* exit code 143; logs in ", down.stdout)
    assert (run_dir / "exit_code").read_text().strip() == "143"
    for node in COMPUTE_NODES:
        assert "raylet.out" in archived(run_dir, node), f"no logs from {node}"
        record = json.loads((run_dir / "nodes.json").read_text())[node]
        assert record["state"] == "stopped", record
    assert any(name.startswith("job-driver-raysubmit_")
               for node in COMPUTE_NODES for name in archived(run_dir, node))
    assert_nothing_left(testbed)


ELASTIC_DRIVER = """
import socket, time, ray
ray.init()
def alive():
    return sorted(n["NodeManagerHostname"] for n in ray.nodes() if n["Alive"])
@ray.remote(num_cpus=1)
def where():
    time.sleep(0.5)
    return socket.gethostname()
deadline = time.time() + 120
while len(alive()) < 3 and time.time() < deadline:
    time.sleep(0.5)
print("sees", len(alive()), "nodes; tasks ran on", sorted(set(ray.get(
    [where.remote() for _ in range(12)]))), flush=True)
deadline = time.time() + 240
while len(alive()) > 1 and time.time() < deadline:  # work goes on while the block leaves
    ray.get([where.remote() for _ in range(4)])
print("finished on", alive(), flush=True)
"""


def submit_script(bed: SlurmTestbed, run_dir: Path, name: str, text: str
                  ) -> subprocess.CompletedProcess:
    """`rayhpc submit -- python NAME` of ``text`` (written to the shared dir) from the login
    node; it must succeed (else block b2's output is shown too)."""
    (bed.shared / name).write_text(text)
    job = cli(bed, "submit", "--run", run_dir.name, "--shared", str(bed.shared), "--",
              "python", name)
    block_out = (run_dir / "blocks" / "b2.out").read_text() \
        if (run_dir / "blocks" / "b2.out").exists() else ""
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-2000:] + block_out[-3000:]
    return job


def test_a_block_joins_an_interactive_head_and_leaves_drained_at_its_walltime(testbed):
    """An interactive head job of 1 node; `rayhpc grow` by a block of 2 (its own sbatch job);
    a Ray job sees 3 nodes and uses them; the block's walltime warning releases it: its nodes
    are drained and leave (`left`, logs kept), the job finishes on the head; `rayhpc down`
    leaves an empty queue and no Ray process."""
    shared = str(testbed.shared)
    result, run_dir = launch(testbed, "--interactive", "--nodes", "1")
    assert result.returncode == 0, result.stdout[-3000:] + _job_out(run_dir)
    run_id = run_dir.name
    try:
        grown = cli(testbed, "grow", "--run", run_id, "--site", str(SITE), "--shared", shared,
                    "--nodes", "2", "--walltime", "2")
        assert grown.returncode == 0, grown.stdout + grown.stderr
        block_job = re.search(r"block b2: 2 node\(s\) joining run \S+ \(job (\d+),",
                              grown.stdout).group(1)
        script = (run_dir / "blocks" / "b2.sh").read_text()
        head = json.loads((run_dir / "head.json").read_text())
        assert "#SBATCH --nodes=2" in script and "#SBATCH --signal=B:TERM@30" in script
        assert f"export RAYHPC_HEAD_HOST={head['ip']}" in script
        assert "--role worker --block b2" in script and "blocks/b2.pyz" in script

        job = submit_script(testbed, run_dir, "elastic_driver.py", ELASTIC_DRIVER)
        sees = re.search(r"sees 3 nodes; tasks ran on \[(.*)\]", job.stdout)
        assert sees and len(sees.group(1).split(",")) == 3, job.stdout[-3000:]
        assert "finished on ['node" in job.stdout, job.stdout[-2000:]

        # Ray saw the nodes go (the job's end) before the head's next status.json says `left`.
        deadline = time.monotonic() + 60
        while True:
            status = json.loads((run_dir / "status.json").read_text())
            block_nodes = status["blocks"]["b2"]["nodes"]
            if {status["nodes"][n]["state"] for n in block_nodes} == {"left"}:
                break
            assert time.monotonic() < deadline, status
            time.sleep(1)
        assert len(block_nodes) == 2 and all(n.startswith("b2-node") for n in block_nodes)
        assert status["lost"] == []
        for node in block_nodes:
            assert "raylet.out" in archived(run_dir, node), f"no logs from {node}"
        head_log = (run_dir / "logs" / f"{head['node']}.log").read_text()
        assert "block b2: releasing 2 node(s) (job script: walltime or cancel): draining first" \
            in head_log
        deadline = time.monotonic() + 60
        while block_job in testbed.exec("controller", "squeue", "--noheader", "-o", "%i").stdout:
            assert time.monotonic() < deadline, "the block's job did not end"
            time.sleep(1)
        assert "DUE TO TIME LIMIT" not in (run_dir / "blocks" / "b2.out").read_text()

        down = cli(testbed, "down", "--run", run_id, "--shared", shared)
        assert down.returncode == 0, down.stdout + down.stderr + _job_out(run_dir)
        assert "(block b2: 2 joined, 2 left)" in down.stdout
        assert_nothing_left(testbed)
    except BaseException:
        cli(testbed, "down", "--run", run_id, "--shared", shared)  # the next tests
        testbed.exec("controller", "scancel", "--user", "ray")  # find an empty queue
        raise


def test_autoscale_submits_a_block_for_unmet_demand_and_releases_it_once_idle(testbed):
    """An interactive head job of 1 node (2 CPUs); `rayhpc autoscale --autoscale 0:1` runs on
    the login node; a Ray job asks for 4 tasks of 2 CPUs: the demand stays unmet, one block is
    submitted with sbatch, the tasks run on it too and finish; once idle the block is drained
    and released (`left`, its job gone from the queue); `rayhpc down` ends the run and with it
    the autoscaler; nothing is left."""
    shared = str(testbed.shared)
    result, run_dir = launch(testbed, "--interactive", "--nodes", "1")
    assert result.returncode == 0, result.stdout[-3000:] + _job_out(run_dir)
    run_id = run_dir.name
    head = json.loads((run_dir / "head.json").read_text())
    # In the background on the login node; it ends by itself when the run ends.
    scaler = subprocess.Popen(
        ["docker", "exec", "-u", "ray", "-w", shared, f"{testbed.name}-controller", "python3",
         "-m", "invoke", "-r", str(PROJECT_ROOT), "autoscale", "--run", run_id, "--site",
         str(SITE), "--shared", shared, "--autoscale", "0:1", "--block-nodes", "1",
         "--walltime", "5", "--block-lifetime", "off", "--up-after", "4", "--idle-after", "8",
         "--period", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        job = submit_script(testbed, run_dir, "big_job.py", BIG_JOB)
        ran_on = re.search(r"RAN ON \[(.*)\]", job.stdout)
        assert ran_on and len(ran_on.group(1).split(",")) == 2, job.stdout[-2000:]
        assert f"'{head['node']}'" in ran_on.group(1), job.stdout[-2000:]

        deadline = time.monotonic() + 120
        while True:
            status = json.loads((run_dir / "status.json").read_text())
            block_nodes = (status.get("blocks", {}).get("b2") or {}).get("nodes") or []
            if block_nodes and {status["nodes"][n]["state"] for n in block_nodes} == {"left"}:
                break
            assert time.monotonic() < deadline, status
            time.sleep(1)
        block_job = json.loads((run_dir / "blocks" / "b2.json").read_text())["job_id"]
        while block_job in testbed.exec("controller", "squeue", "--noheader", "-o",
                                        "%i").stdout:
            assert time.monotonic() < deadline, "the released block's job did not end"
            time.sleep(1)
    finally:
        down = cli(testbed, "down", "--run", run_id, "--shared", shared)
        try:
            output, _ = scaler.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            testbed.exec("controller", "pkill", "-f", "invoke.*autoscale")
            output, _ = scaler.communicate(timeout=30)
            raise AssertionError("the autoscaler did not stop when the run ended:\n"
                                 + output[-3000:]) from None
    assert down.returncode == 0, down.stdout + down.stderr + _job_out(run_dir)
    assert scaler.returncode == 0, output[-3000:]
    assert "rayhpc: grow: " in output and "requests unmet for" in output, output
    assert output.count("rayhpc: grow: ") == 1, output  # MAX 1
    assert "rayhpc: release b2: idle for" in output, output
    assert "block b2: 1 of 1 node(s) left the cluster drained" in output, output
    # It ends as soon as the stop is asked, not once the run has ended: no block grown in
    # between would outlive the run.
    assert f"run {run_id} is stopping (rayhpc down): autoscaling stops" in output, output
    assert not (run_dir / "blocks" / "b3.json").exists()
    assert "(block b2: 1 joined, 1 left)" in down.stdout, down.stdout
    assert_nothing_left(testbed)
