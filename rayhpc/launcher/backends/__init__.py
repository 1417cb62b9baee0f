"""How a launch runs on a kind of site: the small table of backends, chosen once per launch.

  local: docker compose on this machine (site `scheduler: local`, runtime docker)
  batch: a job script for a batch scheduler (`launcher.schedulers`) and an HPC runtime

Each backend says which schedulers and runtimes it serves, which site options it takes, how
nodes are named before the start, what image it runs by default, how it checks and readies the
image, and how it runs and stops. Nothing outside a backend, a scheduler or a runtime module
compares their names. `backend_for(site)` is the one place a site's backend is chosen (and the
site's backend-specific keys checked).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rayhpc.common.user_error import UserError
from rayhpc.launcher.backends.backend_interface import Backend
from rayhpc.launcher.backends.batch import BatchBackend
from rayhpc.launcher.backends.local import LocalBackend

if TYPE_CHECKING:
    from rayhpc.launcher.resolve.config import Site

BACKENDS: tuple[Backend, ...] = (LocalBackend(), BatchBackend())


def backend_for(site: Site) -> Backend:
    """The site's backend; UserError naming the site file's key that does not fit it (its
    scheduler, its runtime, an option this backend does not use)."""
    backend = backend_of(site.scheduler, site.runtime, f"{site.path}: ")
    used = [*site.options, *(["groups"] if site.groups else [])]
    for key in used:
        if backend.options is not None and key not in backend.options:
            raise UserError(f"{site.path}: {key}: not used on a {backend.name} site (it takes: "
                            f"{', '.join(backend.options) or 'none of the site options'}); "
                            "remove it")
    return backend


def backend_of(scheduler: str, runtime_name: str, where: str) -> Backend:
    """The backend for a scheduler and runtime; UserError naming ``where`` otherwise."""
    for backend in BACKENDS:
        if scheduler in backend.schedulers:
            if runtime_name not in backend.runtimes:
                raise UserError(f"{where}runtime: {runtime_name!r} cannot run on scheduler "
                                f"{scheduler!r}; one of: {', '.join(backend.runtimes)}")
            return backend
    raise UserError(f"{where}scheduler: {scheduler!r} is not supported; one of: "
                    f"{', '.join(name for b in BACKENDS for name in b.schedulers)}")
