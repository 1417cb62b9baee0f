"""Every site profile's job script, as rendered, run end to end with the real image and real
Ray on emulated nodes of its site (tests/emulation/site_nodes.yaml, each fact with its source).

Slurm sites run on the Slurm test bed, given the GPUs of their nodes (gres.conf over device
files made in the node containers: Slurm itself sets CUDA_/ROCR_VISIBLE_DEVICES), their
partitions and CPU counts. PBS, LSF and Cobalt sites are submitted from the login node through
stand-ins of their batch commands, and their launchers (mpiexec, mpirun, pbsdsh, blaunch, jsrun,
aprun) are stand-ins that start one real task per node with exactly the environment the table
gives a task. GPU nodes carry stand-ins of the vendors' management libraries, so Ray takes the
path it takes on the machine. The driver of a GPU site asks Ray for one GPU per task on every
GPU of the cluster and checks that each task saw its own device."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from rayhpc.launcher import SITES_DIR
from tests import PROJECT_ROOT
from tests.emulation import (
    STANDINS,
    build_nvml,
    image_purelib,
    load_table,
    node_pools,
    site_rows,
    submit_shims,
)
from tests.testbed.harness import RECIPE, SlurmTestbed

pytestmark = pytest.mark.docker
TABLE = load_table()
ROWS = site_rows(TABLE)
# The image's name in podman-hpc's squashed store, as `podman-hpc images` lists it.
PODMAN_IMAGE = "localhost/ray:2.60.0-py311"
RAY_PROCESSES = "raylet|gcs_server|ray::|dashboard|default_worker|node_agent.pyz"


@pytest.fixture(scope="module")
def bed(docker_api, converted, tmp_path_factory):
    from rayhpc.containers.images import ensure_recipe_image

    node_image = ensure_recipe_image(RECIPE, "default")
    image, sif, _ = converted
    shared = Path(tempfile.mkdtemp(prefix="rayhpc-emulated-"))
    shared.chmod(0o777)  # the cluster's users (ray, uid 1000) write here
    # One image for every site, under the names each runtime takes: a SIF, another SIF for
    # a second group, podman-hpc's squashed store (by image name), a squashfs file `enroot
    # import` made (the stand-ins run them with Apptainer, which reads a SIF by its content).
    (shared / "squash").mkdir(mode=0o755)
    copies = (shared / "ray.sif", shared / "ray-gpu.sif", shared / "ray.sqsh",
              shared / "squash" / (PODMAN_IMAGE.replace("/", "+").replace(":", "+") + ".sif"))
    for copy in copies:
        shutil.copyfile(sif, copy)
        copy.chmod(0o644)
    nvml = build_nvml(tmp_path_factory.mktemp("nvml"))
    with SlurmTestbed(docker_api, node_image, shared, PROJECT_ROOT,
                      pools=node_pools(TABLE, image_purelib(image)), nvml=nvml,
                      tools=tuple(sorted((STANDINS / "bin").iterdir()))).running() as testbed:
        yield testbed


def site_file(bed: SlurmTestbed, row) -> str:
    """The row's profile as a user names it, or a copy with the row's scheduler options (a
    user who picks another launcher copies the profile, as its comments say) and its
    `site_overrides` (what the test bed cannot be: an aarch64 site's platform)."""
    profile = row.row["profile"]
    path = (PROJECT_ROOT / "rayhpc" / profile if profile.endswith(".yaml")
            else SITES_DIR / f"{profile}.yaml")
    if not row.row.get("scheduler_options") and not row.row.get("site_overrides"):
        return str(path) if profile.endswith(".yaml") else profile
    data = yaml.safe_load(path.read_text())
    data["name"] = row.name
    data["scheduler_options"] = {**data.get("scheduler_options", {}),
                                 **row.row.get("scheduler_options", {})}
    data.update(row.row.get("site_overrides", {}))
    copy = bed.shared / f"{row.name}.yaml"
    copy.write_text(yaml.safe_dump(data))
    copy.chmod(0o644)
    return str(copy)


def gpus_per_node(row) -> int:
    hardware = TABLE["hardware"][row.hardware]
    return hardware["gpus"] * hardware.get("devices_per_gpu", 1)


def login_env(bed: SlurmTestbed, row) -> list[str]:
    """The login node's environment for the row's site: stand-ins of the batch commands first
    on PATH where its scheduler is not the test bed's Slurm."""
    if row.scheduler == "slurm":
        return []
    bin_dir = submit_shims(bed.shared / "emulation" / row.name, row.scheduler)
    spool = bed.shared / "emulation" / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    spool.chmod(0o777)
    return [f"PATH={bin_dir}:/usr/local/bin:/usr/bin:/bin",
            f"EMULATED_PARTITION={row.partition}", f"EMULATED_LAUNCHER={row.row['launcher']}",
            f"EMULATED_SPOOL={spool}"]


def rayhpc(bed: SlurmTestbed, row, *args: str, env: tuple[str, ...] = ()
           ) -> subprocess.CompletedProcess:
    """`rayhpc ARGS` on the login node, as the site's user."""
    return bed.exec("controller", "env", *login_env(bed, row), *env, "python3", "-m", "invoke",
                    "-r", str(PROJECT_ROOT), *args, user="ray", workdir=str(bed.shared))


def emulated_launch(bed: SlurmTestbed, row, *args: str, nodes: int = 2,
                    driver: bool = True) -> tuple[subprocess.CompletedProcess, Path | None]:
    """`rayhpc launch --site <profile> --wait` as the site's user would run it, with the row's
    flags (and the GPU check or hello driver, unless ``driver`` is False)."""
    env: tuple[str, ...] = ()
    gpu = TABLE["hardware"][row.hardware]["gpu"]
    image = str(bed.shared / "ray.sif")
    if row.row.get("image") == "podman-hpc":
        # `podman-hpc migrate NAME` put it in the squashed store; users name it.
        env = (f"PODMANHPC_SQUASH_DIR={bed.shared}/squash",)
        image = PODMAN_IMAGE
    elif row.row.get("image") == "squashfs":
        image = str(bed.shared / "ray.sqsh")
    command = "python examples/hello_gpus.py" if gpu else "python examples/hello_nodes.py"
    flags = [flag.format(shared=bed.shared) for flag in row.row.get("flags", [])]
    counts = [] if "--group" in flags else ["--nodes", str(nodes)]  # groups give their own
    result = rayhpc(bed, row, "launch", "--site", site_file(bed, row), *counts, "--shared",
                    str(bed.shared), "--image", image, "--wait", "--join-timeout", "180",
                    *(["--driver", command] if driver else []), *flags, *args, env=env)
    match = re.search(r"run dir (\S+)", result.stdout)
    return result, Path(match.group(1)) if match else None


def job_out(run_dir: Path | None) -> str:
    path = run_dir / "job.out" if run_dir else None
    return "\n--- job.out ---\n" + path.read_text()[-5000:] if path and path.exists() else ""


def assert_nothing_left(bed: SlurmTestbed) -> None:
    result = bed.exec("controller", "sh", "-c", "for i in $(seq 60); do "
                      "[ -z \"$(squeue --noheader)\" ] && exit 0; sleep 1; done; exit 1")
    assert result.returncode == 0, bed.exec("controller", "squeue").stdout
    for host in bed.hosts:
        left = bed.exec(host, "pgrep", "-a", "-f", RAY_PROCESSES).stdout.strip()
        assert left == "", f"Ray processes left on {host}: {left}"


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_every_site_runs_its_job_script_on_emulated_nodes(bed, row):
    result, run_dir = emulated_launch(bed, row)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:] + job_out(run_dir)
    if TABLE["hardware"][row.hardware]["gpu"]:
        nodes = row.row.get("gpu_nodes", 2)
        total = nodes * gpus_per_node(row)
        assert re.search(rf"^hello from {total} GPUs on {nodes} nodes: each task its own "
                         "device", result.stdout, re.M), output[-5000:]
        # The preflight counted what the site's nodes show, as Ray does (Intel: tiles).
        assert re.search(rf"preflight gpus: ok: {gpus_per_node(row)} \S* ?GPUs visible",
                         (run_dir / "job.out").read_text()), job_out(run_dir)
    else:
        assert re.search(r"^hello from 2 nodes: ", result.stdout, re.M), output[-5000:]
    assert (run_dir / "exit_code").read_text().strip() == "0"
    assert_nothing_left(bed)


@pytest.mark.parametrize("name", ["pbs-pbsdsh", "lsf"])
def test_a_block_grown_on_an_emulated_site_joins_and_ends_with_the_run(bed, name):
    """An interactive head job of one node; `rayhpc grow` submits a block of one node through
    the site's own batch commands (qsub, bsub: stand-ins over the test bed) and its launcher;
    a Ray job sees both nodes; `rayhpc down` ends the run with its block, nothing left."""
    row = next(row for row in ROWS if row.name == name)
    result, run_dir = emulated_launch(bed, row, "--interactive", nodes=1, driver=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr + job_out(run_dir)
    run_id, shared = run_dir.name, str(bed.shared)
    try:
        grown = rayhpc(bed, row, "grow", "--run", run_id, "--site", site_file(bed, row),
                       "--shared", shared, "--nodes", "1", *row.row.get("flags", []))
        assert grown.returncode == 0, grown.stdout + grown.stderr
        assert re.search(r"block b2: 1 node\(s\) joining run", grown.stdout), grown.stdout
        deadline = time.monotonic() + 180
        while True:
            status = json.loads((run_dir / "status.json").read_text())
            block = status.get("blocks", {}).get("b2", {})
            states = [status.get("nodes", {}).get(node, {}).get("state")
                      for node in block.get("nodes", [])]
            if states and set(states) == {"joined"}:
                break
            assert time.monotonic() < deadline, f"{status}\n" + _read(run_dir / "blocks/b2.out")
            time.sleep(1)
        job = rayhpc(bed, row, "submit", "--run", run_id, "--shared", shared, "--", "python",
                     "examples/hello_nodes.py")
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr
        assert "hello from 2 nodes: " in job.stdout, job.stdout[-3000:]
        down = rayhpc(bed, row, "down", "--run", run_id, "--shared", shared)
        assert down.returncode == 0, down.stdout + down.stderr + job_out(run_dir)
        assert "(block b2: 1 joined" in down.stdout, down.stdout
        assert_nothing_left(bed)
    except BaseException:
        rayhpc(bed, row, "down", "--run", run_id, "--shared", shared)
        bed.exec("controller", "scancel", "--user", "ray")
        raise


def test_a_gpu_count_the_nodes_cannot_meet_is_refused_by_the_preflight(bed):
    """Polaris' nodes have 4 A100 (ALCF); asked for 8 per node, the head's preflight refuses
    by node, check and fix, at once: exit 1, nothing left."""
    row = next(row for row in ROWS if row.name == "polaris")
    result, run_dir = emulated_launch(bed, row, "--num-gpus", "8")
    assert result.returncode == 1, result.stdout[-3000:] + job_out(run_dir)
    error = (run_dir / "error").read_text().strip()
    assert re.fullmatch(r"preflight on nv[12]: gpus: 4 GPUs visible, 8 asked for; check the "
                        r"job's GPU request .*", error), error
    assert f"rayhpc: error: {error}" in result.stdout + result.stderr
    assert not (run_dir / "driver.log").exists()
    assert_nothing_left(bed)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
