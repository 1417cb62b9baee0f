"""Render the docker compose file of a local launch (pure: data in, text out; golden-tested)."""

from __future__ import annotations

import yaml

from launcher.spec import LaunchSpec

RUN_LABEL = "org.rayhpc.run"
NODE_LABEL = "org.rayhpc.node"
IMAGE_USER_UID = "1000"


def render_compose(spec: LaunchSpec, user: str = IMAGE_USER_UID) -> str:
    """One service per node (head first), all on the run's own network.

    ``user`` is the uid[:gid] the containers run as: never root.
    """
    shared, run_dir = str(spec.shared), str(spec.run_dir)
    services = {}
    for index, node in enumerate(spec.node_names):
        role = "head" if index == 0 else "worker"
        service = {
            "image": spec.image,
            "container_name": spec.container(node),
            "hostname": node,
            "init": True,  # reaps Ray's orphans and forwards SIGTERM to the agent
            "user": user,
            "shm_size": spec.shm_size,
            "working_dir": shared,
            "command": ["python", f"{run_dir}/node_agent.py", "--run-dir", run_dir,
                        "--role", role, "--node-name", node],
            "environment": {"PYTHONUNBUFFERED": "1"},
            "volumes": [{"type": "bind", "source": shared, "target": shared}],
            "networks": ["ray"],
            "labels": {RUN_LABEL: spec.run_id, NODE_LABEL: node},
            "stop_grace_period": f"{spec.stop_timeout}s",
        }
        if user.split(":")[0] != IMAGE_USER_UID:
            # A uid the image does not know has no home: give Ray a writable one.
            service["environment"]["HOME"] = spec.temp_dir
        if role == "head":
            # Dashboard reachable from this host only, on a port the engine picks (no clashes).
            service["ports"] = [f"127.0.0.1::{spec.ports['dashboard']}"]
        services[node] = service
    document = {
        "services": services,
        "networks": {"ray": {"name": spec.project, "labels": {RUN_LABEL: spec.run_id}}},
    }
    header = (f"# Rendered by rayhpc for run {spec.run_id} ({spec.nodes} nodes). "
              "Do not edit: it is made anew by every launch.\n")
    return header + yaml.safe_dump(document, sort_keys=False, default_flow_style=False,
                                   width=1000)
