"""The record `rayhpc convert` writes beside a SIF (<sif>.json): which image it was made from
(tag, id) and that image's platform. Plain JSON, read without docker-py: the launcher on a login
node reads a SIF's platform from it."""

from __future__ import annotations

import json
from pathlib import Path


def record_path(sif: Path) -> Path:
    return sif.with_name(sif.name + ".json")


def read_record(sif: Path) -> dict:
    """The SIF's record ({} where there is none, or it is not a JSON object)."""
    try:
        record = json.loads(record_path(sif).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def sif_platform(sif: str | Path) -> str | None:
    """The platform the SIF's record says its image was built for (None: no record, or one
    from before records said it)."""
    platform = read_record(Path(sif)).get("platform")
    return platform if isinstance(platform, str) and platform else None
