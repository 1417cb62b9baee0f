"""The local backend: a cluster of containers on this machine's Docker engine, with docker
compose (site `scheduler: local`, runtime docker).

This module is what every command imports; the modules that talk to the engine through
docker-py (`launch`, `manage`, `containers.engine`, `containers.images`) are imported only
when a method needs the engine, so that a login node with no engine never loads docker-py.
"""

from __future__ import annotations

import grp
import importlib
import os
import socket
from types import ModuleType
from typing import TYPE_CHECKING, TextIO

from rayhpc.common.user_error import UserError
from rayhpc.containers.recipe import DEFAULT_RECIPE, load_recipe
from rayhpc.launcher.backends.backend_interface import Backend, check_versions, images_to_check
from rayhpc.launcher.backends.local.compose import IMAGE_USER_UID
from rayhpc.launcher.contract import NodeGroup
from rayhpc.launcher.resolve.groups import group_node_names
from rayhpc.launcher.runtimes.oci import Docker

PRIVATE_GID_FROM = 59999  # below Debian's 60000-64999 (allocated on demand) and nogroup

if TYPE_CHECKING:
    from rayhpc.launcher.contract import Block, LaunchedRun, LaunchSpec
    from rayhpc.launcher.resolve.config import Site


def container_user() -> tuple[str, tuple[int, int] | None]:
    """Who the containers run as (uid:gid), and, where we are root, that uid and gid.

    Never root. As root: the image's user (uid 1000) with a group no one on this machine
    has as primary group: the run directory and its token are root's and that group's only,
    so that uid 1000, somebody's real account on many shared machines, cannot read the token
    or change the run. Otherwise the containers run as you, so files in the shared dir stay
    yours.
    """
    if os.geteuid() == 0:
        gid = private_gid()
        return f"{IMAGE_USER_UID}:{gid}", (int(IMAGE_USER_UID), gid)
    return f"{os.geteuid()}:{os.getegid()}", None


def private_gid() -> int:
    """A group id that no group of this machine has (its group database, NSS included): the
    first free one counting down from PRIVATE_GID_FROM, the same on every call."""
    for gid in range(PRIVATE_GID_FROM, PRIVATE_GID_FROM - 10000, -1):
        try:
            grp.getgrgid(gid)
        except KeyError:
            return gid
    raise UserError(f"no free group id in {PRIVATE_GID_FROM - 9999}-{PRIVATE_GID_FROM} for the "
                    "containers' private group; launch as a non-root user")


def free_local_port() -> int:
    """A port on 127.0.0.1 that is free now (for the dashboard, named in connect.txt before the
    containers start; the engine would pick one only once they run)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalBackend(Backend):
    name = "local"
    has_queues = False  # its nodes are containers on this machine, started at once
    schedulers = ("local",)
    runtimes = (Docker.name,)
    # No job script: no setup lines, launcher or scheduler flags.
    options = ("environment", "groups", "platform")

    def node_names(self, nodes: int, groups: tuple[NodeGroup, ...] = ()) -> list[str]:
        if groups:
            return group_node_names(groups)
        return ["head"] + [f"worker-{i}" for i in range(1, nodes)]

    def node_launcher(self, site: Site) -> str:
        return "compose"

    def default_image(self) -> str:
        return load_recipe(DEFAULT_RECIPE).image_tag("cpu")

    def container_owner(self) -> tuple[int, int] | None:
        return container_user()[1]

    def ready_image(self, spec: LaunchSpec, site: Site, dry_run: bool) -> None:
        versions = engine_side("manage").ready_images(images_to_check(spec), self.default_image())
        check_versions(versions)
        engine_side("manage").check_gpus(spec)
        engine_side("manage").check_platforms(images_to_check(spec), site)

    def check_modes(self, spec: LaunchSpec, wait: bool, detach: bool, dry_run: bool) -> None:
        super().check_modes(spec, wait, detach, dry_run)
        if detach and spec.restarts:
            raise UserError("--restarts: a detached local cluster has no launcher left to "
                            "start it again; drop --detach (the launch then stays in the "
                            "foreground) or --restarts")
        if not dry_run:
            engine_side("manage").check_machine_holds(spec)

    def run_facts(self, spec: LaunchSpec) -> dict:
        published = {"dashboard": free_local_port(), "client": free_local_port()}
        if spec.has_endpoint:
            published["serve"] = free_local_port()
        return {"published": published}

    def run(self, spec: LaunchSpec, site: Site, wait: bool = False, detach: bool = False,
            out: TextIO | None = None, stopped_by: str = "") -> int:
        launch = engine_side("compose_run").LocalLaunch(spec, site.option("environment"), out)
        return launch.run(detach=detach, stopped_by=stopped_by)

    def describe(self, run: LaunchedRun) -> list[str]:
        states = engine_side("manage").container_states(run.spec)
        return [", ".join(f"{node}: {state}" for node, state in states.items())
                or "no containers"]

    def running(self, run: LaunchedRun) -> bool | None:
        states = engine_side("manage").container_states(run.spec)
        return states.get(run.spec.node_names[0]) == "running"

    def stop(self, run: LaunchedRun, say) -> None:
        engine_side("manage").stop_run(run.spec, say)

    def cleanup(self, run: LaunchedRun, say) -> None:
        engine_side("compose_run").LocalLaunch(run.spec).teardown()

    def leftovers(self) -> dict[str, str]:
        try:
            manage = engine_side("manage")
        except ImportError:  # no docker-py here (an HPC login node): no engine to look at
            return {}
        return {run_id: state.line() for run_id, state in manage.engine_runs().items()}

    def check_leftovers_readable(self) -> None:
        try:
            manage = engine_side("manage")
        except ImportError:  # no docker-py here (an HPC login node): no engine to look at
            return
        manage.connect()  # UserError: no Docker engine reachable at ...

    def run_dir_of(self, run_id: str) -> str:
        found = engine_side("manage").engine_runs().get(run_id)
        return found.run_dir if found else ""

    def why_alive(self, run_id: str) -> str:
        manage = engine_side("manage")
        found = manage.engine_runs().get(run_id)
        return manage.why_alive(found) if found else ""

    def remove_leftovers(self, run_id: str) -> str:
        containers, networks = engine_side("manage").remove_run(run_id)
        return f"{containers} container(s), {networks} network(s)"

    # -- blocks: a compose project of its own on the run's network

    def blocks_problem(self, spec: LaunchSpec) -> str:
        return ""

    def submit_block(self, spec: LaunchSpec, site: Site, block: Block, head_ip: str) -> str:
        engine_side("compose_blocks").start_block(spec, block, head_ip, site.option("environment"),
                                          self.default_image())
        return ""

    def block_state(self, run: LaunchedRun, block: Block) -> str:
        return engine_side("compose_blocks").block_state(run.run_id, block.name)

    def cancel_block(self, run: LaunchedRun, block: Block, say) -> None:
        removed = engine_side("compose_blocks").remove_block(run.run_id, block.name)
        if removed:
            say(f"block {block.name}: removed its {removed} container(s)")

    def working_dir_upload(self) -> bool:
        return True  # the dashboard is on this machine: a directory of it can be sent along


def engine_side(module: str) -> ModuleType:
    """One of this backend's engine-side modules (`launch`, `manage`, `blocks`), imported on
    first use: they load docker-py, which a login node with no engine never needs. The one
    place where the launcher defers an import."""
    return importlib.import_module(f"{__name__}.{module}")
