"""Image recipes: YAML data in recipes/, loaded and validated into plain dataclasses."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rayhpc import RECIPES_DIR
from rayhpc.common.user_error import UserError
from rayhpc.common.yaml_files import check_keys, find_yaml, read_yaml, yaml_names
from rayhpc.containers.platforms import DEFAULT_PLATFORM, check_platform, with_suffix
from rayhpc.containers.requirements import check_requirements, has_control

DEFAULT_RECIPE = "ray"  # the recipe of the image a local launch runs by default
IMAGE_REPOSITORY = "rayhpc"
# platform: the one the recipe's images are built for (linux/amd64 unless it says; `rayhpc
# build --platform` overrides it): containers/platforms.py.
RECIPE_KEYS = ("name", "extends", "kind", "description", "ray_version", "python", "variants",
               "apt", "pip", "env", "labels", "user", "platform")
# How many recipes one chain of `extends:` may hold: deep enough for site -> group -> user,
# short enough that a chain stays readable.
MAX_EXTENDS_DEPTH = 8
# "ray": an image for Ray nodes, on a rayproject/ray base (which brings user ray, uid 1000).
# "tool": a helper image (e.g. the Apptainer converter) on any base; ``user`` is created in it.
KINDS = ("ray", "tool")
VARIANT_KEYS = ("base", "gpu")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_RAY_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")
_PYTHON_RE = re.compile(r"^3\.\d+$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Variant:
    name: str
    base: str
    gpu: bool = False


@dataclass(frozen=True)
class Layer:
    """What one recipe of an `extends:` chain adds, built as its own layers after its parent's
    (so that the parent's layers come from the engine's cache)."""
    apt: tuple[str, ...] = ()
    pip: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    recipe: str = ""


@dataclass(frozen=True)
class Recipe:
    name: str
    ray_version: str
    python: str
    variants: dict[str, Variant]
    kind: str = "ray"
    user: str = ""
    description: str = ""
    apt: tuple[str, ...] = ()
    pip: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    # Set for a recipe that extends another: the parent's name, and each recipe's additions
    # from the root of the chain down (apt, pip and env above are the merged view).
    extends: str = ""
    layers: tuple[Layer, ...] = ()

    @property
    def build_layers(self) -> tuple[Layer, ...]:
        """The layers to render, parent's first; one for a recipe that extends nothing."""
        return self.layers or (Layer(self.apt, self.pip, self.env, self.name),)
    platform: str = DEFAULT_PLATFORM

    @property
    def python_tag(self) -> str:
        """Python as rayproject/ray spells it in tags: 3.11 -> py311."""
        return "py" + self.python.replace(".", "")

    def variant(self, name: str) -> Variant:
        if name not in self.variants:
            raise UserError(
                f"{self.path}: recipe {self.name!r} has no variant {name!r}; "
                f"choose one of: {', '.join(self.variants)} (--variant)")
        return self.variants[name]

    def image_tag(self, variant: str, platform: str | None = None) -> str:
        """Tag of the built image, in Ray's own scheme: rayhpc/ray:2.60.0-py311-cpu (tool
        images: rayhpc/<name>:<variant>), -aarch64 appended for linux/arm64 as Ray does;
        ``platform``: the build's (default: the recipe's)."""
        self.variant(variant)
        if self.kind == "tool":
            tag = f"{IMAGE_REPOSITORY}/{self.name}:{variant}"
        else:
            tag = f"{IMAGE_REPOSITORY}/{self.name}:{self.ray_version}-{self.python_tag}-{variant}"
        return with_suffix(tag, platform or self.platform)

    def oci_labels(self, variant: str) -> dict[str, str]:
        """Static labels written into the Dockerfile (dynamic ones come at build time)."""
        labels = {
            "org.opencontainers.image.title": f"{IMAGE_REPOSITORY}/{self.name}",
            "org.opencontainers.image.base.name": self.variant(variant).base,
            "org.rayhpc.recipe": self.name,
            "org.rayhpc.variant": variant,
            # Whether the image carries a GPU stack (CUDA): what sites' GPU flags need.
            "org.rayhpc.gpu": str(self.variant(variant).gpu).lower(),
        }
        if self.kind == "ray":
            labels["org.rayhpc.ray-version"] = self.ray_version
            labels["org.rayhpc.python-version"] = self.python
        if self.extends:
            labels["org.rayhpc.extends"] = self.extends
        if self.description:
            labels["org.opencontainers.image.description"] = self.description
        labels.update(self.labels)
        return labels


def list_recipes(recipes_dir: Path = RECIPES_DIR) -> list[str]:
    """Names of the project's recipes (recipes/*.yaml)."""
    return yaml_names(recipes_dir)


def load_recipe(name_or_path: str, recipes_dir: Path = RECIPES_DIR) -> Recipe:
    """A recipe by name (recipes/<name>.yaml) or by the path of a YAML file."""
    path = find_yaml(name_or_path, recipes_dir, "recipe", "--recipe")
    return _load(path, recipes_dir, ())


def _load(path: Path, recipes_dir: Path, below: tuple[Path, ...]) -> Recipe:
    """The recipe of ``path``; ``below``: the files that extend it, nearest last."""
    data = read_yaml(path)
    if not isinstance(data, dict) or "extends" not in data:
        return parse_recipe(data, path)
    chain = (*below, path)
    parent_path = parent_file(data["extends"], path, recipes_dir)
    seen = [p.resolve() for p in chain]
    if parent_path.resolve() in seen:
        loop = chain[seen.index(parent_path.resolve()):]
        names = " -> ".join(str(p) for p in (*loop, parent_path))
        if len(loop) == 1:
            raise UserError(f"{path}: extends: the recipe extends itself ({names}); name "
                            "another recipe, or remove `extends`")
        raise UserError(f"{path}: extends: the recipes extend each other in a circle ({names});"
                        " remove `extends` from one of them")
    if len(chain) >= MAX_EXTENDS_DEPTH:
        raise UserError(f"{chain[0]}: extends: more than {MAX_EXTENDS_DEPTH} recipes in one chain "
                        f"({' -> '.join(p.name for p in (*chain, parent_path))}); extend a "
                        "recipe nearer the root")
    return extend_recipe(_load(parent_path, recipes_dir, chain), data, path)


def parent_file(value: Any, path: Path, recipes_dir: Path = RECIPES_DIR) -> Path:
    """The file `extends:` names: a bundled recipe by name (``ray``), or a YAML path relative
    to the extending file's directory."""
    bundled = ", ".join(yaml_names(recipes_dir))
    if not isinstance(value, str) or not value.strip() or has_control(value):
        raise UserError(f"{path}: extends: give a bundled recipe name ({bundled}) or the path "
                        "of a recipe YAML file, relative to this file")
    value = value.strip()
    if "/" in value or value.endswith((".yaml", ".yml")):
        parent = path.parent / value
        if not parent.is_file():
            raise UserError(f"{path}: extends: no recipe file {parent} (a path is relative to "
                            f"{path.parent}); fix the path, or name a bundled recipe: {bundled}")
        return parent
    parent = recipes_dir / f"{value}.yaml"
    if not parent.is_file():
        raise UserError(f"{path}: extends: no bundled recipe {value!r}; name one of: {bundled}, "
                        "or give the path of a recipe YAML file (e.g. ./base.yaml)")
    return parent


def extend_recipe(parent: Recipe, data: dict, path: Path) -> Recipe:
    """The recipe of ``data`` (which has `extends:`) on top of ``parent``: it inherits
    everything; apt and pip are appended (parent's first, duplicates dropped), env and labels
    merged (this recipe wins), variants chosen (see _child_variants)."""
    check_keys(data, RECIPE_KEYS, path, "")
    if parent.kind != "ray":
        raise UserError(f"{path}: extends: {parent.path} is a tool recipe (kind: tool); only "
                        "Ray recipes can be extended: extend ray or another Ray recipe")
    name = _required_str(data, "name", path)
    if not _NAME_RE.match(name):
        raise UserError(f"{path}: name: {name!r} must be lower-case letters, digits, '.', '-', '_'")
    if data.get("kind", "ray") != "ray":
        raise UserError(f"{path}: kind: an extending recipe is a Ray recipe like its parent "
                        f"{parent.name}; remove kind")
    if "user" in data:
        raise UserError(f"{path}: user: only tool recipes name a user; Ray images run as "
                        "the base image's user ray (uid 1000)")
    for key in ("ray_version", "python"):
        if key in data and str(data[key]).strip() != getattr(parent, key):
            raise UserError(f"{path}: {key}: {str(data[key]).strip()!r} differs from the "
                            f"parent's {getattr(parent, key)} (extends: {parent.name}): the "
                            f"image is built on its parent's Ray; remove {key} or make it "
                            f"{getattr(parent, key)}")
    apt = _str_list(data, "apt", path)
    pip = check_requirements(_str_list(data, "pip", path), parent.ray_version, f"{path}: pip")
    env = _str_map(data, "env", path, key_re=_ENV_NAME_RE)
    new_apt = tuple(dict.fromkeys(a for a in apt if a not in parent.apt))
    new_pip = tuple(p for p in pip if p not in parent.pip)
    layer = Layer(new_apt, new_pip, env, name)
    return Recipe(
        name=name,
        kind="ray",
        description=str(data.get("description") or "").strip() or parent.description,
        ray_version=parent.ray_version,
        python=parent.python,
        variants=_child_variants(data.get("variants"), parent, path),
        apt=parent.apt + new_apt,
        pip=parent.pip + new_pip,
        env={**parent.env, **env},
        labels={**parent.labels, **_str_map(data, "labels", path)},
        path=path,
        extends=parent.name,
        layers=parent.build_layers + ((layer,) if new_apt or new_pip or env else ()),
        platform=check_platform(data.get("platform", parent.platform), f"{path}: platform"),
    )


def _child_variants(raw: Any, parent: Recipe, path: Path) -> dict[str, Variant]:
    """No `variants:`: the parent's, all of them. Otherwise exactly the variants listed: a name
    with no value (``gpu:`` or ``gpu: {}``) takes the parent's variant of that name; ``base``
    or ``gpu`` given replace the parent's (a name the parent lacks needs a base)."""
    if raw is None:
        return dict(parent.variants)
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{path}: variants: list the variants to build, e.g. 'gpu: {{}}' for "
                        f"the parent's gpu variant (the parent has: "
                        f"{', '.join(parent.variants)}), or leave variants out for all of them")
    merged: dict[Any, Any] = {}
    for name, spec in raw.items():
        inherited = parent.variants.get(name) if isinstance(name, str) else None
        if spec is None or spec == {}:
            if inherited is None:
                raise UserError(f"{path}: variants.{name}: the parent {parent.name} has no "
                                f"variant {name!r} to take; give its base (base: ...) or list "
                                f"one of: {', '.join(parent.variants)}")
            spec = {}
        if not isinstance(spec, dict):
            raise UserError(f"{path}: variants.{name}: expected a mapping with 'base' (and "
                            "'gpu'), or nothing to take the parent's variant")
        base = {"base": inherited.base, "gpu": inherited.gpu} if inherited else {}
        merged[name] = {**base, **spec}
    return _parse_variants(merged, path, parent.ray_version, parent.python_tag)


def parse_recipe(data: Any, path: Path) -> Recipe:
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe is a YAML mapping with keys {', '.join(RECIPE_KEYS)}")
    check_keys(data, RECIPE_KEYS, path, "")
    name = _required_str(data, "name", path)
    if not _NAME_RE.match(name):
        raise UserError(f"{path}: name: {name!r} must be lower-case letters, digits, '.', '-', '_'")
    kind = data.get("kind", "ray")
    if kind not in KINDS:
        raise UserError(f"{path}: kind: {kind!r} is not one of: {', '.join(KINDS)}")
    ray_version = python = user = ""
    if kind == "ray":
        ray_version = _required_str(data, "ray_version", path)
        if not _RAY_VERSION_RE.match(ray_version):
            raise UserError(f"{path}: ray_version: {ray_version!r} is not a release like 2.60.0")
        python = _required_str(data, "python", path)
        if not _PYTHON_RE.match(python):
            raise UserError(f"{path}: python: {python!r} is not a version like 3.11")
        if "user" in data:
            raise UserError(f"{path}: user: only tool recipes name a user; Ray images run as "
                            "the base image's user ray (uid 1000)")
    else:
        for key in ("ray_version", "python"):
            if key in data:
                raise UserError(f"{path}: {key}: not used by tool recipes; remove it")
        user = str(data.get("user") or "")
        if user and not _NAME_RE.match(user):
            raise UserError(f"{path}: user: {user!r} is not a valid user name")
    if "extends" in data:  # parse_recipe is for a whole recipe; load_recipe follows extends
        raise UserError(f"{path}: extends: load this recipe by its file (load_recipe)")
    variants = _parse_variants(data.get("variants"), path, ray_version,
                               "py" + python.replace(".", ""))
    return Recipe(
        name=name,
        kind=kind,
        user=user,
        description=str(data.get("description") or "").strip(),
        ray_version=ray_version,
        python=python,
        variants=variants,
        apt=_str_list(data, "apt", path),
        pip=check_requirements(_str_list(data, "pip", path), ray_version, f"{path}: pip"),
        env=_str_map(data, "env", path, key_re=_ENV_NAME_RE),
        labels=_str_map(data, "labels", path),
        path=path,
        platform=check_platform(data.get("platform", DEFAULT_PLATFORM), f"{path}: platform"),
    )


def _parse_variants(raw: Any, path: Path, ray_version: str, python_tag: str) -> dict[str, Variant]:
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{path}: variants: give at least one variant, e.g. "
                        f"'cpu: {{base: rayproject/ray:{ray_version}-{python_tag}-cpu}}'")
    variants = {}
    for name, spec in raw.items():
        where = f"variants.{name}"
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise UserError(f"{path}: {where}: variant names are lower-case words like cpu, gpu")
        if not isinstance(spec, dict):
            raise UserError(f"{path}: {where}: expected a mapping with 'base' (and 'gpu')")
        check_keys(spec, VARIANT_KEYS, path, where + ".")
        base = spec.get("base")
        if not isinstance(base, str) or not base.strip() or has_control(base.strip()):
            raise UserError(f"{path}: {where}.base: give the base image, e.g. "
                            f"rayproject/ray:{ray_version}-{python_tag}-{name}")
        # A rayproject/ray base must match the pinned Ray and Python, or the image lies in its tag.
        pinned = f"{ray_version}-{python_tag}"
        if ray_version and base.startswith("rayproject/ray:") and not base.split(":", 1)[
                1].startswith(pinned):
            raise UserError(f"{path}: {where}.base: {base} does not match ray_version "
                            f"{ray_version} and python {python_tag}; use "
                            f"rayproject/ray:{ray_version}-{python_tag}-<flavour>")
        gpu = spec.get("gpu", False)
        if not isinstance(gpu, bool):
            raise UserError(f"{path}: {where}.gpu: must be true or false")
        variants[name] = Variant(name=name, base=base.strip(), gpu=gpu)
    return variants


def _required_str(data: dict, key: str, path: Path) -> str:
    value = data.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{path}: {key}: required (a string)")
    return value.strip()


def _str_list(data: dict, key: str, path: Path) -> tuple[str, ...]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise UserError(f"{path}: {key}: must be a list of package names")
    for entry in value:
        if has_control(entry.strip()):
            raise UserError(f"{path}: {key}: {entry.strip()!r} holds a line break or another "
                            "control character; give one package per entry")
    return tuple(v.strip() for v in value)



def _str_map(data: dict, key: str, path: Path, key_re: re.Pattern | None = None) -> dict[str, str]:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise UserError(f"{path}: {key}: must be a mapping of names to values")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str) or (key_re and not key_re.match(k)):
            raise UserError(f"{path}: {key}.{k}: not a valid name")
        if isinstance(v, (dict, list)) or v is None:
            raise UserError(f"{path}: {key}.{k}: value must be a string or number")
        out[k] = str(v)
    return out
