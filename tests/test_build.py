"""A real build of the cpu variant on the stand-in base (real engine, real pip through the
network's intercepting proxy, which only works when the CA bundle reaches the build)."""

import contextlib
import subprocess

import docker.errors
import pytest

from rayhpc.containers.engine import git_revision
from tests.cli import invoke
from tests.image_scan import layers_containing, metadata_containing, save_image, tar_bytes

pytestmark = pytest.mark.docker


def run_in(image: str, *cmd: str) -> str:
    return subprocess.run(["docker", "run", "--rm", image, *cmd], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_build_prints_tag_last_and_ray_is_the_pinned_version(built_image):
    image, result = built_image
    assert result.stdout.strip().splitlines()[-1] == image
    assert run_in(image, "ray", "--version") == "ray, version 2.60.0"
    assert run_in(image, "python", "-c", "import tqdm, numpy; print('ok')") == "ok"


def test_image_runs_as_uid_1000(built_image, docker_api):
    image, _ = built_image
    assert run_in(image, "id", "-u") == "1000"
    assert docker_api.inspect_image(image)["Config"]["User"] == "ray"


def test_image_labels(built_image, docker_api, standin_base):
    image, _ = built_image
    labels = docker_api.inspect_image(image)["Config"]["Labels"]
    assert labels["org.rayhpc.ray-version"] == "2.60.0"
    assert labels["org.rayhpc.recipe"] == "ray"
    assert labels["org.rayhpc.variant"] == "cpu"
    assert labels["org.opencontainers.image.revision"] == git_revision()
    assert labels["org.opencontainers.image.base.name"] == standin_base


def test_ca_bundle_is_in_no_layer_history_or_config(built_image, docker_api, standin_base,
                                                   marker_ca_bundle, tmp_path):
    image, result = built_image
    bundle, marker = marker_ca_bundle
    assert f"CA bundle for this build only: {bundle} (--ca-bundle)" in result.stdout
    archive = save_image(docker_api, image, tmp_path / "image.tar")
    base_layers = len(docker_api.inspect_image(standin_base)["RootFS"]["Layers"])
    assert layers_containing(archive, marker.encode(), skip_layers=base_layers) == []
    assert layers_containing(archive, b"rayhpc-secrets/ca.pem", skip_layers=base_layers) == []
    assert metadata_containing(docker_api, image, marker) == []
    assert metadata_containing(docker_api, image, "BEGIN CERTIFICATE") == []


def test_layer_scan_finds_a_file_that_a_later_layer_deletes(tmp_path):
    """The scanner itself can fail: a secret copied in one layer and deleted later is found."""
    archive = tmp_path / "saved.tar"
    archive.write_bytes(tar_bytes({
        "a/layer.tar": tar_bytes({"tmp/ca.pem": b"xx SECRET xx"}),
        "b/layer.tar": tar_bytes({"tmp/.wh.ca.pem": b""}),
        "manifest.json": b'[{"Layers": ["a/layer.tar", "b/layer.tar"]}]'}))
    assert layers_containing(archive, b"SECRET") == ["a/layer.tar:tmp/ca.pem"]
    assert layers_containing(archive, b"SECRET", skip_layers=1) == []


def test_missing_base_points_to_invoke_base(docker_api):
    result = invoke("build", "--base", "rayhpc-test/no-such-base:1")
    assert result.returncode == 2
    assert "rayhpc-test/no-such-base:1 is not here and cannot be pulled" in result.stderr
    assert "rayhpc base" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_rebuild_reuses_layers_and_no_cache_makes_them_anew(docker_api, standin_base,
                                                              tmp_path):
    tag = "rayhpc-test/cache:1"
    recipe = tmp_path / "cache.yaml"
    recipe.write_text(f"name: cache\nkind: tool\nvariants:\n  default:\n    base: {standin_base}"
                      "\nenv:\n  CACHE_TEST: '1'\n")
    args = ("build", "--recipe", str(recipe), "--variant", "default", "--tag", tag)
    try:
        ids = []
        for extra in ((), (), ("--no-cache",)):
            result = invoke(*args, *extra)
            assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
            ids.append(docker_api.inspect_image(tag)["Id"])
        assert ids[1] == ids[0], "an unchanged recipe should come from the cache"
        assert ids[2] != ids[0], "--no-cache should build every layer anew"
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_api.remove_image(tag, force=True)


def _remove(docker_api, *tags: str) -> None:
    for tag in tags:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_api.remove_image(tag, force=True)


def _layers(docker_api, image: str) -> list[str]:
    return docker_api.inspect_image(image)["RootFS"]["Layers"]


# Small packages with no dependencies that neither the base (Ray's) nor the ray recipe has.
ADDED_BY_FLAG, ADDED_BY_FILE = "humanize", "tabulate"


def test_pip_adds_one_layer_on_the_recipe_image_under_its_own_tag(docker_api, standin_base,
                                                                 tmp_path):
    plain = "rayhpc-test/plus:plain"
    image = ""
    requirements = tmp_path / "driver-requirements.txt"
    requirements.write_text(f"# what the driver needs\n{ADDED_BY_FILE}\n\n")
    try:
        result = invoke("build", "--base", standin_base, "--tag", plain)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        plain_id = docker_api.inspect_image(plain)["Id"]
        absent = f"import importlib.util as u; print(u.find_spec('{ADDED_BY_FLAG}'), " \
            f"u.find_spec('{ADDED_BY_FILE}'))"
        assert run_in(plain, "python", "-c", absent) == "None None"
        result = invoke("build", "--base", standin_base, "--pip", ADDED_BY_FLAG,
                        "--requirements", str(requirements))
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        image = result.stdout.strip().splitlines()[-1]
        # A tag of its own, said before the build; the recipe's image is left as it was.
        assert image.startswith("rayhpc/ray:2.60.0-py311-cpu-plus-"), image
        assert f"image tag {image} (--tag to choose another)" in result.stdout
        assert docker_api.inspect_image(plain)["Id"] == plain_id
        assert run_in(image, "python", "-c", f"import {ADDED_BY_FLAG}, {ADDED_BY_FILE}; "
                      "print('ok')") == "ok"
        assert run_in(image, "ray", "--version") == "ray, version 2.60.0"
        assert docker_api.inspect_image(image)["Config"]["Labels"][
            "org.rayhpc.extra-pip"] == f"{ADDED_BY_FLAG} {ADDED_BY_FILE}"
        # Every layer of the recipe's image, from the cache, and one more.
        base_layers = _layers(docker_api, plain)
        assert _layers(docker_api, image)[:len(base_layers)] == base_layers
        assert len(_layers(docker_api, image)) == len(base_layers) + 1
    finally:
        _remove(docker_api, plain, *([image] if image else []))


def test_a_conflict_with_the_bases_ray_is_refused_before_any_build(docker_api, standin_base):
    # Ray requires msgpack>=1.0,<2 (ray-project/ray python/setup.py; ray 2.60.0's metadata).
    tag = "rayhpc-test/conflict:1"
    probes = {"ancestor": standin_base}
    before = {c["Id"] for c in docker_api.containers(all=True, filters=probes)}
    result = invoke("build", "--base", standin_base, "--pip", "msgpack<1.0", "--tag", tag)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: --pip/--requirements: msgpack<1.0 cannot be installed "
                               "with the base's Ray 2.60.0"), lines[0]
    assert "msgpack" in lines[0].split("(pip: ", 1)[1]  # pip's own cause, named
    assert "Step 1/" not in result.stdout  # no image build started
    with pytest.raises(docker.errors.ImageNotFound):
        docker_api.inspect_image(tag)
    # The resolver's throw-away container is gone.
    assert {c["Id"] for c in docker_api.containers(all=True, filters=probes)} == before


def test_an_extending_recipe_builds_on_every_layer_of_its_parent(docker_api, standin_base,
                                                                tmp_path):
    parent, child = "rayhpc-test/extends:parent", "rayhpc-test/extends:child"
    recipe = tmp_path / "child.yaml"
    recipe.write_text(f"name: child\nextends: ray\nvariants:\n  cpu:\npip: [{ADDED_BY_FILE}]\n"
                      "env: {CHILD: '1'}\n")
    try:
        for args in (("--tag", parent), ("--recipe", str(recipe), "--tag", child)):
            result = invoke("build", "--base", standin_base, *args)
            assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        parent_layers = _layers(docker_api, parent)
        assert _layers(docker_api, child)[:len(parent_layers)] == parent_layers
        assert len(_layers(docker_api, child)) == len(parent_layers) + 1
        assert run_in(child, "python", "-c", f"import {ADDED_BY_FILE}, tqdm, os; "
                      "print(os.environ['CHILD'])") == "1"
        labels = docker_api.inspect_image(child)["Config"]["Labels"]
        assert labels["org.rayhpc.recipe"] == "child" and labels["org.rayhpc.extends"] == "ray"
    finally:
        _remove(docker_api, child, parent)
