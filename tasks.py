"""rayhpc: build Ray container images and run Ray clusters in them (`invoke --list`)."""

from __future__ import annotations

import functools
import sys

from invoke import Exit, task

from common.errors import UserError
from launcher.config import SETTINGS


def user_errors(func):
    """Print a UserError as one line (no traceback) and exit 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise Exit(code=2) from None

    return wrapper


@task(auto_shortflags=False, help={
    "recipe": "recipe name in recipes/ or path to a recipe YAML (default: ray)",
    "variant": "recipe variant: cpu or gpu (default: cpu)",
    "base": "base image instead of the recipe's rayproject/ray tag (e.g. the `invoke base` tag)",
    "tag": "tag for the built image (default: rayhpc/<recipe>:<ray>-py<XY>-<variant>)",
    "ca_bundle": "PEM CA bundle for pip/apt during the build only (default: $PIP_CERT, "
                 "$REQUESTS_CA_BUNDLE or $SSL_CERT_FILE); never stored in the image",
    "pip_index_url": "pip index URL for the build only (default: $PIP_INDEX_URL)",
    "sif": "also convert the image to a SIF for Apptainer/Singularity (see `convert`)",
    "no_cache": "rebuild every layer instead of reusing the engine's cached ones",
})
@user_errors
def build(c, recipe="ray", variant="cpu", base=None, tag=None, ca_bundle=None,
          pip_index_url=None, sif=False, no_cache=False):
    """Build a Docker image from a recipe; prints the image tag (and SIF path) last."""
    from containers.images import build_recipe_image
    from containers.sif import convert_image

    image = build_recipe_image(recipe, variant, base=base, tag=tag, ca_bundle=ca_bundle,
                               pip_index_url=pip_index_url, no_cache=no_cache)
    print(image)
    if sif:
        print(convert_image(image))


@task(auto_shortflags=False, help={
    "image": "Docker image to convert (e.g. rayhpc/ray:2.60.0-py311-cpu)",
    "out": "SIF file or directory (default: sif/<image>.sif)",
    "force": "convert even when the SIF is up to date with the image",
})
@user_errors
def convert(c, image, out=None, force=False):
    """Convert a Docker image to a SIF for Apptainer; prints the SIF path last.

    Uses the host's apptainer/singularity, else a converter container. Skipped when the image
    is unchanged since the last conversion (its digest is recorded beside the SIF).
    """
    from containers.sif import convert_image

    print(convert_image(image, out, force=force))


@task(auto_shortflags=False, help={
    "recipe": "recipe name or path (default: every Ray recipe in recipes/)",
    "out": "directory for the def files (default: defs/)",
})
@user_errors
def defs(c, recipe=None, out="defs"):
    """Write Apptainer def files of recipe variants; prints each path.

    For sites that build on the cluster: `apptainer build --fakeroot x.sif x.def`.
    """
    from containers.apptainer_def import write_defs

    for path in write_defs(recipe, out):
        print(path)


@task(auto_shortflags=False, help={
    "recipe": "recipe whose Ray version the stand-in carries (default: ray)",
    "os_image": "Debian bookworm image to start from (default: made by debootstrap, needs root)",
    "mirror": "Debian mirror for debootstrap (default: the one in /etc/apt)",
    "tag": "tag of the stand-in (default: rayhpc/ray-standin:<ray>-py<XY>-cpu)",
    "ca_bundle": "PEM CA bundle for pip during the build only (default as for build)",
    "pip_index_url": "pip index URL for the build only (default: $PIP_INDEX_URL)",
    "no_cache": "rebuild every layer instead of reusing the engine's cached ones",
})
@user_errors
def base(c, recipe="ray", os_image=None, mirror=None, tag=None, ca_bundle=None,
         pip_index_url=None, no_cache=False):
    """Build a stand-in for rayproject/ray where no registry is reachable; prints its tag last."""
    from containers.images import build_standin_base

    print(build_standin_base(recipe, os_image=os_image, mirror=mirror, tag=tag,
                             ca_bundle=ca_bundle, pip_index_url=pip_index_url,
                             no_cache=no_cache))


LAUNCH_FLAGS = ("nodes", "driver", "shared", "image", "join_timeout", "shm_size", "num_cpus",
                "num_gpus", "walltime", "queue", "account")


@task(auto_shortflags=False, help={
    "site": "site profile name (see `invoke sites`) or path to a site YAML file (default: local)",
    **{flag: SETTINGS[flag].help for flag in LAUNCH_FLAGS},
    "dry_run": "print the job script; submit nothing (HPC sites)",
    "wait": "after submitting, follow the job to its end and exit with the driver's code",
})
@user_errors
def launch(c, site="local", nodes=None, driver=None, shared=None, image=None, join_timeout=None,
           shm_size=None, num_cpus=None, num_gpus=None, walltime=None, queue=None, account=None,
           dry_run=False, wait=False):
    """Run a Ray cluster (1 head + N-1 workers) in containers, run the driver, tear down.

    Settings come from the flags, else RAYHPC_<SETTING> variables, else the site file, else
    defaults. On the local site it exits with the driver's exit code. On an HPC site it writes
    the job script into the run directory and submits it (inside an allocation: runs it).
    """
    from launcher.launch import launch as run_launch

    values = locals()
    cli = {flag: values[flag] for flag in LAUNCH_FLAGS}
    code = run_launch(site, cli, dry_run=dry_run, wait=wait)
    if code:
        raise Exit(code=code)


@task(auto_shortflags=False,
      help={"run": "run id to remove (default: every run of this project on this engine)"})
@user_errors
def down(c, run=None):
    """Remove the containers and networks that launches left behind."""
    from containers.engine import connect
    from launcher.manage import remove_run, runs

    api = connect()
    found = runs(api)
    if run and run not in found:
        raise UserError(f"--run: no containers or networks of run {run!r} here; "
                        f"runs present: {', '.join(found) or 'none'}")
    targets = [run] if run else list(found)
    for run_id in targets:
        containers, networks = remove_run(api, run_id)
        print(f"removed run {run_id}: {containers} container(s), {networks} network(s)")
    if not targets:
        print("nothing to remove")


@task(auto_shortflags=False, help={"run": "show only this run id"})
@user_errors
def status(c, run=None):
    """Show the runs with containers on this machine and the state of their nodes."""
    from containers.engine import connect
    from launcher.manage import runs

    found = runs(connect())
    if run:
        found = {k: v for k, v in found.items() if k == run}
    if not found:
        print("no runs" + (f" with id {run}" if run else ""))
    for run_id, state in found.items():
        nodes = ", ".join(f"{node}: {st}" for node, st in sorted(state.nodes.items()))
        print(f"{run_id}  {len(state.nodes)} node(s)  {nodes or '(network only)'}")


@task(auto_shortflags=False)
@user_errors
def sites(c):
    """List the site profiles: scheduler, launcher, container runtime, and the documentation
    each follows."""
    from launcher.config import list_sites

    found = list_sites()
    width = max(len(s.name) for s in found)
    print(f"{'site':<{width}}  {'scheduler':<9}  {'launcher':<8}  {'runtime':<11}  description")
    for s in found:
        print(f"{s.name:<{width}}  {s.scheduler:<9}  {s.backend.node_launcher(s):<8}  "
              f"{s.runtime:<11}  {s.description}")
        for doc in s.docs:
            print(f"{'':<{width}}  docs: {doc}")


@task(auto_shortflags=False, help={"k": "only tests matching this pytest -k expression",
            "unit": "only the tests that need no Docker engine"})
def test(c, k=None, unit=False):
    """Run ruff and the test suite (REQUIRE_DOCKER=1 makes engine tests fail instead of skip)."""
    c.run(f"{sys.executable} -m ruff check .", pty=False)
    args = [sys.executable, "-m", "pytest"]
    if k:
        args += ["-k", repr(k)]
    if unit:
        args += ["-m", "'not docker'"]
    c.run(" ".join(args), pty=False)
