"""Recipes: the shipped one loads; bad ones fail with one line naming file and field."""

from pathlib import Path

import pytest

from rayhpc.common.user_error import UserError
from rayhpc.containers.recipe import load_recipe, parse_recipe

GOOD = {
    "name": "demo", "ray_version": "2.60.0", "python": "3.11",
    "variants": {"cpu": {"base": "rayproject/ray:2.60.0-py311-cpu"}},
}


def test_shipped_recipe_has_cpu_and_gpu_pinned_to_one_ray_and_python():
    recipe = load_recipe("ray")
    assert recipe.ray_version == "2.60.0" and recipe.python == "3.11"
    assert recipe.variant("cpu").base == "rayproject/ray:2.60.0-py311-cpu"
    assert recipe.variant("gpu").base == "rayproject/ray:2.60.0-py311-gpu"
    assert recipe.variant("gpu").gpu and not recipe.variant("cpu").gpu
    assert recipe.image_tag("cpu") == "rayhpc/ray:2.60.0-py311-cpu"
    assert recipe.image_tag("gpu") == "rayhpc/ray:2.60.0-py311-gpu"


def test_labels_carry_ray_version_recipe_and_variant():
    labels = load_recipe("ray").oci_labels("gpu")
    assert labels["org.rayhpc.ray-version"] == "2.60.0"
    assert labels["org.rayhpc.recipe"] == "ray"
    assert labels["org.rayhpc.variant"] == "gpu"


@pytest.mark.parametrize("change, message", [
    ({"nmae": "x"}, "nmae: unknown key; did you mean 'name'?"),
    ({"ray_version": "latest"}, "ray_version: 'latest' is not a release"),
    ({"python": "311"}, "python: '311' is not a version"),
    ({"variants": {}}, "variants: give at least one variant"),
    ({"variants": {"cpu": {"bsae": "x"}}}, "variants.cpu.bsae: unknown key; did you mean 'base'?"),
    ({"variants": {"cpu": {"base": "rayproject/ray:2.9.0-py311-cpu"}}},
     "does not match ray_version 2.60.0"),
    ({"variants": {"gpu": {"base": "x:y", "gpu": "yes"}}}, "variants.gpu.gpu: must be true"),
    ({"pip": "numpy"}, "pip: must be a list"),
    ({"env": {"1BAD": "x"}}, "env.1BAD: not a valid name"),
])
def test_bad_recipe_names_file_and_field(change, message):
    path = Path("recipes/demo.yaml")
    with pytest.raises(UserError) as err:
        parse_recipe({**GOOD, **change}, path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_unknown_variant_lists_the_known_ones():
    with pytest.raises(UserError, match="no variant 'tpu'; choose one of: cpu, gpu"):
        load_recipe("ray").image_tag("tpu")


def test_unknown_recipe_lists_known_recipes():
    with pytest.raises(UserError,
                       match=r"unknown recipe 'nope' \(--recipe\); known recipes: .*ray"):
        load_recipe("nope")


def test_malformed_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(UserError, match=f"{bad}: not valid YAML"):
        load_recipe(str(bad))


# --- extends: -------------------------------------------------------------------------------

def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_an_extending_recipe_inherits_and_appends(tmp_path):
    child = load_recipe(str(write(tmp_path / "child.yaml", (
        "name: child\nextends: ray\n"
        "apt: [procps, htop]\n"            # procps is the parent's: dropped
        "pip: [tqdm, six]\n"               # tqdm is the parent's: dropped
        "env: {RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S: '5', MINE: x}\n"
        "labels: {org.opencontainers.image.source: child}\n"))))
    ray = load_recipe("ray")
    assert (child.ray_version, child.python, child.kind) == (ray.ray_version, ray.python, "ray")
    assert child.variants == ray.variants
    assert child.apt == (*ray.apt, "htop") and child.pip == (*ray.pip, "six")
    assert child.env == {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "5", "MINE": "x"}
    assert child.labels["org.opencontainers.image.source"] == "child"
    assert child.description == ray.description
    assert child.image_tag("gpu") == "rayhpc/child:2.60.0-py311-gpu"
    # The parent's layer first, then the child's additions only.
    assert [(la.recipe, la.apt, la.pip) for la in child.build_layers] == [
        ("ray", ray.apt, ray.pip), ("child", ("htop",), ("six",))]
    assert child.oci_labels("cpu")["org.rayhpc.extends"] == "ray"


def test_variants_listed_are_exactly_the_ones_built(tmp_path):
    child = load_recipe(str(write(tmp_path / "c.yaml", (
        "name: c\nextends: ray\nvariants:\n  gpu:\n"
        "  cu128: {base: rayproject/ray:2.60.0-py311-cu128, gpu: true}\n"))))
    assert list(child.variants) == ["gpu", "cu128"]
    assert child.variant("gpu") == load_recipe("ray").variant("gpu")
    with pytest.raises(UserError, match="no variant 'cpu'; choose one of: gpu, cu128"):
        child.image_tag("cpu")
    # Keys given replace the parent's, the rest is the parent's.
    other = load_recipe(str(write(tmp_path / "d.yaml", (
        "name: d\nextends: ray\nvariants:\n  gpu: {base: rayproject/ray:2.60.0-py311-cu124}\n"))))
    assert other.variant("gpu").base.endswith("cu124") and other.variant("gpu").gpu


def test_a_chain_of_paths_relative_to_each_file(tmp_path):
    write(tmp_path / "lab" / "base.yaml", "name: lab\nextends: ray\npip: [six]\n")
    write(tmp_path / "me" / "mine.yaml", "name: mine\nextends: ../lab/base.yaml\npip: [tqdm, "
          "'ray[default]>=2.50']\n")
    mine = load_recipe(str(tmp_path / "me" / "mine.yaml"))
    assert [la.recipe for la in mine.build_layers] == ["ray", "lab", "mine"]
    assert mine.build_layers[-1].pip == ("ray[default]>=2.50",)
    assert mine.extends == "lab"


@pytest.mark.parametrize("text, message", [
    ("name: c\nextends: c.yaml\n",
     "extends: the recipe extends itself ({d}/c.yaml -> {d}/c.yaml); name another"),
    ("name: c\nextends: nope\n", "extends: no bundled recipe 'nope'; name one of: "),
    ("name: c\nextends: sub/nope.yaml\n", "extends: no recipe file {d}/sub/nope.yaml"),
    ("name: c\nextends: apptainer\n", "extends: {r}/apptainer.yaml is a tool recipe"),
    ("name: c\nextends: ray\nray_version: '2.59.0'\n",
     "ray_version: '2.59.0' differs from the parent's 2.60.0 (extends: ray)"),
    ("name: c\nextends: ray\npython: '3.12'\n", "python: '3.12' differs from the parent's"),
    ("extends: ray\n", "name: required"),
    ("name: c\nextends: ray\nkind: tool\n", "kind: an extending recipe is a Ray recipe"),
    ("name: c\nextends: ray\nvariants:\n  tpu:\n", "variants.tpu: the parent ray has no "
     "variant 'tpu' to take; give its base (base: ...) or list one of: cpu, gpu"),
    ("name: c\nextends: ray\nvariants:\n  gpu: {base: rayproject/ray:2.9.0-py311-gpu}\n",
     "variants.gpu.base: rayproject/ray:2.9.0-py311-gpu does not match ray_version 2.60.0"),
    ("name: c\nextends: ray\npip: ['ray==2.59.0']\n",
     "pip: 'ray==2.59.0' excludes the base's Ray 2.60.0"),
    ("name: c\nextends: ray\nnmae: x\n", "nmae: unknown key; did you mean 'name'?"),
])
def test_bad_extends_is_one_line_naming_file_and_field(tmp_path, text, message):
    from rayhpc import RECIPES_DIR
    path = write(tmp_path / "c.yaml", text)
    with pytest.raises(UserError) as err:
        load_recipe(str(path))
    assert str(err.value).startswith(f"{path}: ")
    assert message.format(d=tmp_path, r=RECIPES_DIR) in str(err.value)
    assert "\n" not in str(err.value)


def test_a_circle_through_two_files_names_the_chain(tmp_path):
    a = write(tmp_path / "a.yaml", "name: a\nextends: b.yaml\n")
    write(tmp_path / "b.yaml", "name: b\nextends: ./a.yaml\n")
    with pytest.raises(UserError, match=r"b.yaml: extends: the recipes extend each other in a "
                                        r"circle \(.*/a.yaml -> .*/b.yaml -> .*/a.yaml\)"):
        load_recipe(str(a))


def test_a_chain_longer_than_the_bound_is_refused(tmp_path):
    for i in range(10):
        parent = "ray" if i == 0 else f"r{i - 1}.yaml"
        write(tmp_path / f"r{i}.yaml", f"name: r{i}\nextends: {parent}\n")
    assert load_recipe(str(tmp_path / "r6.yaml")).extends == "r5"  # 8 recipes with ray
    with pytest.raises(UserError, match=r"r7.yaml: extends: more than 8 recipes in one chain "
                                        r"\(r7.yaml -> r6.yaml .* -> r0.yaml -> ray.yaml\)"):
        load_recipe(str(tmp_path / "r7.yaml"))


@pytest.mark.parametrize("entry, message", [
    ("ray<2.60", "'ray<2.60' excludes the base's Ray 2.60.0; drop the version"),
    ("ray[default]==2.9.0", "excludes the base's Ray 2.60.0"),
    ("ray @ https://example.org/ray.whl", "installs Ray from a URL over the base's Ray 2.60.0"),
    ("-e .", "'-e .' is a pip option, not a requirement"),
    ("tqdm >>= 1", "is not a requirement pip understands"),
])
def test_a_recipe_pip_entry_is_a_requirement_that_keeps_the_base_ray(entry, message):
    with pytest.raises(UserError) as err:
        parse_recipe({**GOOD, "pip": [entry]}, Path("recipes/demo.yaml"))
    assert str(err.value).startswith("recipes/demo.yaml: pip: ")
    assert message in str(err.value)


@pytest.mark.parametrize("entry", ["ray", "ray[default]", "ray>=2.50,<3", "Ray==2.60.0",
                                   "tqdm; python_version >= '3.8'"])
def test_requirements_that_allow_the_base_ray_pass(entry):
    assert parse_recipe({**GOOD, "pip": [entry]}, Path("x.yaml")).pip == (entry,)
