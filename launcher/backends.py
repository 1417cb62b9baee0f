"""How a launch runs on a kind of site: the small table of backends, chosen once per launch.

  local: docker compose on this machine (site `scheduler: local`, runtime docker)
  batch: a job script for a batch scheduler (Slurm, PBS, Cobalt, LSF) and an HPC runtime

Each backend says which schedulers and runtimes it serves, how nodes are named before the start,
what image it runs by default, how it checks and readies the image, and how it runs. Nothing
outside a backend, a scheduler or a runtime module compares their names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.errors import UserError
from launcher.runtimes import RUNTIMES, runtime
from launcher.runtimes.oci import Docker
from launcher.schedulers import SCHEDULERS

if TYPE_CHECKING:
    from launcher.config import Site
    from launcher.spec import LaunchSpec


class Backend:
    name = ""
    schedulers: tuple[str, ...] = ()
    runtimes: tuple[str, ...] = ()
    options: tuple[str, ...] | None = None  # the site-file options it uses (None: all)

    def node_names(self, nodes: int) -> list[str]:
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

    def run(self, spec: LaunchSpec, site: Site, wait: bool) -> int:
        raise NotImplementedError


class LocalBackend(Backend):
    name = "local"
    schedulers = ("local",)
    runtimes = (Docker.name,)
    options = ("environment",)  # no job script: no setup lines, launcher or scheduler flags

    def node_names(self, nodes: int) -> list[str]:
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
        from containers.engine import check_image_ref, connect, image_exists, ray_in_image
        from containers.images import ensure_recipe_image
        from containers.progress import Progress

        check_image_ref(spec.image, "--image")
        api = connect()
        if spec.image == self.default_image():
            ensure_recipe_image(progress=Progress())
        elif not image_exists(api, spec.image):
            raise UserError(f"--image: {spec.image} is not on this Docker engine; build it "
                            "with `invoke build` (or load it with `docker load`)")
        ray_in_image(api, spec.image)  # before any node starts: python and Ray are there

    def run(self, spec: LaunchSpec, site: Site, wait: bool) -> int:
        from containers.engine import connect
        from launcher.local import LocalLaunch

        return LocalLaunch(spec, connect(), site.option("environment")).run()


class BatchBackend(Backend):
    name = "batch"
    schedulers = tuple(SCHEDULERS)
    runtimes = tuple(name for name, cls in RUNTIMES.items() if cls.batch)

    def node_launcher(self, site: Site) -> str:
        return SCHEDULERS[site.scheduler].launcher

    def ready_image(self, spec: LaunchSpec, site: Site, dry_run: bool) -> None:
        node_runtime = runtime(site.runtime)
        if not spec.image:
            if node_runtime.image_kind == "none":
                return
            raise UserError(f"--image: site {site.name} runs {site.runtime}: give the image to "
                            f"run; {node_runtime.image_hint}")
        problem = node_runtime.image_problem(spec.image, on_this_host=not dry_run)
        if problem:
            raise UserError(f"--image: {problem}")

    def dry_run(self, spec: LaunchSpec, site: Site) -> str:
        from launcher.jobscript import render_job_script

        self.ready_image(spec, site, dry_run=True)
        return render_job_script(spec, site)

    def run(self, spec: LaunchSpec, site: Site, wait: bool) -> int:
        from launcher.batch import BatchLaunch

        return BatchLaunch(spec, site).run(wait=wait)


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
