"""Platforms (issue #31, aarch64): names, rayproject/ray's -aarch64 tags, the recipe and site
`platform` keys, the build's platform, the emulation check, the SIF record, and the launch
refused when a site's nodes and its image disagree. No engine: docker-py is faked where the
code talks to it; the real arm64 build is the engine test in tests/test_platform_engine.py."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from rayhpc.common.user_error import UserError
from rayhpc.containers import emulation, images, rootfs
from rayhpc.containers import engine as engine_module
from rayhpc.containers.platforms import (
    PLATFORMS,
    base_for,
    check_platform,
    mismatch,
    platform_for_arch,
    with_suffix,
)
from rayhpc.containers.recipe import load_recipe, parse_recipe
from rayhpc.containers.sif_record import record_path, sif_platform
from rayhpc.containers.standin import os_image_for, render_base_dockerfile, standin_tag
from rayhpc.launcher.backends.batch import BatchBackend
from rayhpc.launcher.backends.batch.jobscript import render_job_script
from rayhpc.launcher.backends.local import manage
from rayhpc.launcher.resolve.config import load_site
from tests.cli import invoke
from tests.golden import assert_golden
from tests.specs import make_spec

EXAMPLES = Path(__file__).parent.parent / "rayhpc" / "examples" / "sites"
VISTA = EXAMPLES / "vista-gh200.yaml"
SHARED = "/scratch/proj/shared"


# -- names and tags

def test_rayproject_ray_aarch64_tags_append_the_architecture():
    assert base_for("rayproject/ray:2.60.0-py311-cpu", "linux/arm64") == \
        "rayproject/ray:2.60.0-py311-cpu-aarch64"
    assert base_for("rayproject/ray:2.60.0-py311-cu128", "linux/arm64") == \
        "rayproject/ray:2.60.0-py311-cu128-aarch64"
    assert base_for("rayproject/ray:2.60.0-py311-gpu-aarch64", "linux/arm64") == \
        "rayproject/ray:2.60.0-py311-gpu-aarch64"  # once
    assert base_for("rayproject/ray:2.60.0-py311-cpu", "linux/amd64") == \
        "rayproject/ray:2.60.0-py311-cpu"
    assert base_for("debian:bookworm", "linux/arm64") == "debian:bookworm"  # the engine picks


def test_image_and_standin_tags_follow_the_platform():
    recipe = load_recipe("ray")
    assert recipe.platform == "linux/amd64"
    assert recipe.image_tag("cpu") == "rayhpc/ray:2.60.0-py311-cpu"
    assert recipe.image_tag("gpu", "linux/arm64") == "rayhpc/ray:2.60.0-py311-gpu-aarch64"
    assert standin_tag(recipe, "linux/arm64") == "rayhpc/ray-standin:2.60.0-py311-cpu-aarch64"
    assert os_image_for("linux/arm64") == "rayhpc/debian:bookworm-aarch64"
    text = render_base_dockerfile(recipe, os_image_for("linux/arm64"), "linux/arm64")
    assert "FROM rayhpc/debian:bookworm-aarch64\n" in text
    assert "Stand-in for rayproject/ray:2.60.0-py311-cpu-aarch64," in text
    # The default platform renders as before (the golden Dockerfile.standin is unchanged).
    assert render_base_dockerfile(recipe) == render_base_dockerfile(recipe, platform="linux/amd64")


@pytest.mark.parametrize("arch, platform", [("amd64", "linux/amd64"), ("x86_64", "linux/amd64"),
                                            ("arm64", "linux/arm64"), ("aarch64", "linux/arm64"),
                                            ("ppc64le", "linux/ppc64le")])
def test_architectures_as_engines_and_uname_spell_them(arch, platform):
    assert platform_for_arch(arch) == platform


def test_unknown_platforms_are_refused_naming_where_and_the_ones_there_are():
    assert check_platform(" linux/arm64 ", "--platform") == "linux/arm64"
    for bad in ("linux/arm", "arm64", "", 64, None):
        with pytest.raises(UserError) as err:
            check_platform(bad, "--platform")
        assert str(err.value).startswith("--platform: ")
        assert "linux/amd64, linux/arm64" in str(err.value)


# -- recipes and sites

def recipe_data(**more: object) -> dict:
    return {"name": "r", "ray_version": "2.60.0", "python": "3.11",
            "variants": {"cpu": {"base": "rayproject/ray:2.60.0-py311-cpu"}}, **more}


def test_a_recipe_says_its_platform_and_an_unknown_one_is_refused(tmp_path):
    path = tmp_path / "r.yaml"
    recipe = parse_recipe(recipe_data(platform="linux/arm64"), path)
    assert recipe.platform == "linux/arm64"
    assert recipe.image_tag("cpu") == "rayhpc/r:2.60.0-py311-cpu-aarch64"
    assert recipe.image_tag("cpu", "linux/amd64") == "rayhpc/r:2.60.0-py311-cpu"
    with pytest.raises(UserError) as err:
        parse_recipe(recipe_data(platform="linux/riscv64"), path)
    assert str(err.value) == (f"{path}: platform: 'linux/riscv64' is not a platform rayhpc "
                              "builds for; use one of: linux/amd64, linux/arm64")


def test_a_site_says_its_nodes_platform_and_an_unknown_one_is_refused(tmp_path):
    assert load_site("slurm").platform == "linux/amd64"
    assert "not set: linux/amd64" in load_site("slurm").platform_source
    vista = load_site(str(VISTA))
    assert vista.platform == "linux/arm64"
    assert vista.platform_source == f"{VISTA}: platform"
    bad = tmp_path / "bad.yaml"
    bad.write_text(VISTA.read_text().replace("platform: linux/arm64", "platform: aarch64"))
    with pytest.raises(UserError) as err:
        load_site(str(bad))
    assert str(err.value) == (f"{bad}: platform: 'aarch64' is not a platform rayhpc builds "
                              "for; use one of: linux/amd64, linux/arm64")


# -- builds (docker-py faked: what reaches it)

@pytest.fixture
def fake_engine(monkeypatch):
    calls: dict = {}
    monkeypatch.setattr(images, "connect", lambda: "api")
    monkeypatch.setattr(images, "check_emulation", lambda platform: calls.setdefault(
        "emulation", platform))
    monkeypatch.setattr(images, "ensure_image", lambda api, ref, progress, hint, platform=None:
                        calls.setdefault("pulled", (ref, platform)))

    def build(api, dockerfile, tag, progress, secrets, labels, no_cache, platform=None):
        calls.update(dockerfile=dockerfile, tag=tag, labels=labels, platform=platform)
        return "sha256:1"

    monkeypatch.setattr(images, "build_image", build)
    return calls


def test_build_for_arm64_takes_the_aarch64_base_tags_and_labels_it(fake_engine):
    tag = images.build_recipe_image("ray", "gpu", platform="linux/arm64")
    assert tag == fake_engine["tag"] == "rayhpc/ray:2.60.0-py311-gpu-aarch64"
    assert fake_engine["pulled"] == ("rayproject/ray:2.60.0-py311-gpu-aarch64", "linux/arm64")
    assert "FROM rayproject/ray:2.60.0-py311-gpu-aarch64\n" in fake_engine["dockerfile"]
    assert fake_engine["platform"] == fake_engine["emulation"] == "linux/arm64"
    assert fake_engine["labels"]["org.rayhpc.platform"] == "linux/arm64"
    assert fake_engine["labels"]["org.opencontainers.image.base.name"] == \
        "rayproject/ray:2.60.0-py311-gpu-aarch64"


def test_build_without_a_platform_is_the_recipes(fake_engine):
    assert images.build_recipe_image("ray", "cpu") == "rayhpc/ray:2.60.0-py311-cpu"
    assert fake_engine["platform"] == "linux/amd64"
    assert fake_engine["labels"]["org.rayhpc.platform"] == "linux/amd64"


def test_build_platform_flag_is_checked_before_the_engine(fake_engine):
    with pytest.raises(UserError, match=r"^--platform: 'linux/s390x' is not a platform"):
        images.build_recipe_image("ray", "cpu", platform="linux/s390x")
    assert not fake_engine


def test_docker_py_build_gets_the_platform(monkeypatch):
    seen = {}

    class Api:
        def build(self, **kwargs):
            seen.update(kwargs)
            yield {"aux": {"ID": "sha256:2"}}

    from rayhpc.containers.progress import Progress
    assert engine_module.build_image(Api(), "FROM x\n", "t:1", Progress(),
                                     platform="linux/arm64") == "sha256:2"
    assert seen["platform"] == "linux/arm64"
    seen.clear()
    engine_module.build_image(Api(), "FROM x\n", "t:1", Progress())
    assert "platform" not in seen  # as before: the engine's own


def test_the_debootstrapped_root_becomes_an_image_archive_of_its_platform(tmp_path):
    """`docker load` of what rootfs.write_image_archive writes: Docker 20.10's import would
    say amd64 for an arm64 root (its --platform is dropped)."""
    layer = tmp_path / "layer.tar"
    with tarfile.open(layer, "w") as tar:
        (tmp_path / "hello").write_text("hi\n")
        tar.add(tmp_path / "hello", arcname="./hello")
    out = tmp_path / "image.tar"
    rootfs.write_image_archive(layer, "rayhpc/debian:bookworm-aarch64", "linux/arm64", out)
    with tarfile.open(out) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))
        assert manifest[0]["RepoTags"] == ["rayhpc/debian:bookworm-aarch64"]
        config_bytes = archive.extractfile(manifest[0]["Config"]).read()
        config = json.loads(config_bytes)
        stored = archive.extractfile(manifest[0]["Layers"][0]).read()
    assert (config["os"], config["architecture"]) == ("linux", "arm64")
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(stored).hexdigest()]
    assert stored == layer.read_bytes()
    # The engine finds the config by its digest: the file's name.
    assert manifest[0]["Config"] == hashlib.sha256(config_bytes).hexdigest() + ".json"


# -- emulation

def test_another_platform_needs_an_enabled_qemu_handler(monkeypatch, tmp_path):
    monkeypatch.setattr(emulation, "host_platform", lambda: "linux/amd64")
    assert emulation.emulation_problem("linux/amd64", tmp_path) == ""
    problem = emulation.emulation_problem("linux/arm64", tmp_path)
    assert "no enabled qemu-aarch64 handler" in problem
    assert "apt-get install qemu-user-static binfmt-support" in problem
    assert "update-binfmts --enable qemu-aarch64" in problem
    (tmp_path / "qemu-aarch64").write_text("disabled\ninterpreter /usr/bin/qemu-aarch64-static\n")
    assert emulation.emulation_problem("linux/arm64", tmp_path)
    (tmp_path / "qemu-aarch64").write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/x\n")
    assert emulation.emulation_problem("linux/arm64", tmp_path) == ""
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    (tmp_path / "qemu-aarch64").unlink()
    with pytest.raises(UserError, match=r"^--platform linux/arm64: this linux/amd64 host"):
        emulation.check_emulation("linux/arm64", tmp_path)
    monkeypatch.setenv("DOCKER_HOST", "tcp://builder:2376")  # its own kernel: not checked here
    emulation.check_emulation("linux/arm64", tmp_path)
    monkeypatch.delenv("DOCKER_HOST")
    monkeypatch.setattr(emulation.sys, "platform", "darwin")  # Docker Desktop's VM emulates
    emulation.check_emulation("linux/arm64", tmp_path)


# -- the launch refusal

def test_mismatch_says_nothing_where_the_image_does_not_say():
    assert mismatch("linux/arm64", "s.yaml: platform", "x.sif", None, " --sif") == ""
    assert mismatch("linux/arm64", "s.yaml: platform", "x.sif", "linux/arm64", "") == ""


def sif_with_record(tmp_path: Path, platform: str | None) -> Path:
    sif = tmp_path / "ray.sif"
    sif.write_bytes(b"SIF")
    record = {"image": "rayhpc/ray:2.60.0-py311-gpu", "image_id": "sha256:1"}
    if platform:
        record["platform"] = platform
    record_path(sif).write_text(json.dumps(record))
    return sif


def vista_spec(image: Path | str, **cli):
    return make_spec(str(VISTA), shared=SHARED, image=str(image), nodes=2, **cli)


def test_an_amd64_sif_on_gh200_nodes_is_refused_before_submission(tmp_path):
    sif = sif_with_record(tmp_path, "linux/amd64")
    assert sif_platform(sif) == "linux/amd64"
    site = load_site(str(VISTA))
    with pytest.raises(UserError) as err:
        BatchBackend().dry_run(vista_spec(sif), site)
    assert str(err.value) == (
        f"{VISTA}: platform: the nodes are linux/arm64, but image {sif} is linux/amd64: its "
        "programs cannot run there; build one for them with `rayhpc build --platform "
        "linux/arm64 --sif`")


def test_an_arm64_sif_on_gh200_nodes_and_a_sif_that_does_not_say_are_run(tmp_path):
    site = load_site(str(VISTA))
    arm = sif_with_record(tmp_path, "linux/arm64")
    assert "apptainer exec" in BatchBackend().dry_run(vista_spec(arm), site)
    unknown = sif_with_record(tmp_path, None)  # a record from before records said it
    assert sif_platform(unknown) is None
    assert "apptainer exec" in BatchBackend().dry_run(vista_spec(unknown), site)
    assert "apptainer exec" in BatchBackend().dry_run(vista_spec(tmp_path / "none.sif"), site)


def test_an_arm64_sif_on_an_amd64_site_is_refused_too(tmp_path):
    sif = sif_with_record(tmp_path, "linux/arm64")
    site = load_site("slurm")
    spec = make_spec("slurm", shared=SHARED, image=str(sif), nodes=2)
    with pytest.raises(UserError) as err:
        BatchBackend().dry_run(spec, site)
    assert str(err.value).startswith(f"{site.path}: platform (not set: linux/amd64): the nodes "
                                     f"are linux/amd64, but image {sif} is linux/arm64")
    assert str(err.value).endswith("`rayhpc build --platform linux/amd64 --sif`")


def test_the_refusal_through_the_command_line_is_one_line_and_nothing_is_written(tmp_path):
    sif = sif_with_record(tmp_path, "linux/amd64")
    shared = tmp_path / "shared"
    result = invoke("launch", "--site", str(VISTA), "--image", str(sif), "--nodes", "2",
                    "--shared", str(shared), "--driver", "python x.py", "--dry-run")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {VISTA}: platform: the nodes are linux/arm64, "
                                     f"but image {sif} is linux/amd64")
    assert not (shared / "runs").exists()


class FakeApi:
    def __init__(self, engine_arch: str, images: dict[str, str]):
        self.engine_arch, self.images = engine_arch, images

    def info(self) -> dict:
        return {"Architecture": self.engine_arch}

    def inspect_image(self, image: str) -> dict:
        return {"Id": "sha256:" + image, "Os": "linux", "Architecture": self.images[image]}


def test_local_nodes_are_the_engines_unless_the_site_file_says(monkeypatch, tmp_path):
    api = FakeApi("x86_64", {"rayhpc/ray:a": "amd64", "rayhpc/ray:b": "arm64"})
    monkeypatch.setattr(manage, "connect", lambda: api)
    local = load_site("local")
    manage.check_platforms([("rayhpc/ray:a", "--image")], local)
    with pytest.raises(UserError) as err:
        manage.check_platforms([("rayhpc/ray:a", "--image"), ("rayhpc/ray:b", "group g: image")],
                               local)
    assert str(err.value) == (
        "this Docker engine (Architecture: x86_64): the nodes are linux/amd64, but image "
        "rayhpc/ray:b is linux/arm64: its programs cannot run there; build one for them with "
        "`rayhpc build --platform linux/amd64`")
    said = tmp_path / "arm-local.yaml"
    said.write_text(Path(local.path).read_text() + "\nplatform: linux/arm64\n")
    manage.check_platforms([("rayhpc/ray:b", "--image")], load_site(str(said)))
    with pytest.raises(UserError, match=rf"^{said}: platform: the nodes are linux/arm64"):
        manage.check_platforms([("rayhpc/ray:a", "--image")], load_site(str(said)))


def test_the_apptainer_runtime_reads_the_platform_label(monkeypatch):
    from rayhpc.launcher.runtimes import apptainer as apptainer_module
    from rayhpc.launcher.runtimes import runtime

    node_runtime = runtime("apptainer")
    output = json.dumps({"data": {"attributes": {"labels": {
        "org.rayhpc.platform": "linux/arm64", "org.rayhpc.ray-version": "2.60.0",
        "org.rayhpc.python-version": "3.11"}}}, "type": "container"})
    monkeypatch.setattr(apptainer_module.Apptainer, "_inspect", lambda self, image: output)
    assert node_runtime.image_platform("x.sif") == "linux/arm64"
    assert node_runtime.image_versions("x.sif") == {"ray": "2.60.0", "python": "3.11"}
    monkeypatch.setattr(apptainer_module.Apptainer, "_inspect", lambda self, image: "")
    assert node_runtime.image_platform("x.sif") is None


# -- the GH200 example profile

def test_vista_gh200_renders_its_gh_partition_one_gpu_and_nv(tmp_path):
    sif = sif_with_record(tmp_path, "linux/arm64")
    site = load_site(str(VISTA))
    assert site.scheduler == "slurm" and site.runtime == "apptainer"
    assert site.option("gpu") == "nvidia" and site.settings["num_gpus"] == 1
    assert PLATFORMS[site.platform].tag_suffix == "-aarch64"
    spec = vista_spec(sif)
    assert spec.num_gpus == 1  # Ray's count: the node's one H200
    text = BatchBackend().dry_run(spec, site)
    assert "#SBATCH --partition=gh\n" in text
    assert "module load tacc-apptainer\n" in text
    assert " apptainer exec --no-home --nv " in text
    # TACC supports neither --gres nor --gpus-per-task, and refuses --mem (the profile's
    # sources): the GPU comes with the node.
    assert "--gres" not in text and "--gpus-per" not in text and "--mem" not in text


def test_vista_gh200_golden():
    spec = make_spec(str(VISTA), shared=SHARED, image=f"{SHARED}/ray-gpu-aarch64.sif", nodes=4,
                     account="PROJ")
    assert_golden("job.vista-gh200.sh", render_job_script(spec, load_site(str(VISTA))))


def test_vista_gh200_queue_table_keeps_gh_dev_for_when_asked():
    site = load_site(str(VISTA))
    assert [q.name for q in site.queues] == ["gh", "gh-dev"]
    assert make_spec(str(VISTA), shared=SHARED, image="/x.sif", nodes=8).queue == "gh"
    with pytest.raises(UserError, match="gh"):
        make_spec(str(VISTA), shared=SHARED, image="/x.sif", nodes=65)


def test_with_suffix_is_idempotent():
    assert with_suffix(with_suffix("a:b", "linux/arm64"), "linux/arm64") == "a:b-aarch64"


@pytest.mark.parametrize("task", ["build", "base"])
def test_an_unknown_platform_flag_is_one_line_before_any_engine(task):
    result = invoke(task, "--platform", "linux/s390x")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == ("error: --platform: 'linux/s390x' is not a platform rayhpc builds "
                             "for; use one of: linux/amd64, linux/arm64\n")
