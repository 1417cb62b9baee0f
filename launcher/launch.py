"""What `invoke launch` does: resolve the config, check the input, then run on the site."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from containers.engine import connect, image_exists
from containers.errors import UserError
from containers.images import ensure_recipe_image
from containers.progress import Progress
from launcher.config import load_site, resolve_settings
from launcher.driver import check_driver
from launcher.local import LocalLaunch, compose_command, container_user
from launcher.rundir import check_reachable, check_shared, stage_examples
from launcher.spec import LaunchSpec, new_run_id, node_names


def build_spec(site_name: str, cli: dict[str, Any]) -> LaunchSpec:
    """Resolve and check everything that can be checked before anything starts."""
    site = load_site(site_name)
    settings = resolve_settings(site, cli)
    shared = check_shared(Path(settings.pop("shared")))
    _, owner = container_user()
    if owner is not None:
        check_reachable(shared, *owner)
    stage_examples(shared)
    check_driver(settings["driver"], shared)
    nodes = settings["nodes"]
    return LaunchSpec(run_id=new_run_id(), site=site.name, scheduler=site.scheduler,
                      runtime=site.runtime, shared=shared, node_names=node_names(nodes),
                      image=settings.pop("image") or "", **settings)


def launch(site_name: str, cli: dict[str, Any]) -> int:
    spec = build_spec(site_name, cli)
    api = connect()
    compose_command()  # fail on a missing compose before building or creating anything
    if spec.image:
        if not image_exists(api, spec.image):
            raise UserError(f"--image: {spec.image} is not on this Docker engine; build it "
                            "with `invoke build` (or load it with `docker load`)")
    else:
        spec.image = ensure_recipe_image(progress=Progress())
    return LocalLaunch(spec, api).run()
