"""How a launch runs on a kind of site: the small table of backends, chosen once per launch.

  local: docker compose on this machine (site `scheduler: local`, runtime docker)
  batch: a job script for a batch scheduler (Slurm, PBS, Cobalt, LSF) and an HPC runtime

Each backend says which schedulers and runtimes it serves, how nodes are named before the start,
what image it runs by default, how it checks and readies the image, and how it runs. Nothing
outside a backend, a scheduler or a runtime module compares their names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

from common.errors import UserError
from launcher.groups import NodeGroup, group_node_names, version_mismatch
from launcher.runtimes import RUNTIMES, runtime
from launcher.runtimes.oci import Docker
from launcher.schedulers import SCHEDULERS

if TYPE_CHECKING:
    from launcher.config import Site
    from launcher.runs import Run
    from launcher.spec import LaunchSpec


class Backend:
    name = ""
    schedulers: tuple[str, ...] = ()
    runtimes: tuple[str, ...] = ()
    options: tuple[str, ...] | None = None  # the site-file options it uses (None: all)

    def node_names(self, nodes: int, groups: tuple[NodeGroup, ...] = ()) -> list[str]:
        """Node names known before the start ([] where hosts name themselves)."""
        return []

    def node_launcher(self, site: Site) -> str:
        """What starts one agent per node (for `invoke sites`)."""
        raise NotImplementedError

    def default_image(self) -> str:
        """The image a launch runs when none is given ("" : the user must give one)."""
        return ""

    def container_owner(self) -> tuple[int, int] | None:
        """uid/gid the nodes run as where it is not the user's own (the shared dir and the run
        directory must be theirs)."""
        return None

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
            out: TextIO | None = None) -> int:
        raise NotImplementedError

    # -- runs already launched (`invoke status`, `down`, `submit`, `logs`; `launcher.runs`)

    def describe(self, run: Run) -> list[str]:
        """What the backend knows of a run beyond its run directory: the scheduler's job state,
        the containers' states (short phrases for `invoke status`)."""
        return []

    def running(self, run: Run) -> bool | None:
        """Whether the run's nodes still run (None: cannot tell from here)."""
        return None

    def stop(self, run: Run, say) -> None:
        """Ask a run that has not ended to stop cleanly (the agents keep the logs)."""
        raise NotImplementedError

    def cleanup(self, run: Run, say) -> None:
        """After the run ended: remove what it left here (containers, networks)."""

    def working_dir_upload(self) -> bool:
        """Whether `invoke submit --working-dir` may upload a directory the nodes cannot see
        (else it must be in the shared directory)."""
        return False


class LocalBackend(Backend):
    name = "local"
    schedulers = ("local",)
    runtimes = (Docker.name,)
    # No job script: no setup lines, launcher or scheduler flags.
    options = ("environment", "groups")

    def node_names(self, nodes: int, groups: tuple[NodeGroup, ...] = ()) -> list[str]:
        if groups:
            return group_node_names(groups)
        return ["head"] + [f"worker-{i}" for i in range(1, nodes)]

    def node_launcher(self, site: Site) -> str:
        return "compose"

    def default_image(self) -> str:
        from containers.images import DEFAULT_RECIPE
        from containers.recipe import load_recipe

        return load_recipe(DEFAULT_RECIPE).image_tag("cpu")

    def container_owner(self) -> tuple[int, int] | None:
        from launcher.local import container_user

        return container_user()[1]

    def ready_image(self, spec: LaunchSpec, site: Site, dry_run: bool) -> None:
        from containers.engine import (
            check_image_ref,
            connect,
            engine_gpus,
            image_exists,
            ray_in_image,
        )
        from containers.images import ensure_recipe_image
        from containers.progress import Progress

        versions = {}
        api = connect()
        for image, flag in images_to_check(spec):
            check_image_ref(image, flag)
            if image == self.default_image():
                ensure_recipe_image(progress=Progress())
            elif not image_exists(api, image):
                raise UserError(f"{flag}: {image} is not on this Docker engine; build it "
                                "with `invoke build` (or load it with `docker load`)")
            # Before any node starts: python and Ray are there, the same in every image.
            versions[image] = ray_in_image(api, image, flag)
        check_versions(versions)
        wanted = {group.gpu for group in spec.groups if group.gpu}
        missing = wanted - engine_gpus(api) if wanted else set()
        if missing:
            names = [group.name for group in spec.groups if group.gpu in missing]
            raise UserError(f"group {names[0]}: gpu: {sorted(missing)[0]}: this Docker engine "
                            "has no such GPUs (no NVIDIA container runtime in `docker info`, "
                            "no /dev/kfd for AMD); run the group without `gpu` here, or on "
                            "a machine with GPUs")

    def run_facts(self, spec: LaunchSpec) -> dict:
        from launcher.local import free_local_port

        return {"published": {"dashboard": free_local_port(), "client": free_local_port()}}

    def run(self, spec: LaunchSpec, site: Site, wait: bool = False, detach: bool = False,
            out: TextIO | None = None) -> int:
        from containers.engine import connect
        from launcher.local import LocalLaunch

        return LocalLaunch(spec, connect(), site.option("environment"), out).run(detach=detach)

    def describe(self, run: Run) -> list[str]:
        from launcher.local import container_states

        states = container_states(run.spec)
        return [", ".join(f"{node}: {state}" for node, state in states.items())
                or "no containers"]

    def running(self, run: Run) -> bool | None:
        from launcher.local import container_states

        return container_states(run.spec).get(run.spec.node_names[0]) == "running"

    def stop(self, run: Run, say) -> None:
        from launcher.local import stop_run

        stop_run(run.spec, say)

    def cleanup(self, run: Run, say) -> None:
        from containers.engine import connect
        from launcher.local import LocalLaunch

        LocalLaunch(run.spec, connect()).teardown()

    def working_dir_upload(self) -> bool:
        return True  # the dashboard is on this machine: a directory of it can be sent along


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
        from launcher.jobscript import render_job_script

        self.ready_image(spec, site, dry_run=True)
        return render_job_script(spec, site)

    def check_modes(self, spec: LaunchSpec, wait: bool, detach: bool, dry_run: bool) -> None:
        if detach:
            raise UserError("--detach: HPC launches return once the job is submitted (--wait: "
                            "once its cluster is up); drop --detach")

    def run_facts(self, spec: LaunchSpec) -> dict:
        from launcher.batch import login_name

        return {"login": login_name()}

    def run(self, spec: LaunchSpec, site: Site, wait: bool = False, detach: bool = False,
            out: TextIO | None = None) -> int:
        from launcher.batch import BatchLaunch

        return BatchLaunch(spec, site, out).run(wait=wait)

    def describe(self, run: Run) -> list[str]:
        from launcher.batch import describe_job

        return describe_job(run)

    def running(self, run: Run) -> bool | None:
        from launcher.batch import job_state

        return bool(job_state(run.spec.scheduler, run.job_id)) if run.job_id else None

    def stop(self, run: Run, say) -> None:
        from launcher.batch import cancel_job

        cancel_job(run, say)


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


BACKENDS: tuple[Backend, ...] = (LocalBackend(), BatchBackend())
SCHEDULER_NAMES = tuple(name for backend in BACKENDS for name in backend.schedulers)


def backend_for(scheduler: str, runtime_name: str, where: str) -> Backend:
    """The backend for a site's scheduler and runtime; UserError naming ``where`` otherwise."""
    for backend in BACKENDS:
        if scheduler in backend.schedulers:
            if runtime_name not in backend.runtimes:
                raise UserError(f"{where}runtime: {runtime_name!r} cannot run on scheduler "
                                f"{scheduler!r}; one of: {', '.join(backend.runtimes)}")
            return backend
    raise UserError(f"{where}scheduler: {scheduler!r} is not supported; one of: "
                    f"{', '.join(SCHEDULER_NAMES)}")
