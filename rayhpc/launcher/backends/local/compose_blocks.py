"""A grown block on the local site (engine side, docker-py): a compose project of its own on
the run's network (`compose.render_block_compose`), its state, its removal."""

from __future__ import annotations

import subprocess

import docker.errors

from rayhpc.common.user_error import UserError
from rayhpc.containers.engine import connect
from rayhpc.launcher.backends.local import container_user
from rayhpc.launcher.backends.local.compose import (
    CONTAINER_BLOCK_LABEL,
    RUN_LABEL,
    block_project,
    render_block_compose,
)
from rayhpc.launcher.backends.local.compose_run import compose_command
from rayhpc.launcher.backends.local.manage import check_machine_holds, ready_images
from rayhpc.launcher.contract import Block, LaunchSpec, RunPaths, atomic_write


def block_containers(run_id: str, block: str) -> list[dict]:
    return connect().containers(all=True, filters={"label": [f"{RUN_LABEL}={run_id}",
                                                             f"{CONTAINER_BLOCK_LABEL}={block}"]})


def start_block(spec: LaunchSpec, block: Block, head_ip: str, environment: dict,
                default_image: str) -> None:
    """`docker compose up` of the block's project; UserError (its containers removed) when
    the engine refuses it."""
    check_machine_holds(spec, more=block.nodes)
    ready_images([(block.image, "--group" if block.group else "--image")], default_image)
    if not connect().networks(names=[spec.project]):
        raise UserError(f"--run: the network {spec.project} of run {spec.run_id} is not on "
                        "this engine (its cluster runs elsewhere, or was removed)")
    user, _ = container_user()
    paths = RunPaths(spec.run_dir)
    compose_file = paths.block_file(block.name, "yaml")
    atomic_write(compose_file, render_block_compose(
        spec, block, head_ip, user, {str(k): str(v) for k, v in environment.items()}),
        root=paths.dir)
    project = block_project(spec, block.name)
    up = subprocess.run([*compose_command(), "-p", project, "-f", str(compose_file), "up", "-d",
                         "--no-build"], capture_output=True, text=True, errors="replace")
    if up.returncode != 0:
        remove_block(spec.run_id, block.name)
        raise UserError(f"docker compose up of block {block.name} failed: "
                        f"{up.stderr.strip()[-800:]}")


def block_state(run_id: str, block: str) -> str:
    """e.g. "running 2/2" ("" : no container of it is left)."""
    found = block_containers(run_id, block)
    if not found:
        return ""
    running = sum(1 for c in found if c["State"] == "running")
    return f"running {running}/{len(found)}" if running else "exited"


def remove_block(run_id: str, block: str) -> int:
    """Remove the block's containers (forcibly: their agents have stopped, or never ran);
    how many."""
    api = connect()
    found = block_containers(run_id, block)
    for container in found:
        try:
            api.remove_container(container["Id"], force=True, v=True)
        except docker.errors.APIError as exc:
            if exc.status_code not in (404, 409):  # 409: another command removes it now
                raise
    return len(found)
