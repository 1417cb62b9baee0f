"""What `invoke launch` does: resolve the config, check the input, then run on the site."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from containers.errors import UserError
from launcher.agent import AF_UNIX_MAX, temp_dir_fits
from launcher.config import Site, load_site, resolve_settings
from launcher.driver import check_driver
from launcher.rundir import busy_gcs_ports, check_reachable, check_shared, stage_examples
from launcher.schedulers import current_allocation
from launcher.spec import LaunchSpec, node_names, unused_run_id

DEFAULT_NODES = 3


def build_spec(site: Site, cli: dict[str, Any], owner: tuple[int, int] | None = None
               ) -> LaunchSpec:
    """Resolve and check everything that can be checked before anything starts."""
    settings = resolve_settings(site, cli)
    shared = check_shared(Path(settings.pop("shared")))
    if owner is not None:
        check_reachable(shared, *owner)
    stage_examples(shared)
    check_driver(settings["driver"], shared)
    if settings["nodes"] is None:
        allocation = current_allocation(os.environ)
        allocated = allocation.allocated_nodes(os.environ) if allocation else None
        settings["nodes"] = allocated or DEFAULT_NODES
    nodes = settings["nodes"]
    local = site.scheduler == "local"
    if settings["temp_dir"] and not temp_dir_fits(settings["temp_dir"]):
        raise UserError(f"temp_dir: {settings['temp_dir']} is too long for Ray's AF_UNIX socket "
                        f"paths ({AF_UNIX_MAX} bytes with Ray's own part); use a short node-local "
                        "dir like /tmp/ray-$USER")
    return LaunchSpec(run_id=unused_run_id(busy_gcs_ports(shared)), site=site.name,
                      scheduler=site.scheduler, runtime=site.runtime, shared=shared,
                      node_names=node_names(nodes) if local else [],
                      image=settings.pop("image") or "", **settings)


def launch(site_name: str, cli: dict[str, Any], dry_run: bool = False,
           wait: bool = False) -> int:
    site = load_site(site_name)
    if site.scheduler == "local":
        if dry_run:
            raise UserError("--dry-run: the local site submits no job script; drop --dry-run")
        return _launch_local(site, cli)
    return _launch_batch(site, cli, dry_run, wait)


def _launch_local(site: Site, cli: dict[str, Any]) -> int:
    from containers.engine import connect, image_exists
    from containers.images import ensure_recipe_image
    from containers.progress import Progress
    from launcher.local import LocalLaunch, container_user

    spec = build_spec(site, cli, owner=container_user()[1])
    api = connect()
    local = LocalLaunch(spec, api)  # fails on a missing compose before anything is built
    if spec.image:
        if not image_exists(api, spec.image):
            raise UserError(f"--image: {spec.image} is not on this Docker engine; build it "
                            "with `invoke build` (or load it with `docker load`)")
    else:
        spec.image = ensure_recipe_image(progress=Progress())
    return local.run()


def _launch_batch(site: Site, cli: dict[str, Any], dry_run: bool, wait: bool) -> int:
    from launcher.batch import BatchLaunch
    from launcher.jobscript import render_job_script

    spec = build_spec(site, cli)
    if not spec.image:
        raise UserError(f"--image: site {site.name} runs {site.runtime}: give the image to run "
                        "(a SIF from `invoke build --sif`, or the runtime's image name)")
    if site.runtime in ("apptainer", "singularity") and not dry_run \
            and not Path(spec.image).is_file():
        raise UserError(f"--image: {spec.image} is not a file; give the SIF path (see "
                        "`invoke build --sif`), on a file system every node sees")
    if dry_run:
        print(render_job_script(spec, site), end="")
        return 0
    return BatchLaunch(spec, site).run(wait=wait)
