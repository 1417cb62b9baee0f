"""The interface every backend implements (see `launcher.backends`), and the image checks both
share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, TextIO

from rayhpc.common.user_error import UserError
from rayhpc.launcher.contract import NodeGroup
from rayhpc.launcher.resolve.groups import version_mismatch

if TYPE_CHECKING:  # types only: the backends serve these layers, never import them
    from rayhpc.launcher.contract import Block, LaunchedRun, LaunchSpec
    from rayhpc.launcher.resolve.config import Site


class Backend:
    name = ""
    has_queues = True  # whether --queue means anything here (a scheduler's queues)
    schedulers: tuple[str, ...] = ()
    runtimes: tuple[str, ...] = ()
    options: tuple[str, ...] | None = None  # the site-file options it uses (None: all)

    def check_queue(self, site: str, queue: str | None) -> None:
        """UserError naming --queue where the site has no queues (the local site): silently
        ignored, it would read as honoured."""
        if queue and not self.has_queues:
            raise UserError(f"--queue: site {site} has no queues (its nodes start at once on "
                            "this machine); drop --queue")

    def check_restarts(self, site: Site, restarts: int, environ: Mapping[str, str]) -> None:
        """UserError naming --restarts where the site's runs cannot start again (the local
        launcher restarts its own runs: every backend that cannot says why)."""

    def node_names(self, nodes: int, groups: tuple[NodeGroup, ...] = ()) -> list[str]:
        """Node names known before the start ([] where hosts name themselves)."""
        return []

    def node_launcher(self, site: Site) -> str:
        """What starts one agent per node (for `rayhpc sites`)."""
        raise NotImplementedError

    def default_image(self) -> str:
        """The image a launch runs when none is given ("" : the user must give one)."""
        return ""

    def container_owner(self) -> tuple[int, int] | None:
        """uid/gid the nodes run as where it is not the user's own (the shared dir and the run
        directory must be theirs)."""
        return None

    def check_gpu_request(self, site: Site, num_gpus: int | None,
                          groups: tuple[NodeGroup, ...]) -> None:
        """Refuse GPUs this site cannot be asked for (UserError); before anything is made."""

    def ready_image(self, spec: LaunchSpec, site: Site, dry_run: bool) -> None:
        """Check the image (and make it where the backend can); UserError naming --image."""
        raise NotImplementedError

    def dry_run(self, spec: LaunchSpec, site: Site) -> str:
        """The job script as it would be submitted; writes nothing."""
        raise UserError(f"--dry-run: the {self.name} site submits no job script; drop --dry-run")

    def check_modes(self, spec: LaunchSpec, wait: bool, detach: bool, dry_run: bool) -> None:
        """Refuse flags that do not fit this backend or the launch (UserError naming them)."""
        if detach and not spec.interactive:
            raise UserError("--detach: only an interactive cluster (no --driver) is left "
                            "running; drop --detach or --driver")

    def run_facts(self, spec: LaunchSpec) -> dict:
        """What the run's spec gets once it is prepared, known only on this machine now."""
        return {}

    def run(self, spec: LaunchSpec, site: Site, wait: bool = False, detach: bool = False,
            out: TextIO | None = None, stopped_by: str = "") -> int:
        """Run the launch; its exit code. ``stopped_by``: what stops a cluster it leaves up,
        as the caller's user does it ("" : `rayhpc down --run ID`)."""
        raise NotImplementedError

    # -- runs already launched (`rayhpc status`, `down`, `submit`, `logs`; `launcher.runs`)

    def describe(self, run: LaunchedRun) -> list[str]:
        """What the backend knows of a run beyond its run directory: the scheduler's job state,
        the containers' states (short phrases for `rayhpc status`)."""
        return []

    def running(self, run: LaunchedRun) -> bool | None:
        """Whether the run's nodes still run (None: cannot tell from here)."""
        return None

    def stop(self, run: LaunchedRun, say) -> None:
        """Ask a run that has not ended to stop cleanly (the agents keep the logs)."""
        raise NotImplementedError

    def cleanup(self, run: LaunchedRun, say) -> None:
        """After the run ended: remove what it left here (containers, networks)."""

    def leftovers(self) -> dict[str, str]:
        """Runs known only by what they left on this machine (run id -> a line for `rayhpc
        status`): a launcher that died before its teardown."""
        return {}

    def check_leftovers_readable(self) -> None:
        """UserError when what runs left here cannot be looked at (an engine that does not
        answer): `leftovers()` saying none would then be a guess."""

    def run_dir_of(self, run_id: str) -> str:
        """Where what the run left on this machine says its run directory is ("" : it does not
        say, or left nothing here)."""
        return ""

    def remove_leftovers(self, run_id: str) -> str:
        """Remove what the run left on this machine; what was removed ("" : nothing)."""
        return ""

    def why_alive(self, run_id: str) -> str:
        """Why what the run left here may still be a live run ("" : provably dead, safe to
        remove without asking it to stop)."""
        return ""

    # -- blocks: worker-only jobs that join a running cluster (`rayhpc grow/shrink`)

    def blocks_problem(self, spec: LaunchSpec) -> str:
        """Why runs of this backend cannot grow ("" : they can)."""
        return f"a {self.name} site cannot add nodes to a running cluster"

    def submit_block(self, spec: LaunchSpec, site: Site, block: Block, head_ip: str) -> str:
        """Start a block's nodes (``spec``: the run's, with the block's group; its node
        program is in blocks/ already); its job id ("" : none, on the local site). UserError
        when it is refused: nothing of it is left running then."""
        raise NotImplementedError

    def block_state(self, run: LaunchedRun, block: Block) -> str:
        """The block's job (or containers) as the scheduler (or engine) sees it now ("" :
        gone)."""
        return ""

    def block_pending(self, run: LaunchedRun, block: Block) -> bool:
        """The block's job waits in the queue (no node of it started)."""
        return False

    def cancel_block(self, run: LaunchedRun, block: Block, say) -> None:
        """Remove a block's job (one that never started, or whose nodes have left)."""

    def working_dir_upload(self) -> bool:
        """Whether `rayhpc submit --working-dir` may upload a directory the nodes cannot see
        (else it must be in the shared directory)."""
        return False


def images_to_check(spec: LaunchSpec) -> list[tuple[str, str]]:
    """Each image the launch runs, with the flag (or group) that names it."""
    if not spec.groups:
        return [(spec.image, "--image")]
    seen: dict[str, str] = {}
    for group in spec.groups:
        seen.setdefault(group.image, f"group {group.name}: image")
    return list(seen.items())


def check_versions(versions: dict[str, dict[str, str]]) -> None:
    problem = version_mismatch(versions)
    if problem:
        raise UserError(f"groups: {problem}")
