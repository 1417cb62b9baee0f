"""The local backend's engine side (docker-py): the images a launch runs, the run's containers'
states, a clean stop, and what launches left on this machine's engine (`rayhpc down/status`).
Runs are known by their run directory too (`launcher.runs`); this is what the engine holds."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import docker.errors

from rayhpc.common.user_error import UserError
from rayhpc.containers.engine import (
    check_image_ref,
    connect,
    engine_gpus,
    image_exists,
    image_platform,
    ray_in_image,
)
from rayhpc.containers.images import ensure_recipe_image
from rayhpc.containers.platforms import mismatch, platform_for_arch
from rayhpc.containers.progress import Progress
from rayhpc.launcher.backends.local.capacity import MachineFacts, check_capacity
from rayhpc.launcher.backends.local.compose import CONTAINER_NODE_LABEL, RUN_DIR_LABEL, RUN_LABEL
from rayhpc.launcher.contract import LaunchSpec, RunPaths
from rayhpc.launcher.resolve.config import Site, size_bytes


def ready_images(images: list[tuple[str, str]], default_image: str) -> dict[str, dict]:
    """Each image (with the flag that names it) is on the engine (the default one is built on
    first use), with python and Ray in it; their versions by image, for the check that they
    agree. Before any node starts."""
    versions = {}
    api = connect()
    for image, flag in images:
        check_image_ref(image, flag)
        if image == default_image:
            ensure_recipe_image(progress=Progress())
        elif not image_exists(api, image):
            raise UserError(f"{flag}: {image} is not on this Docker engine; build it "
                            "with `rayhpc build` (or load it with `docker load`)")
        versions[image] = ray_in_image(api, image, flag)
    return versions


def check_platforms(images: list[tuple[str, str]], site: Site) -> None:
    """Each image is of the nodes' platform: the site file's `platform` where it says one, else
    the engine's own (a local node is a container on it). UserError naming both and the fix."""
    api = connect()
    if "platform" in site.options:
        nodes, where = site.platform, site.platform_source
    else:
        arch = api.info().get("Architecture") or ""
        if not arch:  # an engine that does not say cannot be checked
            return
        nodes, where = platform_for_arch(arch), f"this Docker engine (Architecture: {arch})"
    for image, _ in images:
        problem = mismatch(nodes, where, image, image_platform(api, image), "")
        if problem:
            raise UserError(problem)


def check_gpus(spec: LaunchSpec) -> None:
    """The engine can pass the GPUs the node groups ask for."""
    wanted = {group.gpu for group in spec.groups if group.gpu}
    missing = wanted - engine_gpus(connect()) if wanted else set()
    if missing:
        names = [group.name for group in spec.groups if group.gpu in missing]
        raise UserError(f"group {names[0]}: gpu: {sorted(missing)[0]}: this Docker engine "
                        "has no such GPUs (no NVIDIA container runtime in `docker info`, "
                        "no /dev/kfd for AMD); run the group without `gpu` here, or on "
                        "a machine with GPUs")


def machine_facts() -> MachineFacts:
    """The memory and CPUs of the Docker engine's machine, as the engine reports them."""
    info = connect().info()
    return MachineFacts(memory_bytes=int(info.get("MemTotal") or 0),
                        cpus=int(info.get("NCPU") or 1))


def check_machine_holds(spec: LaunchSpec, more: int | None = None) -> None:
    """Refuse (UserError naming --nodes) a local launch this machine cannot hold, before
    anything is created; ``more``: a block of that many nodes beside the run's running
    ones."""
    machine = machine_facts()
    if not machine.memory_bytes:  # an engine that does not say cannot be checked
        return
    if more is None:
        check_capacity(spec.nodes, spec.shm_size, size_bytes(spec.shm_size), machine)
    else:
        running = len(connect().containers(filters={"label": f"{RUN_LABEL}={spec.run_id}",
                                                    "status": "running"}))
        check_capacity(more, spec.shm_size, size_bytes(spec.shm_size), machine,
                       running=max(running, 1))


def container_states(spec: LaunchSpec) -> dict[str, str]:
    """node -> its container's state (running, exited, ...), for the run's containers here."""
    found = connect().containers(all=True, filters={"label": f"{RUN_LABEL}={spec.run_id}"})
    states = {c["Labels"].get(CONTAINER_NODE_LABEL, c["Names"][0]): c["State"] for c in found}
    order = {node: i for i, node in enumerate(spec.node_names)}
    return dict(sorted(states.items(), key=lambda item: (order.get(item[0], len(order)),
                                                         item[0])))


def container_state(api: docker.APIClient, container: str) -> dict | None:
    """A container's state as the engine says it (None: no such container)."""
    try:
        return api.inspect_container(container)["State"]
    except docker.errors.NotFound:
        return None


def stop_run(spec: LaunchSpec, say: Callable[[str], None]) -> None:
    """Ask a local run to stop as Ctrl-C would: SIGTERM to its head's agent (it stops every
    node and keeps the logs; the stop file says who asked). An engine that does not answer is
    refused (UserError) before the stop file is written: nothing changes then."""
    api = connect()
    RunPaths(spec.run_dir).request_stop("rayhpc down")
    try:
        api.kill(spec.container(spec.node_names[0]), signal=signal.SIGTERM)
    except docker.errors.APIError as exc:
        state = container_state(api, spec.container(spec.node_names[0]))
        if state is not None and state.get("Running"):  # else: a lost run, said by `down`
            say(f"the head's container could not be signalled ({exc.explanation}); the stop "
                "file asks it")


@dataclass
class RunState:
    run_id: str
    nodes: dict[str, str] = field(default_factory=dict)  # node -> container status
    networks: list[str] = field(default_factory=list)
    run_dir: str = ""  # where its containers say its run directory is ("" : they do not say)

    def line(self) -> str:
        """`rayhpc status`'s line of a run known only by what it left on the engine."""
        nodes = ", ".join(f"{node}: {st}" for node, st in sorted(self.nodes.items()))
        return f"{self.run_id}  {len(self.nodes)} node(s)  {nodes or '(network only)'}"


def why_alive(state: RunState) -> str:
    """Why a run found on the engine may be alive ("" : provably dead: none of its containers
    runs, or its run directory recorded its end, or is gone)."""
    running = sorted(node for node, st in state.nodes.items() if st == "running")
    if not running:
        return ""
    alive = f"its container(s) {', '.join(running)} run"
    if not state.run_dir:
        return alive
    paths = RunPaths(state.run_dir)
    for path, gone_means_dead in ((paths.exit_code, False), (paths.spec, True)):
        try:
            os.lstat(path)
        except FileNotFoundError:
            if gone_means_dead:
                return ""  # its run directory is gone: nothing of it could be kept
            continue
        except OSError as exc:
            return f"{alive} and {path} cannot be looked at ({exc.strerror})"
        else:
            if not gone_means_dead:
                return ""  # it recorded its end: what runs is what its teardown left
    return f"{alive} and {paths.dir} records no end"


def engine_runs() -> dict[str, RunState]:
    """Every run that has a container or network on this machine's engine, by run id; none
    where no engine answers (e.g. an HPC login node)."""
    try:
        api = connect()
    except UserError:
        return {}
    found: dict[str, RunState] = defaultdict(lambda: RunState(""))
    for container in api.containers(all=True, filters={"label": RUN_LABEL}):
        run_id = container["Labels"][RUN_LABEL]
        state = found[run_id]
        state.run_id = run_id
        state.run_dir = state.run_dir or container["Labels"].get(RUN_DIR_LABEL, "")
        state.nodes[container["Labels"].get(CONTAINER_NODE_LABEL, container["Names"][0])] = \
            container["State"]
    for network in api.networks(filters={"label": RUN_LABEL}):
        run_id = network["Labels"][RUN_LABEL]
        found[run_id].run_id = run_id
        found[run_id].networks.append(network["Name"])
    return dict(sorted(found.items()))


def run_containers(api: docker.APIClient, run_id: str, state: str = "") -> list[dict]:
    """The run's containers on the engine, found by the run's label (no file of the run
    directory needed); ``state``: only those in it (running, exited, ...)."""
    filters: dict = {"label": f"{RUN_LABEL}={run_id}"}
    if state:
        filters["status"] = state
    return api.containers(all=True, filters=filters)


def stop_containers(api: docker.APIClient, run_id: str, grace_s: float) -> None:
    """Stop the run's running containers as `docker stop` would, all at once: SIGTERM, up to
    ``grace_s`` for them to exit, then SIGKILL."""
    for signum in ("SIGTERM", "SIGKILL"):
        running = run_containers(api, run_id, "running")
        for container in running:
            with contextlib.suppress(docker.errors.APIError):
                api.kill(container["Id"], signal=signum)
        deadline = time.monotonic() + (grace_s if signum == "SIGTERM" else 10)
        while running and time.monotonic() < deadline:
            time.sleep(0.2)
            running = run_containers(api, run_id, "running")
        if not running:
            return


def remove_run(run_id: str, api: docker.APIClient | None = None) -> tuple[int, int]:
    """Remove the run's containers (force, with their anonymous volumes) and its networks,
    found by the run's label; return how many of each."""
    api = api or connect()
    containers = run_containers(api, run_id)
    for container in containers:
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_container(container["Id"], force=True, v=True)
    networks = api.networks(filters={"label": f"{RUN_LABEL}={run_id}"})
    for network in networks:
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_network(network["Id"])
    return len(containers), len(networks)
