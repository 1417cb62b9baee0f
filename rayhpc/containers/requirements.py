"""Added pip requirements (a recipe's `pip`, `rayhpc build --pip` and `--requirements`): parsed,
checked against the base image's Ray, named for the image tag (pure: data in, answers out).

The image keeps the Ray of its base: every pip step installs its packages together with
``ray==<the recipe's ray_version>``, so pip's resolver must keep that Ray and honour Ray's own
requirements. A requirement that names Ray with a version the base does not have cannot be
met by that step, and is refused here, before any build.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from rayhpc.common.user_error import UserError

EXTRA_PIP_LABEL = "org.rayhpc.extra-pip"


def has_control(text: str) -> bool:
    """A line break, tab or other control character: in a rendered build file, a line break
    would start a new instruction."""
    return any(ord(c) < 0x20 or ord(c) == 0x7f for c in text)


def check_requirement(text: str, ray_version: str, where: str) -> Requirement:
    """One requirement (PEP 508) as pip takes it on its command line; UserError naming
    ``where`` (a file and field, a FILE:LINE, a flag) when it is not one, or when it asks for
    a Ray other than ``ray_version`` (empty: the image has no pinned Ray; nothing to check)."""
    if has_control(text):
        raise UserError(f"{where}: {text!r} holds a line break, tab or another control "
                        "character; give one requirement per entry, on one line")
    if text.startswith("-"):
        raise UserError(f"{where}: {text!r} is a pip option, not a requirement; give "
                        "requirements only (pip index settings come from --pip-index-url or "
                        "$PIP_INDEX_URL, and a requirements file from --requirements)")
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        raise UserError(f"{where}: {text!r} is not a requirement pip understands ({exc}); "
                        "write it like tqdm, 'tqdm>=4.66' or 'name @ https://...'") from None
    if ray_version and canonicalize_name(requirement.name) == "ray":
        _check_ray(requirement, text, ray_version, where)
    return requirement


def _check_ray(requirement: Requirement, text: str, ray_version: str, where: str) -> None:
    fix = (f"drop the version (the image keeps Ray {ray_version}) or allow {ray_version}; a "
           "different Ray needs a recipe whose ray_version and base are that Ray")
    if requirement.url:
        raise UserError(f"{where}: {text!r} installs Ray from a URL over the base's Ray "
                        f"{ray_version}; {fix}")
    try:
        version = Version(ray_version)
    except InvalidVersion:  # the recipe loader checks ray_version; nothing to compare with
        return
    if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
        raise UserError(f"{where}: {text!r} excludes the base's Ray {ray_version}; {fix}")


def check_requirements(texts: tuple[str, ...], ray_version: str, where: str
                       ) -> tuple[str, ...]:
    """Each of ``texts`` checked (stripped); duplicates dropped, first one kept."""
    out: list[str] = []
    for text in texts:
        text = text.strip()
        check_requirement(text, ray_version, where)
        if text not in out:
            out.append(text)
    return tuple(out)


def read_requirements_file(path: str | Path, ray_version: str) -> tuple[str, ...]:
    """The requirements of a file in pip's plain format: one per line, blank lines and `#`
    comments allowed. Options (-r, -e, --index-url, ...) are refused: the build takes its index
    settings from its own flags, and a nested file or an editable path does not exist in the
    build. Problems name FILE:LINE."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"--requirements: {path} cannot be read: {exc.strerror}; give an "
                        "existing requirements file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"--requirements: {path}: not UTF-8 text (byte {exc.start}); save it "
                        "as UTF-8") from None
    found: list[str] = []
    # split("\n"), not splitlines(): the latter also splits at other control characters,
    # which would hide them instead of refusing them.
    for number, line in enumerate(text.split("\n"), start=1):
        where = f"--requirements: {path}:{number}"
        line = line.removesuffix("\r")
        if line.lstrip().startswith("#"):
            continue
        if " #" in line or "\t#" in line:  # pip's inline comment: `#` after whitespace
            line = line[:min(i for i in (line.find(" #"), line.find("\t#")) if i >= 0)]
        line = line.strip(" ")
        if not line:
            continue
        if line.endswith("\\"):
            raise UserError(f"{where}: a line continuation (`\\`); put each requirement on "
                            "one line")
        check_requirement(line, ray_version, where)
        if line not in found:
            found.append(line)
    return tuple(found)


def added_tag(recipe_tag: str, added: tuple[str, ...]) -> str:
    """The default tag of a build with packages added for it: the recipe's tag stays the
    recipe's image; this one is named by what was added (order does not matter)."""
    digest = hashlib.sha256("\n".join(sorted(set(added))).encode()).hexdigest()[:8]
    return f"{recipe_tag}-plus-{digest}"
