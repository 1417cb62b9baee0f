"""Render Dockerfiles from recipes: pure functions, data in, text out (golden-tested).

Layer order follows how often things change: system packages first, then pip packages, then
environment and labels, so a change to the pip list rebuilds only the last layers.
"""

from __future__ import annotations

import json
import shlex

from containers.recipe import Recipe
from containers.secrets import FETCH_SECRETS, FORGET_SECRETS, SECRETS_ARG

# The user of rayproject/ray images (uid 1000); the stand-in base creates the same.
IMAGE_USER = "ray"


def render_dockerfile(recipe: Recipe, variant: str, base: str | None = None) -> str:
    """The Dockerfile of one recipe variant; ``base`` overrides the variant's base image."""
    chosen = recipe.variant(variant)
    lines = [
        f"# Rendered by rayhpc from recipe {recipe.name!r}, variant {variant!r}.",
        "# Do not edit: change the recipe and run `invoke build`.",
        f"FROM {base or chosen.base}",
        "",
        "# Build-only secrets (CA bundle, pip index) arrive over a loopback socket and are",
        "# deleted in the same RUN step: they never reach a layer.",
        f"ARG {SECRETS_ARG}=",
    ]
    if recipe.apt:
        lines += [
            "",
            "USER root",
            run_steps([
                FETCH_SECRETS,
                "apt-get update -q",
                "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
                + " ".join(shlex.quote(p) for p in recipe.apt),
                "rm -rf /var/lib/apt/lists/*",
                FORGET_SECRETS,
            ]),
        ]
    lines += ["", f"USER {IMAGE_USER}"]
    if recipe.pip:
        lines.append(run_steps([
            FETCH_SECRETS,
            "python -m pip install --no-cache-dir " + " ".join(shlex.quote(p) for p in recipe.pip),
            FORGET_SECRETS,
        ]))
    if recipe.env:
        lines += ["", env_instruction(recipe.env)]
    lines += ["", label_instruction(recipe.oci_labels(variant))]
    return "\n".join(lines) + "\n"


def run_steps(commands: list[str]) -> str:
    """One RUN instruction of several commands, one per line."""
    return "RUN " + " \\\n && ".join(commands)


def env_instruction(env: dict[str, str]) -> str:
    return "ENV " + " \\\n    ".join(f"{k}={json.dumps(v)}" for k, v in env.items())


def label_instruction(labels: dict[str, str]) -> str:
    return "LABEL " + " \\\n      ".join(f"{json.dumps(k)}={json.dumps(v)}"
                                        for k, v in labels.items())
