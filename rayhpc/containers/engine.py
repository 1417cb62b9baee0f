"""Executing against the Docker engine with docker-py: connect, pull, build, import."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
from pathlib import Path

import docker
import docker.errors

from rayhpc import PACKAGE_DIR, __version__
from rayhpc.common.user_error import UserError
from rayhpc.containers.platforms import platform_for_arch
from rayhpc.containers.progress import Progress
from rayhpc.containers.secrets import SECRETS_ARG, BuildSecrets, serve

_STEP_RE = re.compile(r"^Step \d+/\d+ : ")


def connect(timeout: float | None = 600) -> docker.APIClient:
    """A low-level client to the engine named by DOCKER_HOST (default: the local socket);
    ``timeout`` None: a request may wait for ever (a followed log that is quiet for long)."""
    try:
        api = docker.APIClient(base_url=os.environ.get("DOCKER_HOST") or None, timeout=timeout)
        api.ping()
    except Exception as exc:
        where = os.environ.get("DOCKER_HOST") or "the local socket (/var/run/docker.sock)"
        raise UserError(f"no Docker engine reachable at {where}: {_short(exc)}; start the "
                        "engine (dockerd) or point DOCKER_HOST at one") from None
    return api


# Docker's image reference grammar (distribution/reference): [host[:port]/]path[:tag][@digest],
# path components lower case.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
# A first component is a registry host only with a dot, a port, or as localhost.
_HOST = r"(?:(?:localhost|[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+)(?::[0-9]+)?/|[a-zA-Z0-9-]+:[0-9]+/)"
_REFERENCE_RE = re.compile(rf"{_HOST}?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?"
                           r"(?:@[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,})?")


def check_image_ref(ref: str, flag: str) -> None:
    """UserError naming ``flag`` unless ``ref`` is a valid image reference."""
    if not _REFERENCE_RE.fullmatch(ref):
        raise UserError(f"{flag}: {ref!r} is not a valid image reference; use "
                        "[registry/]name[:tag] in lower case, e.g. rayhpc/ray:2.60.0-py311-cpu")


def image_exists(api: docker.APIClient, ref: str) -> bool:
    try:
        api.inspect_image(ref)
        return True
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.APIError as exc:  # the engine refused the reference itself
        raise UserError(f"image {ref!r}: {_short(exc)}") from None


def ensure_image(api: docker.APIClient, ref: str, progress: Progress, hint: str,
                 platform: str | None = None) -> None:
    """Have ``ref`` locally, pulling it if needed (``platform``'s image of a multi-platform
    one); fail with ``hint`` when it cannot be had."""
    if image_exists(api, ref):
        return
    progress.step(f"pulling {ref}" + (f" ({platform})" if platform else ""))
    repository, _, tag = ref.rpartition(":") if ":" in ref.split("/")[-1] else (ref, "", "latest")
    try:
        for chunk in api.pull(repository, tag=tag, stream=True, decode=True,
                              platform=platform):
            if "error" in chunk:
                raise docker.errors.APIError(chunk["error"])
            progress.line(" ".join(str(chunk.get(k, "")) for k in ("id", "status", "progress")))
    except docker.errors.APIError as exc:
        progress.done()
        raise UserError(f"image {ref} is not here and cannot be pulled ({_short(exc)}); "
                        f"{hint}") from None
    progress.done()


def git_revision(root: Path = PACKAGE_DIR.parent) -> str:
    """The checkout's git revision, with -dirty when the work tree has uncommitted changes; an
    installed package (no checkout around it) is named by its version."""
    if not (root / ".git").exists():
        return f"rayhpc-{__version__}"
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "")


def build_labels() -> dict[str, str]:
    """Labels known only at build time (kept out of the rendered Dockerfile). No creation time:
    an unchanged build then gives the very same image, and nothing downstream redoes work."""
    return {"org.opencontainers.image.revision": git_revision()}


def build_image(api: docker.APIClient, dockerfile: str, tag: str, progress: Progress,
                secrets: BuildSecrets | None = None,
                labels: dict[str, str] | None = None, no_cache: bool = False,
                platform: str | None = None) -> str:
    """Build ``dockerfile`` (no other context) as ``tag``, streaming progress; return the image id.

    Secrets are served for the length of the build and passed to it by channel name only.
    ``platform``: the image's os/arch (None: the engine's own); another one's RUN steps need
    the engine's host to emulate it (qemu-user, docs/images.md "Platforms").
    """
    fileobj = io.BytesIO(dockerfile.encode())
    kwargs = dict(fileobj=fileobj, tag=tag, rm=True, forcerm=True, pull=False, decode=True,
                  labels=labels or {}, nocache=no_cache)
    if platform:
        kwargs["platform"] = platform  # docker-py APIClient.build(platform=...), API 1.32+
    image_id = ""
    if secrets and secrets.ca_source:
        progress.note(f"CA bundle for this build only: {secrets.ca_source}")
    with serve(secrets) if secrets else contextlib.nullcontext() as channel:
        if channel:
            # Host networking lets RUN steps reach the abstract socket of the host's namespace.
            kwargs.update(buildargs={SECRETS_ARG: channel}, network_mode="host")
        try:
            for chunk in api.build(**kwargs):
                image_id = _show_build_chunk(chunk, progress) or image_id
        except docker.errors.APIError as exc:
            progress.done()
            raise UserError(f"building {tag} failed: {_short(exc)}") from None
    progress.done()
    if not image_id:
        raise UserError(f"building {tag} gave no image; last output:\n{progress.tail()}")
    return image_id


def image_platform(api: docker.APIClient, image: str) -> str | None:
    """The platform an image's config says (linux/arm64), None where it says none."""
    info = api.inspect_image(image)
    arch = info.get("Architecture") or ""
    return platform_for_arch(arch, info.get("Os") or "linux") if arch else None


def _show_build_chunk(chunk: dict, progress: Progress) -> str:
    if "error" in chunk:
        progress.done()
        detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
        raise UserError(f"image build failed: {detail.strip()}\n--- last build output ---\n"
                        f"{progress.tail()}")
    if "aux" in chunk and "ID" in chunk["aux"]:
        return chunk["aux"]["ID"]
    text = chunk.get("stream") or chunk.get("status") or ""
    for line in text.splitlines():
        if _STEP_RE.match(line):
            progress.step(line)
        else:
            progress.line(line)
    return ""


def _short(exc: BaseException) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    return " ".join(str(text).split())[:300]


# What the node agent needs of an image: `python` on PATH with Ray installed. Reading the
# package metadata is quick (no `import ray`).
_RAY_PROBE = ("import importlib.metadata as m, sys; print('python', sys.version.split()[0]); "
              "print('ray', m.version('ray'))")


def ray_in_image(api: docker.APIClient, image: str, flag: str = "--image") -> dict[str, str]:
    """The Ray and Python versions in ``image`` ({"ray": ..., "python": ...}; checked once per
    image id, then remembered); UserError naming the image and what is missing."""
    image_id = api.inspect_image(image)["Id"]
    cache = _cache_dir() / "images.json"
    known = _read_json(cache)
    if isinstance(known.get(image_id), dict):
        return known[image_id]
    container = None
    try:
        container = api.create_container(image, command=["python", "-c", _RAY_PROBE])
        api.start(container)
        status = api.wait(container, timeout=120)["StatusCode"]
        output = api.logs(container).decode(errors="replace")
    except docker.errors.APIError as exc:
        if "executable file not found" in str(exc):
            raise UserError(f"{flag}: {image} has no `python` on its PATH, and every node runs "
                            "the node agent with it; use an image built from rayproject/ray "
                            "(`rayhpc build`)") from None
        raise UserError(f"{flag}: {image} cannot run here: {_short(exc)}") from None
    finally:
        if container is not None:
            with contextlib.suppress(docker.errors.APIError):
                api.remove_container(container, force=True)
    versions = dict(line.split(" ", 1) for line in output.splitlines() if line.count(" ") == 1)
    if status != 0 or "ray" not in versions:
        if "python" in versions:
            raise UserError(f"{flag}: {image} has Python {versions['python']} but no Ray "
                            "(package ray not installed); use an image built from "
                            "rayproject/ray (`rayhpc build`), or add ray[default] to it")
        raise UserError(f"{flag}: {image}: `python` failed (exit {status}): "
                        f"{' '.join(output.split())[-200:]}")
    with contextlib.suppress(OSError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({**known, image_id: versions}))
    return versions


def engine_gpus(api: docker.APIClient) -> set[str]:
    """The GPU kinds this engine can give containers: nvidia with NVIDIA's container runtime
    registered (what compose's GPU reservations use), amd with the ROCm device files here."""
    kinds = set()
    if "nvidia" in (api.info().get("Runtimes") or {}):
        kinds.add("nvidia")
    if os.path.exists("/dev/kfd"):
        kinds.add("amd")
    return kinds


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rayhpc"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
