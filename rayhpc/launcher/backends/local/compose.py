"""Render the docker compose file of a local launch (pure: data in, text out; golden-tested)."""

from __future__ import annotations

from typing import Any

import yaml

from rayhpc.launcher.contract import (
    HEAD_HOST_ENV,
    Block,
    LaunchSpec,
    NodeGroup,
    RunPaths,
    fabric_environment,
)
from rayhpc.launcher.resolve.groups import nodes_by_group
from rayhpc.launcher.runtimes import ExecRequest
from rayhpc.launcher.runtimes.oci import Docker

RUN_LABEL = "org.rayhpc.run"
CONTAINER_NODE_LABEL = "org.rayhpc.node"
CONTAINER_GROUP_LABEL = "org.rayhpc.group"
CONTAINER_BLOCK_LABEL = "org.rayhpc.block"  # a grown block's containers (`rayhpc grow`)
# Where the run's directory is: `rayhpc down --run ID` with another --shared finds it there.
RUN_DIR_LABEL = "org.rayhpc.run-dir"
IMAGE_USER_UID = "1000"


def stop_moment(start: float, walltime_s: int, stop_grace: int) -> str:
    """When a local run (or block) is asked to stop, as its node program's --stop-at: its
    walltime less stop_grace after its start, as a job script's walltime warning would."""
    return f"{start + walltime_s - stop_grace:.0f}"


def render_compose(spec: LaunchSpec, user: str = IMAGE_USER_UID,
                   environment: dict[str, str] | None = None) -> str:
    """One service per node (head first), all on the run's own network.

    ``user`` is the uid[:gid] the containers run as: never root. ``environment``: the site's,
    set on every node.
    """
    services = {}
    group_of = nodes_by_group(spec.groups, spec.node_names) if spec.groups else {}
    for index, node in enumerate(spec.node_names):
        role = "head" if index == 0 else "worker"
        group = spec.group(group_of[node]) if group_of else None
        # The head stops the run at its walltime (less stop_grace): no job script here does.
        stop_at = ["--stop-at", stop_moment(spec.t_submit, spec.walltime_s, spec.stop_grace)] \
            if role == "head" else []
        service = node_service(spec, node, group, user, environment,
                               RunPaths(spec.run_dir).agent_command(
                                   "--role", role, "--node-name", node,
                                   *(["--group", group.name] if group else []), *stop_at))
        if role == "head":
            # The dashboard (and Ray Client's port, for `ray.init("ray://...")` from this
            # host) reachable from this host only, on the ports picked when the run was
            # prepared (free ones; connect.txt names them), else on ones the engine picks.
            service["ports"] = [f"127.0.0.1:{spec.published.get(name, '')}:{spec.ports[name]}"
                                for name in ("dashboard", "client")]
            if spec.has_endpoint:  # the HTTP endpoint, the same way (docs/serving.md)
                service["ports"].append(f"127.0.0.1:{spec.published.get('serve', '')}:"
                                        f"{spec.endpoint_port}")
        services[node] = service
    document = {
        "services": services,
        "networks": {"ray": {"name": spec.project, "labels": {RUN_LABEL: spec.run_id,
                                                         RUN_DIR_LABEL: str(spec.run_dir)}}},
    }
    groups = "".join(f", {g.name} {g.nodes}" for g in spec.groups)
    header = (f"# Rendered by rayhpc for run {spec.run_id} ({spec.nodes} nodes{groups}). "
              "Do not edit: it is made anew by every launch.\n")
    return header + yaml.safe_dump(escape_interpolation(document), sort_keys=False,
                                   default_flow_style=False, width=1000)


def node_service(spec: LaunchSpec, node: str, group: NodeGroup | None, user: str,
                 environment: dict[str, str] | None, command: list[str],
                 labels: dict[str, str] | None = None) -> dict:
    """One node's compose service: its container (named for the run and node, on the run's
    network, as ``user``) running ``command``, in its group's image."""
    request = ExecRequest(
        image=group.image if group else spec.image, command=command,
        binds=[str(spec.shared)], workdir=str(spec.shared),
        gpu=group.gpu if group else "",
        # NCCL's and Gloo's interface from --interface, unless the site's environment
        # sets them (launcher.resolve.fabric_interface).
        env={**fabric_environment(spec.interface, environment or {}),
             **(environment or {}), "PYTHONUNBUFFERED": "1"},
        # A uid the image does not know has no home: give Ray a writable one.
        home=spec.temp_dir if user.split(":")[0] != IMAGE_USER_UID else "")
    return {
        "container_name": spec.container(node),
        "hostname": node,
        "user": user,
        "shm_size": spec.shm_size,
        **Docker.compose_service(request),
        "networks": ["ray"],
        "labels": {RUN_LABEL: spec.run_id, RUN_DIR_LABEL: str(spec.run_dir),
                   CONTAINER_NODE_LABEL: node,
                   **({CONTAINER_GROUP_LABEL: group.name} if group else {}),
                   **(labels or {})},
        "stop_grace_period": f"{spec.stop_timeout}s",
    }


def block_project(spec: LaunchSpec, block: str) -> str:
    """A grown block's compose project: the run's, and the block's name."""
    return f"{spec.project}-{block}"


def render_block_compose(spec: LaunchSpec, block: Block, head_host: str,
                         user: str = IMAGE_USER_UID,
                         environment: dict[str, str] | None = None) -> str:
    """A grown block on the local site: a compose project of its own whose worker nodes join
    the run's network (made by the run's project: external here) and reach the head's agent
    at ``head_host``; the same images, user and labels as the run's own nodes (the run's
    teardown finds them by the run's label)."""
    paths = RunPaths(spec.run_dir)
    group = spec.group(block.group) if block.group else None
    services = {}
    for node in block.node_names:
        command = paths.agent_command("--role", "worker", "--node-name", node,
                                      "--block", block.name, "--stop-at",
                                      stop_moment(block.t_submit, block.walltime_s,
                                                  spec.stop_grace),
                                      *(["--group", group.name] if group else []),
                                      program=paths.block_file(block.name, "pyz"))
        service = node_service(spec, node, group, user, environment, command,
                               {CONTAINER_BLOCK_LABEL: block.name})
        service["environment"] = {**service.get("environment", {}), HEAD_HOST_ENV: head_host}
        services[node] = service
    document = {"services": services,
                "networks": {"ray": {"name": spec.project, "external": True}}}
    header = (f"# Rendered by rayhpc for block {block.name} of run {spec.run_id} "
              f"({block.nodes} worker nodes{f' of group {group.name}' if group else ''}). "
              "Do not edit: `rayhpc grow` writes it.\n")
    return header + yaml.safe_dump(escape_interpolation(document), sort_keys=False,
                                   default_flow_style=False, width=1000)


def escape_interpolation(value: Any) -> Any:
    """Compose expands `$NAME` in every value: a literal `$` (a path like /tmp/x$y) is `$$`."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, dict):
        return {key: escape_interpolation(item) for key, item in value.items()}
    if isinstance(value, list):
        return [escape_interpolation(item) for item in value]
    return value
