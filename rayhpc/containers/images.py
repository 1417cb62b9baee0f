"""What the build tasks do: recipe -> Dockerfile -> image, and the stand-in base."""

from __future__ import annotations

from rayhpc.common.user_error import UserError
from rayhpc.containers.dockerfile import render_dockerfile
from rayhpc.containers.emulation import check_emulation
from rayhpc.containers.engine import (
    build_image,
    build_labels,
    check_image_ref,
    connect,
    ensure_image,
    image_exists,
)
from rayhpc.containers.pip_resolve import check_resolvable
from rayhpc.containers.platforms import (
    PLATFORM_LABEL,
    base_for,
    check_platform,
    host_platform,
    with_suffix,
)
from rayhpc.containers.progress import Progress
from rayhpc.containers.recipe import DEFAULT_RECIPE, IMAGE_REPOSITORY, Recipe, load_recipe
from rayhpc.containers.requirements import added_tag, check_requirements, read_requirements_file
from rayhpc.containers.rootfs import debootstrap_image
from rayhpc.containers.secrets import BuildSecrets
from rayhpc.containers.standin import (
    os_image_for,
    render_base_dockerfile,
    standin_tag,
)


def build_recipe_image(recipe_name: str = DEFAULT_RECIPE, variant: str = "cpu",
                       base: str | None = None, tag: str | None = None,
                       ca_bundle: str | None = None, pip_index_url: str | None = None,
                       progress: Progress | None = None, no_cache: bool = False,
                       pip: tuple[str, ...] = (), requirements: str | None = None,
                       platform: str | None = None) -> str:
    """Build one variant of a recipe; return its tag. ``no_cache``: rebuild every layer.
    ``pip``, ``requirements`` (a file): packages added for this build, one layer after the
    recipe's, checked against the base's Ray before the build starts. ``platform``: the
    image's (default: the recipe's `platform`); the base and the tag follow it as
    rayproject/ray's tags do (-aarch64)."""
    progress = progress or Progress()
    recipe = load_recipe(recipe_name)
    platform = check_platform(platform, "--platform") if platform else recipe.platform
    added = added_packages(recipe, pip, requirements)
    base = base or base_for(recipe.variant(variant).base, platform)
    if not tag and added:
        tag = added_tag(recipe.image_tag(variant, platform), added)
        progress.note(f"rayhpc: packages added for this build: {' '.join(added)}; image tag "
                      f"{tag} (--tag to choose another)")
    tag = tag or recipe.image_tag(variant, platform)
    check_image_ref(tag, "--tag")
    check_image_ref(base, "--base")
    secrets = BuildSecrets.resolve(ca_bundle, pip_index_url)
    check_emulation(platform)
    api = connect()
    ensure_image(api, base, progress,
                 hint=f"on a host without registry access build a stand-in with `rayhpc base` "
                      f"and pass --base {standin_tag(recipe, platform)}", platform=platform)
    if added and recipe.ray_version:
        progress.step(f"checking that pip can install {' '.join(added)} with Ray "
                      f"{recipe.ray_version} (in {base})")
        try:
            note = check_resolvable(api, base, recipe.ray_version, (*recipe.pip, *added),
                                    secrets, "--pip/--requirements")
        finally:
            progress.done()
        if note:
            progress.note(f"rayhpc: {note}")
    labels = build_labels()
    labels["org.opencontainers.image.base.name"] = base
    # A build-time label, not the rendered Dockerfile's: --platform changes it.
    labels[PLATFORM_LABEL] = platform
    build_image(api, render_dockerfile(recipe, variant, base, added), tag, progress, secrets,
                labels, no_cache, platform=platform)
    return tag


def added_packages(recipe: Recipe, pip: tuple[str, ...] = (),
                   requirements: str | None = None) -> tuple[str, ...]:
    """The packages of --pip and --requirements, checked (before any engine is asked), in
    order, without duplicates and without what the recipe installs already."""
    added = check_requirements(tuple(pip), recipe.ray_version, "--pip")
    if requirements:
        added += read_requirements_file(requirements, recipe.ray_version)
    return tuple(p for p in dict.fromkeys(added) if p not in recipe.pip)


def build_standin_base(recipe_name: str = DEFAULT_RECIPE, os_image: str | None = None,
                       mirror: str | None = None, tag: str | None = None,
                       ca_bundle: str | None = None, pip_index_url: str | None = None,
                       progress: Progress | None = None, no_cache: bool = False,
                       platform: str | None = None) -> str:
    """Build the stand-in for the recipe's rayproject/ray base; return its tag. ``platform``:
    the stand-in's (default: the recipe's); another than the host's is built under emulation
    (qemu-user registered with binfmt_misc)."""
    progress = progress or Progress()
    recipe = load_recipe(recipe_name)
    platform = check_platform(platform, "--platform") if platform else recipe.platform
    tag = tag or standin_tag(recipe, platform)
    check_image_ref(tag, "--tag")
    if os_image is not None:
        check_image_ref(os_image, "--os-image")
    secrets = BuildSecrets.resolve(ca_bundle, pip_index_url)
    check_emulation(platform)
    api = connect()
    if os_image is None:
        os_image = os_image_for(platform)
        if not image_exists(api, os_image):
            debootstrap_image(api, os_image, "bookworm", mirror, progress, platform=platform)
    else:
        ensure_image(api, os_image, progress, hint="pass a Debian bookworm image you have",
                     platform=platform)
    emulated = platform != host_platform()
    build_image(api, render_base_dockerfile(recipe, os_image, platform, emulated), tag, progress,
                secrets, {**build_labels(), PLATFORM_LABEL: platform}, no_cache,
                platform=platform)
    return tag


# Rough durations of the first-run steps, said before each so that a first launch does not look
# hung. From the figures on the project's 2-core test machines: debootstrap ~25 s; the Ray
# stand-in about 90 s from nothing (debootstrap, then Python, ray[default] and numpy: the cold
# Ray base alone ~45 s in benchmarks/README.md "Rebuild"); the ray recipe on its base ~6 s cold.
FIRST_RUN_STANDIN = "debootstrap, Python, Ray; about 90 s, once"
FIRST_RUN_STANDIN_ON_OS = "Python, Ray; about 45 s, once"  # the Debian base is there already
FIRST_RUN_DEBOOTSTRAP = "about 30 s, once"
FIRST_RUN_RECIPE = {"ray": "about 10 s"}


def ensure_recipe_image(recipe_name: str = DEFAULT_RECIPE, variant: str = "cpu",
                        progress: Progress | None = None) -> str:
    """The recipe's image, built on first use: from the real base when it can be had, else from
    a stand-in (built too when missing). For one-command use without a registry.

    Says what it builds and roughly how long that takes before each long step; says nothing
    when the image is there."""
    progress = progress or Progress()
    recipe = load_recipe(recipe_name)
    tag = recipe.image_tag(variant)
    api = connect()
    if image_exists(api, tag):
        return tag
    progress.note(f"rayhpc: image {tag} is not built yet: building it now, once (later runs "
                  "skip this)")
    base = base_for(recipe.variant(variant).base, recipe.platform)
    try:
        ensure_image(api, base, progress, hint="", platform=recipe.platform)
    except UserError:
        wanted, base = base, standin_for(recipe, base)
        if image_exists(api, base):
            progress.note(f"rayhpc: {wanted} cannot be pulled here; using the stand-in base "
                          f"{base}")
        elif recipe.kind == "ray":
            took = (FIRST_RUN_STANDIN_ON_OS if image_exists(api, os_image_for(recipe.platform))
                    else FIRST_RUN_STANDIN)
            progress.note(f"rayhpc: {wanted} cannot be pulled here: building the stand-in Ray "
                          f"base {base} first ({took})")
            build_standin_base(recipe_name, progress=progress)
        else:
            progress.note(f"rayhpc: {wanted} cannot be pulled here: building the stand-in "
                          f"{base} by debootstrap first ({FIRST_RUN_DEBOOTSTRAP})")
            debootstrap_image(api, base, debian_suite(wanted), None, progress,
                              platform=recipe.platform)
    took = FIRST_RUN_RECIPE.get(recipe.kind)
    progress.note(f"rayhpc: building image {tag} from recipe {recipe.name}"
                  + (f" ({took})" if took else ""))
    return build_recipe_image(recipe_name, variant, base=base, progress=progress)


def debian_suite(image: str) -> str:
    """debian:sid-slim -> sid; debian:bookworm -> bookworm."""
    return image.split(":", 1)[1].split("-")[0] if ":" in image else "stable"


def standin_for(recipe: Recipe, base: str) -> str:
    """The local stand-in for a base that cannot be pulled: Ray's, or a debootstrapped Debian."""
    if recipe.kind == "ray":
        return standin_tag(recipe, recipe.platform)
    if base.split(":")[0] in ("debian", "library/debian", "docker.io/library/debian"):
        return with_suffix(f"{IMAGE_REPOSITORY}/debian:{debian_suite(base)}", recipe.platform)
    raise UserError(f"{recipe.path}: base {base} cannot be pulled here and has no stand-in; "
                    "pass --base with an image you have")
