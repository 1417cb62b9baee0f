"""Render Dockerfiles from recipes: pure functions, data in, text out (golden-tested).

Layer order follows how often things change: system packages first, then pip packages, then
environment and labels, so a change to the pip list rebuilds only the last layers. A recipe that
extends another renders its parent's steps first, unchanged, and its own additions as new layers
after them; packages added for one build (`--pip`, `--requirements`) come last, so both reuse
every layer of what they build on from the engine's cache.
"""

from __future__ import annotations

import json
import shlex

from rayhpc.containers.recipe import Layer, Recipe
from rayhpc.containers.requirements import EXTRA_PIP_LABEL, has_control
from rayhpc.containers.secrets import FETCH_SECRETS, FORGET_SECRETS, SECRETS_ARG

# The user of rayproject/ray images (uid 1000); the stand-in base creates the same.
IMAGE_USER = "ray"
IMAGE_UID = 1000


def apt_install(packages: tuple[str, ...], apt_options: str = "") -> list[str]:
    apt = f"apt-get {apt_options} " if apt_options else "apt-get "
    return [f"{apt}update -q",
            f"DEBIAN_FRONTEND=noninteractive {apt}install -y -q --no-install-recommends "
            + quoted_words(packages),
            "rm -rf /var/lib/apt/lists/*"]


def pip_install(packages: tuple[str, ...], ray_version: str = "") -> str:
    """``ray_version``: installed together with the packages, so that pip's resolver keeps the
    base's Ray and honours Ray's own requirements (instead of replacing Ray, or breaking it)."""
    pinned = (f"ray=={ray_version}",) if ray_version else ()
    return "python -m pip install --no-cache-dir " + quoted_words((*pinned, *packages))


def quoted_words(words: tuple[str, ...]) -> str:
    """Shell words on one line: shlex.quote keeps a line break, which would end the RUN
    instruction and start another (the recipe loader refuses such entries already)."""
    bad = [word for word in words if has_control(word)]
    if bad:
        raise ValueError(f"a package name with a control character: {bad[0]!r}")
    return " ".join(shlex.quote(word) for word in words)


def add_user(name: str, group: str = "") -> str:
    group_option = f" --gid {group}" if group else ""
    return f"useradd --uid {IMAGE_UID}{group_option} --create-home --shell /bin/bash {name}"


def render_dockerfile(recipe: Recipe, variant: str, base: str | None = None,
                      extra_pip: tuple[str, ...] = ()) -> str:
    """The Dockerfile of one recipe variant; ``base`` overrides the variant's base image;
    ``extra_pip``: packages added for this build, one layer after the recipe's (and named in a
    label)."""
    chosen = recipe.variant(variant)
    lines = [
        f"# Rendered by rayhpc from recipe {recipe.name!r}, variant {variant!r}.",
        "# Do not edit: change the recipe and run `rayhpc build`.",
        f"FROM {base or chosen.base}",
        "",
        "# Build-only secrets (CA bundle, pip index) arrive over a loopback socket and are",
        "# deleted in the same RUN step: they never reach a layer.",
        f"ARG {SECRETS_ARG}=",
    ]
    for index, layer in enumerate(recipe.build_layers):
        if index:
            lines += ["", f"# Added by recipe {layer.recipe!r}: new layers after its parent's."]
        lines += _layer_lines(recipe, layer, first=index == 0)
    if extra_pip:
        lines += ["", "# Added for this build only (--pip, --requirements).",
                  run_steps([FETCH_SECRETS, pip_install(extra_pip, recipe.ray_version),
                             FORGET_SECRETS])]
    labels = recipe.oci_labels(variant)
    if extra_pip:
        labels[EXTRA_PIP_LABEL] = " ".join(extra_pip)
    lines += ["", label_instruction(labels)]
    if recipe.kind == "tool" and recipe.user:
        lines.append(f"USER {recipe.user}")
    return "\n".join(lines) + "\n"


def _layer_lines(recipe: Recipe, layer: Layer, first: bool) -> list[str]:
    lines: list[str] = []
    if layer.apt:
        lines += ["", "USER root",
                  run_steps([FETCH_SECRETS, *apt_install(layer.apt), FORGET_SECRETS])]
    if first and recipe.kind == "tool" and recipe.user:
        lines.append(f"RUN {add_user(recipe.user)}")
    if recipe.kind == "ray" and (first or layer.apt):
        lines += ["", f"USER {IMAGE_USER}"]
    if layer.pip:
        lines.append(run_steps([FETCH_SECRETS, pip_install(layer.pip, recipe.ray_version),
                                FORGET_SECRETS]))
    if layer.env:
        lines += ["", env_instruction(layer.env)]
    return lines


def render_portable_dockerfile(recipe: Recipe, variant: str, base: str | None = None,
                               apt_options: str = "") -> str:
    """The recipe's steps with no build plumbing (no USER, ARG, secrets or LABEL): the input for
    converters to other formats, which mistranslate those (spython turns USER into `su -`)."""
    lines = [f"FROM {base or recipe.variant(variant).base}"]
    for index, layer in enumerate(recipe.build_layers):
        if layer.apt:
            lines.append(run_steps(apt_install(layer.apt, apt_options)))
        if index == 0 and recipe.kind == "tool" and recipe.user:
            lines.append(f"RUN {add_user(recipe.user)}")
        if layer.pip:
            lines.append(f"RUN {pip_install(layer.pip, recipe.ray_version)}")
        if layer.env:
            lines.append(env_instruction(layer.env))
    return "\n".join(lines) + "\n"


def run_steps(commands: list[str]) -> str:
    """One RUN instruction of several commands, one per line."""
    return "RUN " + " \\\n && ".join(commands)


def env_instruction(env: dict[str, str]) -> str:
    return "ENV " + " \\\n    ".join(f"{k}={json.dumps(v)}" for k, v in env.items())


def label_instruction(labels: dict[str, str]) -> str:
    return "LABEL " + " \\\n      ".join(f"{json.dumps(k)}={json.dumps(v)}"
                                        for k, v in labels.items())
