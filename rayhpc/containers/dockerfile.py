"""Render Dockerfiles from recipes: pure functions, data in, text out (golden-tested).

Layer order follows how often things change: system packages first, then pip packages, then
environment and labels, so a change to the pip list rebuilds only the last layers.
"""

from __future__ import annotations

import json
import shlex

from rayhpc.containers.recipe import Recipe, has_control
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


def pip_install(packages: tuple[str, ...]) -> str:
    return "python -m pip install --no-cache-dir " + quoted_words(packages)


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


def render_dockerfile(recipe: Recipe, variant: str, base: str | None = None) -> str:
    """The Dockerfile of one recipe variant; ``base`` overrides the variant's base image."""
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
    if recipe.apt:
        lines += ["", "USER root",
                  run_steps([FETCH_SECRETS, *apt_install(recipe.apt), FORGET_SECRETS])]
    if recipe.kind == "tool" and recipe.user:
        lines.append(f"RUN {add_user(recipe.user)}")
    if recipe.kind == "ray":
        lines += ["", f"USER {IMAGE_USER}"]
    if recipe.pip:
        lines.append(run_steps([FETCH_SECRETS, pip_install(recipe.pip), FORGET_SECRETS]))
    if recipe.env:
        lines += ["", env_instruction(recipe.env)]
    lines += ["", label_instruction(recipe.oci_labels(variant))]
    if recipe.kind == "tool" and recipe.user:
        lines.append(f"USER {recipe.user}")
    return "\n".join(lines) + "\n"


def render_portable_dockerfile(recipe: Recipe, variant: str, base: str | None = None,
                               apt_options: str = "") -> str:
    """The recipe's steps with no build plumbing (no USER, ARG, secrets or LABEL): the input for
    converters to other formats, which mistranslate those (spython turns USER into `su -`)."""
    lines = [f"FROM {base or recipe.variant(variant).base}"]
    if recipe.apt:
        lines.append(run_steps(apt_install(recipe.apt, apt_options)))
    if recipe.kind == "tool" and recipe.user:
        lines.append(f"RUN {add_user(recipe.user)}")
    if recipe.pip:
        lines.append(f"RUN {pip_install(recipe.pip)}")
    if recipe.env:
        lines.append(env_instruction(recipe.env))
    return "\n".join(lines) + "\n"


def run_steps(commands: list[str]) -> str:
    """One RUN instruction of several commands, one per line."""
    return "RUN " + " \\\n && ".join(commands)


def env_instruction(env: dict[str, str]) -> str:
    return "ENV " + " \\\n    ".join(f"{k}={json.dumps(v)}" for k, v in env.items())


def label_instruction(labels: dict[str, str]) -> str:
    return "LABEL " + " \\\n      ".join(f"{json.dumps(k)}={json.dumps(v)}"
                                        for k, v in labels.items())
