"""Render the stand-in for rayproject/ray (pure): for hosts that cannot pull from a registry.

It mirrors what drivers expect from the real image: user ``ray`` (uid 1000, group users) with home
/home/ray, Python with ``ray[default,serve]`` at the recipe's version and numpy, on PATH as
``python``.
"""

from __future__ import annotations

from rayhpc.common.user_error import UserError
from rayhpc.containers.dockerfile import (
    IMAGE_USER,
    add_user,
    apt_install,
    label_instruction,
    pip_install,
    run_steps,
)
from rayhpc.containers.platforms import DEFAULT_PLATFORM, with_suffix
from rayhpc.containers.recipe import IMAGE_REPOSITORY, Recipe
from rayhpc.containers.secrets import FETCH_SECRETS, FORGET_SECRETS, SECRETS_ARG

OS_IMAGE = f"{IMAGE_REPOSITORY}/debian:bookworm"
DEBIAN_SUITE = "bookworm"
DEBIAN_PYTHON = "3.11"  # what bookworm's python3 is; the stand-in can offer no other
# rayproject/ray keeps its conda environment here; the same path lets drivers that name it work.
PYTHON_PREFIX = "/home/ray/anaconda3"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def standin_tag(recipe: Recipe, platform: str = DEFAULT_PLATFORM) -> str:
    """The stand-in's tag, suffixed as rayproject/ray's for the platform (-aarch64)."""
    return with_suffix(f"{IMAGE_REPOSITORY}/ray-standin:{recipe.ray_version}-"
                       f"{recipe.python_tag}-cpu", platform)


def os_image_for(platform: str = DEFAULT_PLATFORM) -> str:
    """The debootstrapped Debian of a platform: rayhpc/debian:bookworm(-aarch64)."""
    return with_suffix(OS_IMAGE, platform)


def render_base_dockerfile(recipe: Recipe, os_image: str = OS_IMAGE,
                           platform: str = DEFAULT_PLATFORM, emulated: bool = False) -> str:
    """``emulated``: the build runs under qemu-user (another platform than the host's): pip
    then writes no bytecode (compiling Ray's thousands of modules emulated takes minutes;
    Python compiles what it imports, once, at run time)."""
    if recipe.python != DEBIAN_PYTHON:
        raise UserError(f"{recipe.path}: python: the stand-in base is Debian {DEBIAN_SUITE} with "
                        f"Python {DEBIAN_PYTHON}; recipe asks for {recipe.python}. Use a real "
                        "rayproject/ray base (--base) or python: \"3.11\"")
    packages = ("python3", "python3-venv", "ca-certificates", "procps")
    # rayproject/ray holds "Ray and all of its dependencies" (ray-project/ray docker/README.md):
    # the dashboard's and Ray Serve's (--serve) at least, and numpy.
    pip = (f"ray[default,serve]=={recipe.ray_version}", "numpy")
    lines = [
        "# Stand-in for "
        + with_suffix(f"rayproject/ray:{recipe.ray_version}-{recipe.python_tag}-cpu", platform)
        + ", rendered by",
        "# rayhpc for hosts that cannot pull it. Do not edit: run `rayhpc base`.",
        f"FROM {os_image}",
        f"ARG {SECRETS_ARG}=",
        run_steps(apt_install(packages)),
        f"RUN {add_user(IMAGE_USER, group='users')}",
        f"ENV PATH={PYTHON_PREFIX}/bin:{SYSTEM_PATH}",
        f"USER {IMAGE_USER}",
        "WORKDIR /home/ray",
        run_steps([
            f"python3 -m venv {PYTHON_PREFIX}",
            FETCH_SECRETS,
            pip_install(pip) + (" --no-compile" if emulated else ""),
            FORGET_SECRETS,
        ]),
        label_instruction({
            "org.opencontainers.image.title": "rayhpc stand-in for rayproject/ray",
            "org.rayhpc.standin": "true",
            "org.rayhpc.ray-version": recipe.ray_version,
            "org.rayhpc.python-version": DEBIAN_PYTHON,
        }),
    ]
    return "\n".join(lines) + "\n"
