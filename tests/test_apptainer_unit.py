"""Apptainer pieces that need no engine: def files (golden and structure), the exec command
line, and the host-runtime path's exact command line."""

import pytest

from rayhpc.containers.apptainer_def import render_def, split_sections
from rayhpc.containers.recipe import list_recipes, load_recipe
from rayhpc.launcher.runtimes import ExecRequest, runtime
from tests.golden import assert_golden

RECIPE_VARIANTS = [(recipe.name, variant) for recipe in map(load_recipe, list_recipes())
                   for variant in recipe.variants]


@pytest.mark.parametrize("recipe, variant", RECIPE_VARIANTS)
def test_def_file_golden(recipe, variant):
    assert_golden(f"{recipe}-{variant}.def", render_def(load_recipe(recipe), variant))


def test_def_file_keeps_base_environment_and_labels():
    text = render_def(load_recipe("ray"), "gpu")
    header, sections = split_sections(text)
    assert "Bootstrap: docker" in header and "From: rayproject/ray:2.60.0-py311-gpu" in header
    labels = dict(line.strip().split(" ", 1) for line in sections["labels"] if line.strip())
    assert labels["org.rayhpc.ray-version"] == "2.60.0"
    assert labels["org.rayhpc.variant"] == "gpu"
    assert labels["org.rayhpc.gpu"] == "true"
    post = "\n".join(sections["post"])
    assert "10-docker2singularity.sh" in post.splitlines()[1]  # before any package step
    assert "su " not in post and "USER" not in post and "RAYHPC_SECRETS" not in post
    assert 'export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0"' in "\n".join(sections["environment"])


def test_def_file_from_a_local_archive():
    text = render_def(load_recipe("ray"), "cpu", base="/in/base.tar", bootstrap="docker-archive")
    assert "Bootstrap: docker-archive\nFrom: /in/base.tar\n" in text


def test_apptainer_exec_command_line():
    request = ExecRequest(image="/sif/ray.sif", command=["ray", "--version"],
                          binds=["/shared"], env={"RAY_ADDRESS": "h:1"}, workdir="/shared",
                          home="/tmp/rh/home")
    assert runtime("apptainer").exec_command(request) == [
        "apptainer", "exec", "--home", "/tmp/rh/home", "--bind", "/shared", "--pwd", "/shared",
        "--env", "RAY_ADDRESS=h:1", "/sif/ray.sif", "ray", "--version"]


@pytest.mark.parametrize("gpu, flag", [("nvidia", "--nv"), ("amd", "--rocm")])
def test_gpu_images_get_the_gpu_flag(gpu, flag):
    argv = runtime("singularity").exec_command(ExecRequest("/x.sif", ["nvidia-smi"], gpu=gpu))
    assert argv == ["singularity", "exec", "--no-home", flag, "/x.sif", "nvidia-smi"]


def test_site_options_come_first():
    argv = runtime("apptainer", ["--unsquash"]).exec_command(ExecRequest("/x.sif", ["true"]))
    assert argv == ["apptainer", "exec", "--unsquash", "--no-home", "/x.sif", "true"]
