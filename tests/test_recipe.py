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
