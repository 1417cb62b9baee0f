"""Find and remove what launches left on this machine's Docker engine (`invoke down/status`).
Runs are known by their run directory too (`launcher.runs`); this is what the engine holds."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from common.errors import UserError
from launcher.compose import NODE_LABEL, RUN_LABEL

if TYPE_CHECKING:  # docker-py is needed only where there is an engine (not on a login node)
    import docker


@dataclass
class RunState:
    run_id: str
    nodes: dict[str, str] = field(default_factory=dict)  # node -> container status
    networks: list[str] = field(default_factory=list)

    def line(self) -> str:
        """`invoke status`'s line of a run known only by what it left on the engine."""
        nodes = ", ".join(f"{node}: {st}" for node, st in sorted(self.nodes.items()))
        return f"{self.run_id}  {len(self.nodes)} node(s)  {nodes or '(network only)'}"


def engine_runs(api: docker.APIClient | None = None) -> dict[str, RunState]:
    """`runs` of this machine's engine; none where no engine answers (e.g. an HPC login
    node)."""
    if api is None:
        try:
            from containers.engine import connect

            api = connect()
        except (ImportError, UserError):
            return {}
    return runs(api)


def runs(api: docker.APIClient) -> dict[str, RunState]:
    """Every run that has a container or network on this engine, by run id."""
    found: dict[str, RunState] = defaultdict(lambda: RunState(""))
    for container in api.containers(all=True, filters={"label": RUN_LABEL}):
        run_id = container["Labels"][RUN_LABEL]
        state = found[run_id]
        state.run_id = run_id
        state.nodes[container["Labels"].get(NODE_LABEL, container["Names"][0])] = \
            container["State"]
    for network in api.networks(filters={"label": RUN_LABEL}):
        run_id = network["Labels"][RUN_LABEL]
        found[run_id].run_id = run_id
        found[run_id].networks.append(network["Name"])
    return dict(sorted(found.items()))


def remove_run(api: docker.APIClient | None, run_id: str) -> tuple[int, int]:
    """Remove the run's containers (force) and networks; return how many of each."""
    import docker.errors

    if api is None:
        from containers.engine import connect

        api = connect()
    containers = api.containers(all=True, filters={"label": f"{RUN_LABEL}={run_id}"})
    for container in containers:
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_container(container["Id"], force=True, v=True)
    networks = api.networks(filters={"label": f"{RUN_LABEL}={run_id}"})
    for network in networks:
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_network(network["Id"])
    return len(containers), len(networks)
