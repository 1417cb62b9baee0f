"""The vLLM recipe and its driver, without a GPU or an engine: the image extends the ray image
(golden Dockerfile), the driver script sizes vLLM from the cluster (run with stand-in `python`
and `vllm` commands), and a dry-run launch on each NVIDIA site renders a job script that gets the
nodes' GPUs and the site's fabric settings, with the driver in the run's spec."""

import os
import subprocess
import time
from pathlib import Path

import pytest

from rayhpc import EXAMPLES_DIR
from rayhpc.containers.dockerfile import render_dockerfile
from rayhpc.containers.recipe import load_recipe
from rayhpc.launcher.orchestration import launch, resolve_spec
from rayhpc.launcher.resolve.config import load_site
from tests.golden import assert_golden

SERVE = EXAMPLES_DIR / "vllm_serve.sh"
DRIVER = "bash examples/vllm_serve.sh models/Qwen2.5-7B-Instruct --max-model-len 8192"


def test_vllm_dockerfile_golden():
    assert_golden("Dockerfile.vllm-gpu", render_dockerfile(load_recipe("vllm"), "gpu"))


def test_the_vllm_image_is_the_ray_gpu_image_plus_one_vllm_layer():
    vllm, ray = load_recipe("vllm"), load_recipe("ray")
    assert list(vllm.variants) == ["gpu"] and vllm.variant("gpu") == ray.variant("gpu")
    assert vllm.ray_version == ray.ray_version and vllm.extends == "ray"
    assert vllm.image_tag("gpu") == "rayhpc/vllm:2.60.0-py311-gpu"
    [own] = vllm.build_layers[1:]
    assert own.pip == ("vllm==0.34.0",) and not own.apt
    text = render_dockerfile(vllm, "gpu")
    assert text.startswith(render_dockerfile(ray, "gpu").split("\nLABEL ")[0]
                           .replace("recipe 'ray'", "recipe 'vllm'"))


def run_serve(tmp_path, gpus: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """vllm_serve.sh with a `python` that prints the cluster's GPUs (as the script's Ray query
    would: GPUs of the smallest GPU node, GPU nodes) and a `vllm` that prints its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in (("python", f"cat >/dev/null; echo {gpus}"),
                       ("vllm", 'printf "%s\\n" "$@"')):
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    environ = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "RAY_ADDRESS": "10.1.2.3:6379", **env}
    return subprocess.run(["bash", str(SERVE), *args], capture_output=True, text=True,
                          env=environ, timeout=30)


def test_the_driver_serves_tp_per_node_and_pp_across_nodes_on_the_heads_address(tmp_path):
    result = run_serve(tmp_path, "4 2", "models/m", "--max-model-len", "8192")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "vllm_serve.sh: models/m on 2 node(s) x 4 GPU(s): --tensor-parallel-size 4 "
        "--pipeline-parallel-size 2; http://10.1.2.3:8000/v1",
        "serve", "models/m", "--distributed-executor-backend", "ray",
        "--tensor-parallel-size", "4", "--pipeline-parallel-size", "2",
        "--host", "10.1.2.3", "--port", "8000", "--max-model-len", "8192"]


def test_the_driver_sizes_can_be_overridden_and_a_cluster_without_gpus_is_refused(tmp_path):
    result = run_serve(tmp_path, "4 2", "m", VLLM_TP="2", VLLM_PP="4", VLLM_PORT="9000")
    assert "--tensor-parallel-size\n2\n--pipeline-parallel-size\n4\n" in result.stdout
    assert "--port\n9000\n" in result.stdout
    none = run_serve(tmp_path, "0 0", "m")
    assert none.returncode == 1 and "the cluster has no GPUs" in none.stderr
    assert "serve" not in none.stdout
    outside = subprocess.run(["bash", str(SERVE), "m"], capture_output=True, text=True,
                             env={"PATH": os.environ["PATH"]})
    assert outside.returncode != 0 and "runs as a rayhpc driver" in outside.stderr


# The image each NVIDIA site's runtime takes: a SIF built from the vllm image, or its name.
SITES = {
    "polaris": "/lus/eagle/projects/PROJ/vllm-gpu.sif",
    "perlmutter": "rayhpc/vllm:2.60.0-py311-gpu",
}


@pytest.mark.parametrize("name", sorted(SITES))
def test_a_dry_run_of_the_vllm_driver_gets_gpus_and_the_sites_fabric(name, tmp_path, capsys):
    cli = {"shared": str(tmp_path), "image": SITES[name], "nodes": "2", "account": "PROJ",
           "driver": DRIVER}
    assert launch(name, cli, dry_run=True) == 0
    script = capsys.readouterr().out
    site = load_site(name)
    spec = resolve_spec(site, cli, {}, now=time.time())
    # The head runs the driver from the run's spec (the job script starts the node agents).
    assert spec.driver == DRIVER and spec.nodes == 2 and spec.image == SITES[name]
    assert (EXAMPLES_DIR / "vllm_serve.sh").is_file()  # staged into <shared>/examples
    assert f" {SITES[name]} python " in script  # every node runs the vllm image
    if name == "perlmutter":
        # GPUs asked of Slurm and given to each task and container; NERSC's NCCL module.
        assert "#SBATCH --constraint=gpu\n#SBATCH --gpus-per-node=4\n" in script
        assert "--gpus-per-node=4 --kill-on-bad-exit=0 podman-hpc run " in script
        assert " --nccl --gpu " in script
        assert "\nexport NCCL_SOCKET_IFNAME=hsn\n" in script
        assert spec.num_gpus == 4  # Ray's GPUs per node: vllm_serve.sh's TP
    else:
        # Polaris: the GPUs come with the node (select asks for nodes only); --nv passes them.
        assert "#PBS -l select=2:system=polaris" in script and "ngpus" not in script
        assert "apptainer exec --fakeroot --no-home --nv " in script
        assert '\nexport NCCL_SOCKET_IFNAME="${NCCL_SOCKET_IFNAME:-hsn0}"\n' in script
    assert '\nexport GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-hsn0}"\n' in script
    assert not Path(tmp_path, "runs").exists()  # a dry run writes nothing
