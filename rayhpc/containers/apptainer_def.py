"""Render Apptainer definition files from recipes (pure), for sites that build on the cluster
(`apptainer build --fakeroot x.sif x.def`).

The conversion itself is spython's, fed the recipe's portable Dockerfile (no USER, ARG or
LABEL: spython turns USER into `su -` lines that break %post, and writes LABEL as key=value
lines that Apptainer does not read as labels). What is fixed up here, each checked by a real
Apptainer build in the tests:
- labels are written in Apptainer's own form;
- %post first loads the image's Docker environment, which Apptainer does not apply there (so
  rayproject/ray's Python is on PATH for pip);
- every command of %post ends in `|| exit $?`: a RUN fails when its `a && b` chain fails, but
  under `sh -e` a failure before the last `&&` does not stop %post, and the build would succeed
  without the packages;
- apt runs its downloads as root: its `_apt` sandbox user cannot switch groups in a fakeroot
  build without subuid maps (`--fakeroot --ignore-subuid`).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from spython.main.parse.parsers import DockerParser
from spython.main.parse.writers import SingularityWriter

from rayhpc.common.user_error import UserError
from rayhpc.containers.dockerfile import render_portable_dockerfile
from rayhpc.containers.recipe import Recipe, list_recipes, load_recipe

DOCKER_ENV = "/.singularity.d/env/10-docker2singularity.sh"
APT_OPTIONS = "-o APT::Sandbox::User=root"
_SECTION_RE = re.compile(r"^%(\w+)\s*$")


def spython_convert(dockerfile: str) -> str:
    """spython's Dockerfile -> Singularity conversion (it reads from a file)."""
    fd, path = tempfile.mkstemp(suffix=".Dockerfile")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(dockerfile)
        return SingularityWriter(DockerParser(path).recipe).convert()
    finally:
        os.unlink(path)


def split_sections(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """Header lines, and the body lines of each %section, in order."""
    header: list[str] = []
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        match = _SECTION_RE.match(line)
        if match:
            current = match.group(1)
            sections[current] = []
        elif current is None:
            header.append(line)
        else:
            sections[current].append(line)
    return header, sections


def fail_fast(lines: list[str]) -> list[str]:
    """Append `|| exit $?` to the last line of every command (continuation lines joined)."""
    out, in_command = [], False
    for line in lines:
        text = line.rstrip()
        if not in_command and (not text.strip() or text.lstrip().startswith("#")):
            out.append(text)
            continue
        in_command = text.endswith("\\")
        out.append(text if in_command else f"{text} || exit $?")
    return out


def render_def(recipe: Recipe, variant: str, base: str | None = None,
               bootstrap: str = "docker") -> str:
    """The def file of one recipe variant. ``bootstrap``/``base``: e.g. docker-archive and a
    tar path, to build from a local image."""
    base = base or recipe.variant(variant).base
    header, sections = split_sections(spython_convert(
        render_portable_dockerfile(recipe, variant, base, APT_OPTIONS)))
    for line in header:
        if line.strip() and not line.startswith(("Bootstrap:", "From:", "Stage:")):
            raise ValueError(f"unexpected line in spython's def header: {line!r}")
    post = [line.strip() for line in sections.get("post", [])]
    if any(line.startswith("su ") for line in post):
        raise ValueError("spython emitted `su` in %post: USER must not reach the converter")
    out = [f"# Rendered by rayhpc from recipe {recipe.name!r}, variant {variant!r} (spython).",
           "# Build on the cluster: apptainer build --fakeroot IMAGE.sif THIS.def",
           f"Bootstrap: {bootstrap}", f"From: {base}", "", "%labels"]
    out += [f"    {key} {value}" for key, value in recipe.oci_labels(variant).items()]
    out += ["", "%post",
            "    # Apptainer does not apply the image's Docker ENV (its PATH) in %post.",
            f"    if [ -f {DOCKER_ENV} ]; then . {DOCKER_ENV}; fi"]
    out += [f"    {line}" if line else "" for line in fail_fast(sections.get("post", []))]
    for name in ("environment", "runscript"):
        body = [line.strip() for line in sections.get(name, []) if line.strip()]
        if body:
            out += ["", f"%{name}", *(f"    {line}" for line in body)]
    return "\n".join(out).rstrip() + "\n"


def write_defs(recipe_name: str | None, out_dir: str | Path) -> list[Path]:
    """Write <recipe>-<variant>.def for each variant of one recipe (default: every Ray recipe)."""
    if recipe_name:
        recipes = [load_recipe(recipe_name)]
    else:
        recipes = [r for r in map(load_recipe, list_recipes()) if r.kind == "ray"]
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out: cannot create {out}: {exc.strerror}") from None
    written = []
    for recipe in recipes:
        for variant in recipe.variants:
            path = out / f"{recipe.name}-{variant}.def"
            path.write_text(render_def(recipe, variant))
            written.append(path)
    return written
