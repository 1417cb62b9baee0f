"""The platforms images are built for (pure): the names rayhpc takes, what each is called by
rayproject/ray's tags, debootstrap, pip and the engine, and the check that an image's platform
is the one of the nodes that run it (issue #31: Grace-Hopper machines are aarch64)."""

from __future__ import annotations

import platform as host
from dataclasses import dataclass

from rayhpc.common.user_error import UserError

DEFAULT_PLATFORM = "linux/amd64"
# The label every image rayhpc builds carries (and a SIF converted from it keeps).
PLATFORM_LABEL = "org.rayhpc.platform"
RAY_REPOSITORY = "rayproject/ray"


@dataclass(frozen=True)
class Platform:
    name: str         # Docker's os/arch, as `--platform` takes it
    arch: str         # the image config's Architecture (`docker image inspect`)
    machine: str      # `uname -m` on such a host
    tag_suffix: str   # appended to rayproject/ray's tags, and so to ours
    debian_arch: str  # debootstrap --arch


# rayproject/ray names its aarch64 images by appending "-<architecture>" to the tag of the
# x86_64 one, e.g. 2.60.0-py311-cpu-aarch64, -gpu-aarch64, -cu128-aarch64; x86_64 (the default
# architecture) has no suffix. Source: ray-project/ray ci/ray_ci/docker_container.py,
# DockerContainer._get_image_tags ("if self.architecture != DEFAULT_ARCHITECTURE: tag +=
# f'-{self.architecture}'"; ARCHITECTURES_RAY = ["x86_64", "aarch64"]), commit 0178d7f6, read
# 2026-12-07; docker/ray/README.md: tags are {Ray version}[-{Python version}][-{Platform}]
# [-{Architecture}].
PLATFORMS = {
    "linux/amd64": Platform("linux/amd64", "amd64", "x86_64", "", "amd64"),
    "linux/arm64": Platform("linux/arm64", "arm64", "aarch64", "-aarch64", "arm64"),
}
# Other spellings of an architecture an engine or a record may use.
_ARCH_ALIASES = {"x86_64": "amd64", "aarch64": "arm64"}


def check_platform(value: object, where: str) -> str:
    """``value`` as a platform name; UserError naming ``where`` (a file and key, or a flag) and
    the platforms there are."""
    if isinstance(value, str) and value.strip() in PLATFORMS:
        return value.strip()
    raise UserError(f"{where}: {value!r} is not a platform rayhpc builds for; use one of: "
                    f"{', '.join(PLATFORMS)}")


def platform_for_arch(arch: str, os_name: str = "linux") -> str:
    """The platform name of an image whose config says ``os_name``/``arch`` (amd64, arm64, or
    uname's x86_64, aarch64); another architecture is named as it is."""
    arch = _ARCH_ALIASES.get(arch, arch)
    return f"{os_name or 'linux'}/{arch}"


def host_platform() -> str:
    """The platform of the machine this runs on (what it runs without emulation)."""
    return platform_for_arch(host.machine())


def with_suffix(tag: str, platform: str) -> str:
    """``tag`` with the platform's suffix (none for amd64), once."""
    suffix = PLATFORMS[platform].tag_suffix
    return tag if not suffix or tag.endswith(suffix) else tag + suffix


def base_for(base: str, platform: str) -> str:
    """The recipe's base for ``platform``: rayproject/ray's own tag for it; another base (a
    Debian image, a stand-in) is taken as it is, for the engine to pick the platform of."""
    if base.startswith(RAY_REPOSITORY + ":"):
        return with_suffix(base, platform)
    return base


def mismatch(nodes: str, where: str, image: str, image_platform: str | None,
             fix_flag: str) -> str:
    """Why the nodes cannot run ``image`` ("" : they can, or the image's platform is not
    known). ``where`` names what says the nodes' platform (a site file's key)."""
    if not image_platform or image_platform == nodes:
        return ""
    return (f"{where}: the nodes are {nodes}, but image {image} is {image_platform}: its "
            f"programs cannot run there; build one for them with `rayhpc build --platform "
            f"{nodes}{fix_flag}`")
