"""The batch backend: a job script for a batch scheduler (Slurm, PBS, Cobalt, LSF) that starts
the node program in an HPC container runtime on every node of the allocation."""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

from rayhpc.containers.errors import UserError
from rayhpc.launcher.backends.base import Backend, check_versions, images_to_check
from rayhpc.launcher.backends.batch.jobscript import render_job_script
from rayhpc.launcher.backends.batch.launch import (
    BatchLaunch,
    cancel_job,
    describe_job,
    job_state,
    login_name,
)
from rayhpc.launcher.runtimes import RUNTIMES, runtime
from rayhpc.launcher.schedulers import SCHEDULERS

if TYPE_CHECKING:
    from rayhpc.launcher.contract import LaunchSpec
    from rayhpc.launcher.resolve.config import Site
    from rayhpc.launcher.runs.run import Run


class BatchBackend(Backend):
    name = "batch"
    schedulers = tuple(SCHEDULERS)
    runtimes = tuple(name for name, cls in RUNTIMES.items() if cls.batch)

    def node_launcher(self, site: Site) -> str:
        return SCHEDULERS[site.scheduler].launcher_for(site.option("scheduler_options"))

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
        check_versions({image: found for image, found in versions.items() if found})

    def dry_run(self, spec: LaunchSpec, site: Site) -> str:
        self.ready_image(spec, site, dry_run=True)
        return render_job_script(spec, site)

    def check_modes(self, spec: LaunchSpec, wait: bool, detach: bool, dry_run: bool) -> None:
        if detach:
            raise UserError("--detach: HPC launches return once the job is submitted (--wait: "
                            "once its cluster is up); drop --detach")

    def run_facts(self, spec: LaunchSpec) -> dict:
        return {"login": login_name()}

    def run(self, spec: LaunchSpec, site: Site, wait: bool = False, detach: bool = False,
            out: TextIO | None = None) -> int:
        return BatchLaunch(spec, site, out).run(wait=wait)

    def describe(self, run: Run) -> list[str]:
        return describe_job(run)

    def running(self, run: Run) -> bool | None:
        return bool(job_state(run.spec.scheduler, run.job_id)) if run.job_id else None

    def stop(self, run: Run, say) -> None:
        cancel_job(run, say)
