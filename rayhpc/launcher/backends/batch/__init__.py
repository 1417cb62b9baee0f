"""The batch backend: a job script for a batch scheduler (one of `launcher.schedulers`) that
starts the node program in an HPC container runtime on every node of the allocation."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from typing import TYPE_CHECKING, TextIO

from rayhpc.common.user_error import UserError
from rayhpc.containers.platforms import mismatch
from rayhpc.containers.sif_record import sif_platform
from rayhpc.launcher.backends.backend_interface import Backend, check_versions, images_to_check
from rayhpc.launcher.backends.batch.jobscript import render_job_script
from rayhpc.launcher.backends.batch.submission import (
    BatchLaunch,
    cancel_job,
    describe_job,
    job_state,
    login_name,
    submit_script,
)
from rayhpc.launcher.contract import RunPaths, atomic_write
from rayhpc.launcher.resolve.gpus import check_launch_gpus
from rayhpc.launcher.resolve.groups import group_gpu_count
from rayhpc.launcher.runtimes import RUNTIMES, Runtime, runtime
from rayhpc.launcher.schedulers import SCHEDULERS, current_allocation

if TYPE_CHECKING:
    from rayhpc.launcher.contract import Block, LaunchedRun, LaunchSpec, NodeGroup
    from rayhpc.launcher.resolve.config import Site


def check_image_platform(image: str, site: Site, node_runtime: Runtime, dry_run: bool) -> None:
    """Refuse (UserError) an image the site's nodes cannot run: of another platform than the
    site file's `platform`. A SIF's platform comes from the record `rayhpc convert` wrote beside
    it, else (not on a dry run: it runs the runtime) from its label; where nothing says it,
    nothing is refused."""
    found = sif_platform(image) if node_runtime.image_kind == "sif" else None
    if found is None and not dry_run:
        found = node_runtime.image_platform(image)
    fix = " --sif" if node_runtime.image_kind == "sif" else ""
    problem = mismatch(site.platform, site.platform_source, image, found, fix)
    if problem:
        raise UserError(problem)


class BatchBackend(Backend):
    name = "batch"

    @property
    def schedulers(self) -> tuple[str, ...]:  # type: ignore[override]
        """Every registered scheduler (read when asked: the registry is the one list)."""
        return tuple(SCHEDULERS)

    runtimes = tuple(name for name, cls in RUNTIMES.items() if cls.batch)

    def node_launcher(self, site: Site) -> str:
        return SCHEDULERS[site.scheduler].launcher_for(site.option("scheduler_options"))

    def check_gpu_request(self, site: Site, num_gpus: int | None,
                          groups: tuple[NodeGroup, ...]) -> None:
        """GPUs that cannot be asked of the site's scheduler are refused (UserError)."""
        requests = SCHEDULERS[site.scheduler].requests_gpus(site.option("scheduler_options"))
        check_launch_gpus(site.name, site.option("gpu"), num_gpus, requests,
                          tuple((group.name, group.gpu, group_gpu_count(group, num_gpus))
                                for group in groups))

    def ready_image(self, spec: LaunchSpec, site: Site, dry_run: bool) -> None:
        node_runtime = runtime(site.runtime)
        versions = {}
        for image, flag in images_to_check(spec):
            if not image:
                if node_runtime.image_kind == "none":
                    continue
                raise UserError(f"{flag}: site {site.name} runs {site.runtime}: give the image "
                                f"to run; {node_runtime.image_hint}")
            problem = node_runtime.image_problem(image, on_this_host=not dry_run)
            if problem:
                raise UserError(f"{flag}: {problem}")
            if not dry_run and len(spec.groups) > 1:
                versions[image] = node_runtime.image_versions(image)
            check_image_platform(image, site, node_runtime, dry_run)
        check_versions({image: found for image, found in versions.items() if found})

    def dry_run(self, spec: LaunchSpec, site: Site) -> str:
        self.ready_image(spec, site, dry_run=True)
        return render_job_script(spec, site)

    def check_restarts(self, site: Site, restarts: int, environ: Mapping[str, str]) -> None:
        if not restarts:
            return
        scheduler = SCHEDULERS[site.scheduler]
        if scheduler.requeue_unsupported:
            raise UserError(f"--restarts: site {site.name} runs {scheduler.title}: "
                            f"{scheduler.requeue_unsupported}; drop --restarts (or `restarts` in "
                            f"{site.path})")
        allocation = current_allocation(environ)
        if allocation is not None:
            raise UserError(f"--restarts: inside a {allocation.title} allocation the launch runs "
                            "in it and cannot put it back in the queue; launch from a login node "
                            "(the job it submits requeues itself), or drop --restarts")

    def check_modes(self, spec: LaunchSpec, wait: bool, detach: bool, dry_run: bool) -> None:
        if detach:
            raise UserError("--detach: HPC launches return once the job is submitted (--wait: "
                            "once its cluster is up); drop --detach")

    def run_facts(self, spec: LaunchSpec) -> dict:
        return {"login": login_name()}

    def run(self, spec: LaunchSpec, site: Site, wait: bool = False, detach: bool = False,
            out: TextIO | None = None, stopped_by: str = "") -> int:
        return BatchLaunch(spec, site, out).run(wait=wait, stopped_by=stopped_by)

    def describe(self, run: LaunchedRun) -> list[str]:
        return describe_job(run)

    def running(self, run: LaunchedRun) -> bool | None:
        return bool(job_state(run.spec.scheduler, run.job_id)) if run.job_id else None

    def stop(self, run: LaunchedRun, say) -> None:
        cancel_job(run, say)

    # -- blocks: each a worker-only job rendered by the same job script renderer

    def blocks_problem(self, spec: LaunchSpec) -> str:
        scheduler = SCHEDULERS[spec.scheduler]
        submit, _ = scheduler.submit_command("job.sh")
        if not shutil.which(submit[0]):
            return (f"{submit[0]} not found: a block is a {scheduler.name} job of its own; "
                    f"grow the run from a login node of site {spec.site}")
        return ""

    def submit_block(self, spec: LaunchSpec, site: Site, block: Block, head_ip: str) -> str:
        problem = runtime(site.runtime).image_problem(block.image, on_this_host=True) \
            if block.image else ""
        if problem:
            raise UserError(f"--group: {problem}")
        paths = RunPaths(spec.run_dir)
        script = paths.block_file(block.name, "sh")
        atomic_write(script, render_job_script(spec, site, block, head_ip), mode=0o755,
                     root=paths.dir)
        return submit_script(SCHEDULERS[site.scheduler], script, spec.shared, site)

    def block_state(self, run: LaunchedRun, block: Block) -> str:
        return job_state(run.spec.scheduler, block.job_id) if block.job_id else ""

    def block_pending(self, run: LaunchedRun, block: Block) -> bool:
        state = self.block_state(run, block)
        return bool(state) and state not in SCHEDULERS[run.spec.scheduler].running_states

    def cancel_block(self, run: LaunchedRun, block: Block, say) -> None:
        scheduler = SCHEDULERS[run.spec.scheduler]
        state = self.block_state(run, block)
        if not state:
            return
        cmd = scheduler.cancel_command(block.job_id, running=state in scheduler.running_states)
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0 and self.block_state(run, block):
            raise UserError(f"`{' '.join(cmd)}` failed (exit {result.returncode}): "
                            f"{(result.stderr or result.stdout).strip()[-400:]}")
        say(f"{' '.join(cmd)}: block {block.name} (job {block.job_id}, {state}) told to stop")
