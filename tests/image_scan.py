"""Search an image's layers, history and config for a string (used to prove secrets are absent)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import docker


def tar_bytes(files: dict[str, bytes]) -> bytes:
    """An uncompressed tar archive of the given files, in memory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def save_image(api: docker.APIClient, ref: str, dest: Path) -> Path:
    with open(dest, "wb") as out:
        for chunk in api.get_image(ref):
            out.write(chunk)
    return dest


def layers_containing(archive: Path, needle: bytes, skip_layers: int = 0) -> list[str]:
    """Files, in the layers of a `docker save` archive past the first ``skip_layers``, whose
    content or name holds ``needle``. Layers, not the merged file system: a file deleted in a
    later layer still counts."""
    hits = []
    with tarfile.open(archive) as saved:
        manifest = json.load(saved.extractfile("manifest.json"))
        for layer_name in manifest[0]["Layers"][skip_layers:]:
            with tarfile.open(fileobj=saved.extractfile(layer_name)) as layer:
                for member in layer:
                    if needle in member.name.encode():
                        hits.append(f"{layer_name}:{member.name}")
                    elif member.isfile():
                        data = layer.extractfile(member).read()
                        if needle in data:
                            hits.append(f"{layer_name}:{member.name}")
    return hits


def metadata_containing(api: docker.APIClient, ref: str, needle: str) -> list[str]:
    """History entries and config fields of the image that hold ``needle``."""
    hits = [f"history: {h['CreatedBy'][:80]}" for h in api.history(ref)
            if needle in h.get("CreatedBy", "")]
    if needle in json.dumps(api.inspect_image(ref)):
        hits.append("image config")
    return hits
