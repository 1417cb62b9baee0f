"""YAML data files of the project (recipes, site profiles): find by name or path, read, check
keys; every problem is one UserError naming the file and the key."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml

from rayhpc.common.user_error import UserError


def yaml_names(directory: Path) -> list[str]:
    """The names of the YAML data files in a directory (recipes/, launcher/sites/), sorted."""
    return sorted(path.stem for path in directory.glob("*.yaml"))


def find_yaml(name_or_path: str, directory: Path, kind: str, flag: str) -> Path:
    """<directory>/<name>.yaml for a name, or the file a path names."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or "/" in name_or_path or candidate.exists():
        if candidate.is_dir():
            raise UserError(f"{kind} file {candidate} is a directory ({flag}); give the "
                            f"{kind} YAML file in it")
        if not candidate.is_file():
            raise UserError(f"{kind} file {candidate} not found ({flag})")
        return candidate
    path = directory / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(yaml_names(directory)) or "none"
        raise UserError(f"unknown {kind} {name_or_path!r} ({flag}); known {kind}s: {known}, "
                        f"or give the path of a {kind} YAML file")
    return path


class DataLoader(yaml.SafeLoader):
    """YAML as people write it in data files: a plain ``30:00`` or ``1:00:00`` is text, not
    YAML 1.1's base-60 number (PyYAML reads ``walltime: 30:00`` as the integer 1800, which a
    walltime parser would then take for 1800 minutes)."""

    def resolve(self, kind, value, implicit):
        tag = super().resolve(kind, value, implicit)
        if (kind is yaml.ScalarNode and implicit[0] and ":" in value
                and tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")):
            return "tag:yaml.org,2002:str"
        return tag


def read_yaml(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=DataLoader)  # noqa: S506
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8 "
                        "YAML") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None


def check_keys(data: dict, allowed: tuple[str, ...], path: Path, where: str) -> None:
    """Reject unknown keys, suggesting the closest allowed one (typos are the common case)."""
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = (f"did you mean {close[0]!r}?" if close
                    else f"allowed: {', '.join(allowed) or 'none'}")
            raise UserError(f"{path}: {where}{key}: unknown key; {hint}")
