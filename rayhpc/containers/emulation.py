"""Whether this machine runs another platform's programs: qemu-user registered with the
kernel's binfmt_misc (what an arm64 build on an amd64 host needs for debootstrap and for every
RUN step of its Dockerfile)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rayhpc.common.user_error import UserError
from rayhpc.containers.platforms import PLATFORMS, host_platform

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
# Debian's packages that register the handlers (bookworm: qemu-user-static 1:7.2, whose
# handlers carry the F flag, so they work inside containers and chroots too).
EMULATION_PACKAGES = ("qemu-user-static", "binfmt-support")


def emulation_problem(platform: str, binfmt_dir: Path = BINFMT_DIR) -> str:
    """Why this host cannot run ``platform``'s programs ("" : it can, natively or through an
    enabled qemu handler)."""
    if platform == host_platform():
        return ""
    machine = PLATFORMS[platform].machine
    handler = binfmt_dir / f"qemu-{machine}"
    try:
        enabled = handler.read_text().splitlines()[0].strip() == "enabled"
    except (OSError, IndexError):
        enabled = False
    if enabled:
        return ""
    return (f"this {host_platform()} host cannot run {machine} programs: no enabled "
            f"qemu-{machine} handler in {binfmt_dir}; install {' and '.join(EMULATION_PACKAGES)} "
            f"(apt-get install {' '.join(EMULATION_PACKAGES)}), then `update-binfmts --enable "
            f"qemu-{machine}` (docs/images.md, \"Platforms\")")


def check_emulation(platform: str, binfmt_dir: Path = BINFMT_DIR) -> None:
    """UserError naming --platform unless this host runs ``platform``'s programs. Only an
    engine on this Linux kernel is checked: a remote one (DOCKER_HOST over tcp/ssh) and Docker
    Desktop's (macOS, Windows: a VM, which emulates by itself) have their own."""
    if sys.platform != "linux" or os.environ.get("DOCKER_HOST", "unix://").startswith(
            ("tcp://", "ssh://")):
        return
    problem = emulation_problem(platform, binfmt_dir)
    if problem:
        raise UserError(f"--platform {platform}: {problem}")
