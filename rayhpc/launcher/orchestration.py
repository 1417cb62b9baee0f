"""What `rayhpc launch` does: resolve the spec (pure), ready the shared dir and the image (side
effects), then run on the site's backend."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from rayhpc.common.user_error import UserError
from rayhpc.launcher.backends import backend_for
from rayhpc.launcher.backends.rundir import (
    busy_gcs_ports,
    check_reachable,
    check_shared,
    stage_examples,
)
from rayhpc.launcher.contract import AF_UNIX_MAX, LaunchSpec, NodeGroup, temp_dir_fits
from rayhpc.launcher.resolve.config import Site, check_groups, load_site, resolve_settings
from rayhpc.launcher.resolve.driver import check_driver
from rayhpc.launcher.resolve.groups import group_flags, resolved_groups
from rayhpc.launcher.resolve.queues import choose_queue, queue_warning
from rayhpc.launcher.resolve.run_ids import (
    PORT_BLOCKS,
    default_temp_dir,
    new_run_id,
    ports_for,
    unused_run_id,
)
from rayhpc.launcher.resolve.serve_app import check_serve_app
from rayhpc.launcher.schedulers import allocated_nodes
from rayhpc.launcher.times import format_walltime

DEFAULT_NODES = 3
AUTH = "token"  # Ray's token authentication, wherever the image's Ray has it


def shared_path(settings: Mapping[str, Any]) -> Path:
    return Path(settings["shared"]).expanduser().absolute()


def resolve_spec(site: Site, cli: Mapping[str, Any], environ: Mapping[str, str],
                 run_id: str | None = None, now: float = 0.0,
                 interactive: bool = False) -> LaunchSpec:
    """The complete spec of a launch from the site, the flags and the environment. Pure: it
    reads and writes nothing (the run id is new unless given; ``now`` is t_submit).

    No driver (none given anywhere, or ``interactive``: --interactive wins over a driver from
    the environment or the site file) makes an interactive cluster."""
    if interactive and cli.get("driver") is not None:
        raise UserError("--interactive: an interactive cluster runs no --driver; drop one of "
                        "them (submit drivers later with `rayhpc submit --run ID -- CMD`)")
    settings = resolve_settings(site, cli, environ)
    if interactive:
        settings["driver"] = None
    groups = launch_groups(site, cli)
    if groups:
        settings["nodes"] = sum(group.nodes for group in groups)
    if settings["nodes"] is None:
        settings["nodes"] = allocated_nodes(environ, site.scheduler,
                                            site.option("scheduler_options")) or DEFAULT_NODES
    walltime_s = settings.pop("walltime")
    if settings["stop_grace"] >= walltime_s:
        raise UserError(f"--walltime: {format_walltime(walltime_s)} leaves no time to run: the "
                        f"agents are told to stop {settings['stop_grace']} s (stop_grace) "
                        "before the end; give a longer walltime")
    settings["queue"] = choose_queue(list(site.queues), settings["queue"], settings["nodes"],
                                     walltime_s, site.name, site.queue_source)
    if site.option("requires_account") and not settings["account"]:
        raise UserError(f"--account: site {site.name} refuses jobs without a project to "
                        "charge; give --account PROJECT, set RAYHPC_ACCOUNT=PROJECT, or put "
                        f"`account: PROJECT` in the site file {site.path}")
    if settings["temp_dir"] and not temp_dir_fits(settings["temp_dir"]):
        raise UserError(f"temp_dir: {settings['temp_dir']} is too long for Ray's AF_UNIX socket "
                        f"paths ({AF_UNIX_MAX} bytes with Ray's own part); use a short node-local "
                        "dir like /tmp/ray-$USER")
    backend = backend_for(site)
    backend.check_queue(site.name, cli.get("queue"))
    if settings["restart_on_failure"] and not settings["restarts"]:
        raise UserError("--restart-on-failure: a failed driver is started again within the "
                        "run's restarts, and it has none; give --restarts N too")
    backend.check_restarts(site, settings["restarts"], environ)
    check_endpoint(settings)
    settings["checkpoint_dir"] = checkpoint_dir(settings["checkpoint_dir"],
                                                shared_path(settings))
    backend.check_gpu_request(site, settings["num_gpus"], groups)
    run_id = run_id or new_run_id(now or None)
    image = settings["image"]
    if groups:
        groups = resolved_groups(groups, image or ("" if all(g.image for g in groups)
                                                   else backend.default_image()),
                                 settings["num_gpus"])
        image = groups[0].image  # the head's
    return LaunchSpec(
        **{**settings, "shared": shared_path(settings),
           "image": image or backend.default_image(),
           "temp_dir": settings["temp_dir"] or default_temp_dir(run_id)},
        walltime_s=walltime_s, run_id=run_id, site=site.name, scheduler=site.scheduler,
        runtime=site.runtime, auth=AUTH, t_submit=now, ports=ports_for(run_id),
        node_names=backend.node_names(settings["nodes"], groups), groups=groups)


def check_endpoint(settings: Mapping[str, Any]) -> None:
    """UserError for an endpoint that cannot work: a Serve application beside a driver (it is
    deployed on an interactive cluster), or a port among the ones rayhpc gives Ray."""
    if settings["serve"] and settings["driver"] is not None:
        raise UserError("--serve: a Serve application is deployed on an interactive cluster "
                        "(no --driver); drop --driver, or deploy it from your driver and give "
                        "--serve-port PORT so that rayhpc probes and tunnels it")
    port = settings["serve_port"]
    first, end, _ = PORT_BLOCKS
    if port is not None and first <= port < end:
        raise UserError(f"--serve-port: {port} is in {first}-{end - 1}, where rayhpc gives "
                        "Ray the ports of its runs; choose a port outside it (default: 8000)")


def checkpoint_dir(given: str | None, shared: Path) -> str:
    """The driver's checkpoint directory as given (relative: to the shared dir), "" for the
    default; UserError when it is outside the shared dir: the head of the next attempt (on
    another node, in another container) sees only that."""
    if not given:
        return ""
    path = Path(os.path.normpath(shared / Path(given).expanduser()))
    if path != shared and shared not in path.parents:
        raise UserError(f"--checkpoint-dir: {given} is outside the shared dir {shared}: the "
                        "nodes of a later attempt see only the shared dir; give a directory "
                        "inside it (default: <shared>/checkpoints/<run id>)")
    return str(path)


def launch_groups(site: Site, cli: Mapping[str, Any]) -> tuple[NodeGroup, ...]:
    """The launch's node groups: --group flags (all of them) instead of the site file's."""
    groups = site.groups
    if cli.get("group"):
        groups = group_flags(cli["group"])
        check_groups(groups, site, "--group")
    if groups and cli.get("nodes") is not None:
        total = sum(group.nodes for group in groups)
        counts = " + ".join(f"{group.name} {group.nodes}" for group in groups)
        raise UserError(f"--nodes: the node groups give the node count ({counts} = {total}); "
                        "drop --nodes, or change the groups' `nodes`")
    return groups


@dataclasses.dataclass
class Made:
    """What a launch's preparation created outside its run directory: undone when the launch
    is refused, so that a refused command leaves nothing behind."""
    examples: Path | None = None  # the examples it staged
    dirs: list[Path] = dataclasses.field(default_factory=list)  # deepest first

    def undo(self) -> None:
        if self.examples is not None:
            shutil.rmtree(self.examples, ignore_errors=True)
        for path in self.dirs:
            with contextlib.suppress(OSError):  # only where still empty
                path.rmdir()


def prepare(spec: LaunchSpec, site: Site, made: Made | None = None) -> LaunchSpec:
    """Ready what the run needs before anything starts: the shared dir (created, reachable by
    the containers' user, examples staged), the driver script, the image, a free port block.
    Returns the spec with its final run id, submit time and the backend's facts (the local
    dashboard's port, the login host). ``made``: gets what this call creates outside the run
    directory."""
    backend = backend_for(site)
    owner = backend.container_owner()
    wanted = spec.shared.expanduser().resolve()
    made = made if made is not None else Made()
    made.dirs = [path for path in [wanted / "runs", wanted, *wanted.parents]
                 if not path.exists()]
    shared = check_shared(spec.shared, owner)
    if owner is not None:
        check_reachable(shared, *owner)
    if stage_examples(shared):
        made.examples = shared / "examples"
    if spec.driver is not None:
        check_driver(spec.driver, shared)
    warning = check_serve_app(spec.serve, shared) if spec.serve else ""
    if warning:
        print(warning, file=sys.stderr)
    backend.ready_image(spec, site, dry_run=False)
    run_id = unused_run_id(busy_gcs_ports(shared), first=spec.run_id)
    changes = backend.run_facts(spec)  # what only this machine knows now
    if run_id != spec.run_id:
        changes.update(run_id=run_id, ports=ports_for(run_id))
        if spec.temp_dir == default_temp_dir(spec.run_id):
            changes["temp_dir"] = default_temp_dir(run_id)
    # Bring-up is counted from here: building the image on first use is not part of it.
    return dataclasses.replace(spec, **changes, t_submit=time.time())


def launch(site_name: str, cli: dict[str, Any], dry_run: bool = False, wait: bool = False,
           interactive: bool = False, detach: bool = False) -> int:
    """`rayhpc launch`: the exit code."""
    return start(site_name, cli, dry_run, wait, interactive, detach)[0]


def start(site_name: str, cli: dict[str, Any], dry_run: bool = False, wait: bool = False,
          interactive: bool = False, detach: bool = False, up: bool = False,
          out: TextIO | None = None, stopped_by: str = "") -> tuple[int, LaunchSpec | None]:
    """Launch; the exit code and the spec of the run (None: nothing was launched).

    ``detach`` (an interactive cluster on the local site) and ``wait`` (on an HPC site) return
    once every node joined, with exit code 0 and the cluster up; ``up`` does what either does
    on its site (the Python `Cluster`). ``out``: where progress goes (default: stdout);
    ``stopped_by``: what stops a cluster left up ("" : `rayhpc down --run ID`)."""
    site = load_site(site_name)
    backend = backend_for(site)
    spec = resolve_spec(site, cli, os.environ, now=time.time(), interactive=interactive)
    backend.check_modes(spec, wait=wait, detach=detach, dry_run=dry_run)
    warning = queue_warning(list(site.queues), spec.queue, spec.nodes, spec.walltime_s,
                            site.name, site.queue_source)
    if warning:
        print(warning, file=sys.stderr)
    if dry_run:  # writes nothing: the script as it would be submitted
        print(backend.dry_run(spec, site), end="")
        return 0, None
    made = Made()
    try:
        spec = prepare(spec, site, made)
        return backend.run(spec, site, wait=wait or up, detach=detach or up, out=out,
                           stopped_by=stopped_by), spec
    except UserError:
        if not spec.run_dir.exists():  # refused before anything ran
            made.undo()
        raise
