"""A Debian root filesystem by debootstrap, imported as a Docker image (no registry needed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import docker

from rayhpc.common.user_error import UserError
from rayhpc.containers.emulation import emulation_problem
from rayhpc.containers.engine import import_rootfs
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
        progress.step(f"importing the root filesystem as {ref}")
        with subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."],
                              stdout=subprocess.PIPE) as tar:
            image_id = import_rootfs(api, tar.stdout, ref, platform if foreign else None)
        if tar.returncode != 0:
            raise UserError(f"packing the root filesystem in {root} failed")
        progress.done()
        return image_id
    finally:
        shutil.rmtree(root, ignore_errors=True)
