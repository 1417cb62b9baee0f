"""Docker image -> SIF, for HPC sites that run Apptainer/Singularity.

With `apptainer` or `singularity` on the host, through spython's client; without either, in the
converter container (the docker2singularity pattern, unprivileged): `docker save`, then
`apptainer build out.sif docker-archive://image.tar`. The SIF is written beside its target and
renamed into place, so a failure never leaves a partial SIF; the image digest is recorded beside
it, so converting an unchanged image again is skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors

from rayhpc.common.user_error import UserError
from rayhpc.containers.engine import check_image_ref, connect, image_platform
from rayhpc.containers.images import ensure_recipe_image
from rayhpc.containers.progress import Progress
from rayhpc.containers.sif_record import read_record, record_path

CONVERTER_RECIPE = "apptainer"
CONVERTER_VARIANT = "default"
CONVERTER_UID = 1000  # the converter image's user
HOST_RUNTIMES = ("apptainer", "singularity")  # Apptainer first: it is what sites install today


def default_sif_path(tag: str) -> Path:
    return Path("sif") / (tag.replace("/", "_").replace(":", "_") + ".sif")


def host_runtime() -> str | None:
    """Path of the host's apptainer (or singularity), if any."""
    for name in HOST_RUNTIMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def convert_image(tag: str, out: str | Path | None = None, progress: Progress | None = None,
                  force: bool = False) -> Path:
    """Convert the Docker image ``tag`` to a SIF; return the SIF path."""
    progress = progress or Progress()
    try:
        api = connect()
    except UserError as exc:
        if host_runtime():
            raise UserError(f"cannot convert {tag}: the image lives in Docker, and {exc}") from None
        raise UserError(f"cannot convert {tag}: no Docker engine is reachable and neither "
                        "apptainer nor singularity is installed; start Docker, or install "
                        "Apptainer (https://apptainer.org/docs/admin/main/installation.html)"
                        ) from None
    check_image_ref(tag, "--image")
    try:
        image_id = api.inspect_image(tag)["Id"]
        platform = image_platform(api, tag)
    except docker.errors.ImageNotFound:
        raise UserError(f"--image: {tag} is not on this Docker engine; build it with "
                        "`rayhpc build` (see `docker images`)") from None
    sif = _target(tag, out)
    record = read_record(sif)
    if not force and sif.is_file() and record.get("image_id") == image_id:
        if record.get("platform") != platform:  # a record from before records said it
            _write_record(sif, {**record, "platform": platform})
        progress.note(f"{sif} is up to date: image {tag} ({image_id[7:19]}) unchanged since "
                      f"its conversion, nothing to do")
        return sif
    try:
        work = Path(tempfile.mkdtemp(prefix=".rayhpc-sif-", dir=sif.parent))
    except OSError as exc:
        raise UserError(f"--out: cannot write in {sif.parent}: {exc.strerror}") from None
    started = time.monotonic()
    try:
        archive = work / "image.tar"
        _save(api, tag, archive, progress)
        built = work / "image.sif"
        runtime = host_runtime()
        if runtime:
            _convert_on_host(runtime, archive, built, progress)
        else:
            _convert_in_container(api, work, progress)
        if not built.is_file():
            raise UserError(f"conversion of {tag} produced no SIF; last output:\n"
                            f"{progress.tail()}")
        if os.geteuid() == 0:
            os.chown(built, 0, 0)  # made by the converter's user; yours now
        os.replace(built, sif)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # The platform too: Apptainer takes an archive of another platform as it is, and its own
    # build-arch label then names the host's (apptainer/apptainer#2774); the launcher reads
    # this record to refuse a SIF the site's nodes cannot run.
    _write_record(sif, {"image": tag, "image_id": image_id, "converted": time.time(),
                        "platform": platform})
    progress.note(f"SIF {sif}: {sif.stat().st_size / 2**20:.0f} MiB, converted in "
                  f"{time.monotonic() - started:.0f} s")
    return sif


def _target(tag: str, out: str | Path | None) -> Path:
    sif = Path(out) if out else default_sif_path(tag)
    if sif.is_dir():
        sif = sif / default_sif_path(tag).name
    sif = sif.expanduser().absolute()
    try:
        sif.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out: cannot create {sif.parent}: {exc.strerror}") from None
    if not os.access(sif.parent, os.W_OK | os.X_OK):
        raise UserError(f"--out: {sif.parent} is not writable; choose another place for the SIF")
    return sif


def _write_record(sif: Path, record: dict) -> None:
    tmp = record_path(sif).with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, record_path(sif))


def _save(api: docker.APIClient, tag: str, archive: Path, progress: Progress) -> None:
    progress.step(f"docker save {tag}")
    written, shown = 0, 0
    with open(archive, "wb") as out:
        for chunk in api.get_image(tag):
            out.write(chunk)
            written += len(chunk)
            if written - shown >= 64 * 2**20:
                shown = written
                progress.line(f"{written / 2**20:.0f} MiB saved")
    archive.chmod(0o644)
    progress.line(f"{written / 2**20:.0f} MiB saved")


@contextlib.contextmanager
def _singularity_named(runtime: str) -> Iterator[None]:
    """spython runs `singularity`; where only apptainer is installed, put a `singularity` that
    runs it first on PATH for the length of the call."""
    if Path(runtime).name == "singularity":
        yield
        return
    shim_dir = tempfile.mkdtemp(prefix="rayhpc-shim-")
    shim = Path(shim_dir) / "singularity"
    shim.write_text(f'#!/bin/sh\nexec "{runtime}" "$@"\n')
    shim.chmod(0o755)
    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{shim_dir}{os.pathsep}{old_path}"
    try:
        yield
    finally:
        os.environ["PATH"] = old_path
        shutil.rmtree(shim_dir, ignore_errors=True)


def _convert_on_host(runtime: str, archive: Path, sif: Path, progress: Progress) -> None:
    from spython.main import Client

    progress.step(f"{Path(runtime).name} build (host, through spython)")
    with _singularity_named(runtime):
        try:
            _, lines = Client.build(recipe=f"docker-archive://{archive}", image=str(sif),
                                    sudo=False, stream=True, force=True, quiet=True)
            for line in lines:
                progress.line(line)
        except Exception as exc:  # spython raises CalledProcessError on a failed build
            progress.done()
            raise UserError(f"{Path(runtime).name} build failed: {exc}\n{progress.tail()}"
                            ) from None
    progress.done()


def _convert_in_container(api: docker.APIClient, work: Path, progress: Progress) -> None:
    converter = ensure_recipe_image(CONVERTER_RECIPE, CONVERTER_VARIANT, progress)
    # Never root: as root, hand the work dir to the converter's user; else run as ourselves.
    if os.geteuid() == 0:
        user = str(CONVERTER_UID)
        os.chown(work, CONVERTER_UID, -1)
    else:
        user = f"{os.geteuid()}:{os.getegid()}"
    progress.step(f"apptainer build in {converter} (no Apptainer on this host)")
    container = api.create_container(
        converter, command=["apptainer", "build", "--force", "/work/image.sif",
                            "docker-archive:///work/image.tar"],
        user=user, environment={"HOME": "/tmp"}, working_dir="/work",
        labels={"org.rayhpc.role": "sif-converter"},
        host_config=api.create_host_config(binds={str(work): {"bind": "/work", "mode": "rw"}}))
    try:
        api.start(container)
        for raw in api.logs(container, stream=True, follow=True):
            for line in raw.decode(errors="replace").splitlines():
                progress.line(line)
        code = api.wait(container)["StatusCode"]
    finally:
        with contextlib.suppress(docker.errors.APIError):
            api.remove_container(container, force=True)
    progress.done()
    if code != 0:
        raise UserError(f"apptainer build failed in the converter (exit {code}):\n"
                        f"{progress.tail()}")
