"""A Debian root filesystem by debootstrap, imported as a Docker image (no registry needed)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import docker

from rayhpc.common.user_error import UserError
from rayhpc.containers.emulation import emulation_problem
from rayhpc.containers.platforms import DEFAULT_PLATFORM, PLATFORMS, host_platform
from rayhpc.containers.progress import Progress

APT_SOURCES = (Path("/etc/apt/sources.list.d"), Path("/etc/apt/sources.list"))


def host_debian_mirror(sources: tuple[Path, ...] = APT_SOURCES) -> str | None:
    """The Debian mirror this host's apt uses (deb822 .sources or one-line sources.list)."""
    files: list[Path] = []
    for src in sources:
        if src.is_dir():
            files += sorted(src.glob("*.sources")) + sorted(src.glob("*.list"))
        elif src.is_file():
            files.append(src)
    for path in files:
        text = path.read_text(errors="replace")
        for uri in re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(
                r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+\S+", text, re.M):
            if "security" not in uri and "/debian" in uri:
                return uri
    return None


def debootstrap_image(api: docker.APIClient, ref: str, suite: str, mirror: str | None,
                      progress: Progress, platform: str = DEFAULT_PLATFORM) -> str:
    """debootstrap --variant=minbase SUITE into a temporary dir, then docker import it as REF.
    ``platform``: the root filesystem's; another than the host's is bootstrapped in one go under
    emulation (Debian's qemu-user-static registers its binfmt handlers with the F flag since
    2.12, so debootstrap --arch needs neither --foreign nor a copied qemu binary: Bug#732551,
    https://lists.debian.org/debian-boot/2018/04/msg00203.html)."""
    arch = PLATFORMS[platform].debian_arch
    foreign = platform != host_platform()
    if foreign and emulation_problem(platform):  # debootstrap runs here, whatever the engine
        raise UserError(f"--platform {platform}: {emulation_problem(platform)}")
    if os.geteuid() != 0:
        raise UserError("debootstrap needs root to build the Debian base: run `sudo rayhpc base`, "
                        "or pass --os-image with a Debian image you already have")
    if not shutil.which("debootstrap"):
        raise UserError("debootstrap is not installed: `apt-get install debootstrap`, or pass "
                        "--os-image with a Debian image you already have")
    mirror = mirror or host_debian_mirror()
    if not mirror:
        raise UserError("no Debian mirror found in /etc/apt: pass one with --mirror")
    root = Path(tempfile.mkdtemp(prefix="rayhpc-rootfs-", dir="/var/tmp"))
    try:
        progress.step(f"debootstrap {suite} ({arch}) from {mirror}")
        cmd = ["debootstrap", "--variant=minbase", f"--arch={arch}", suite, str(root), mirror]
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                progress.line(line)
        if proc.returncode != 0:
            raise UserError(f"debootstrap failed (exit {proc.returncode}):\n{progress.tail()}")
        # Downloaded packages and lists are dead weight in an image.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (root / junk).glob("*"):
                if entry.is_file():
                    entry.unlink()
        # The host's mirror may be a dated snapshot, whose Release files of moving suites (sid)
        # have expired: a stand-in must still run apt.
        (root / "etc/apt/apt.conf.d/99rayhpc-standin").write_text(
            '// rayhpc stand-in: the mirror may be a dated snapshot\n'
            'Acquire::Check-Valid-Until "false";\n')
        progress.step(f"loading the root filesystem as {ref} ({platform})")
        layer, archive = root.with_suffix(".layer.tar"), root.with_suffix(".image.tar")
        try:
            packed = subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf",
                                     str(layer), "."], capture_output=True, text=True)
            if packed.returncode != 0:
                raise UserError(f"packing the root filesystem in {root} failed: "
                                f"{packed.stderr.strip()[-300:]}")
            shutil.rmtree(root, ignore_errors=True)  # the disk it held, before the archive
            write_image_archive(layer, ref, platform, archive)
            image_id = load_archive(api, archive, ref)
        finally:
            for path in (layer, archive):
                path.unlink(missing_ok=True)
        progress.done()
        return image_id
    finally:
        shutil.rmtree(root, ignore_errors=True)


def write_image_archive(layer: Path, ref: str, platform: str, out: Path) -> None:
    """A one-layer image in `docker save`'s format (a docker-archive) whose config says
    ``platform``, for `docker load`. Not `docker import`: Docker 20.10 (Debian bookworm's)
    writes its own architecture into an imported image whatever `--platform` asks (seen
    2026-12-07: an arm64 root imported with --platform linux/arm64 said amd64), and images
    built on it inherit the base's."""
    digest = hashlib.sha256()
    with open(layer, "rb") as data:
        for chunk in iter(lambda: data.read(1 << 20), b""):
            digest.update(chunk)
    os_name, arch = platform.split("/", 1)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    config = json.dumps({
        "architecture": PLATFORMS[platform].arch, "os": os_name, "created": now,
        "config": {"Cmd": ["/bin/bash"]},  # (no Env: the engine's default PATH, as import)
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{digest.hexdigest()}"]},
        "history": [{"created": now, "created_by": "rayhpc: debootstrap"}],
    }, sort_keys=True).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [ref],
                            "Layers": ["layer/layer.tar"]}]).encode()
    with tarfile.open(out, "w") as archive:
        for name, content in ((config_name, config), ("manifest.json", manifest)):
            entry = tarfile.TarInfo(name)
            entry.size, entry.mtime = len(content), int(time.time())
            archive.addfile(entry, io.BytesIO(content))
        archive.add(layer, arcname="layer/layer.tar")


def load_archive(api: docker.APIClient, archive: Path, ref: str) -> str:
    """`docker load` of a docker-archive; the id of the image it tags ``ref``."""
    with open(archive, "rb") as data:
        for _ in api.load_image(data):  # the engine's progress: nothing to show
            pass
    return str(api.inspect_image(ref)["Id"])
