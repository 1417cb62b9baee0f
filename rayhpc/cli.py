"""The command line: every task of `rayhpc` (the installed command) and of `invoke` in a
checkout (its tasks.py imports `namespace` from here), defined once. Thin: parse flags, call the
packages, print, set the exit code."""

from __future__ import annotations

import functools
import importlib.util
import math
import sys
from pathlib import Path

from invoke import Collection, Exit, Program, task

from rayhpc import __version__
from rayhpc.common.user_error import UserError
from rayhpc.launcher.autoscale_policy import Policy, parse_autoscale
from rayhpc.launcher.backends import backend_for
from rayhpc.launcher.backends.watch import noting_signals
from rayhpc.launcher.contract import RecordError, UnsafeFile
from rayhpc.launcher.orchestration import launch as run_launch
from rayhpc.launcher.resolve.config import SETTINGS, list_sites, load_site
from rayhpc.launcher.resolve.queues import queue_table_lines
from rayhpc.launcher.runs.autoscale_loop import autoscale as autoscale_run
from rayhpc.launcher.runs.grow_shrink import BlockRequest
from rayhpc.launcher.runs.grow_shrink import grow as grow_run
from rayhpc.launcher.runs.grow_shrink import shrink as shrink_run
from rayhpc.launcher.runs.jobs import ClusterError
from rayhpc.launcher.runs.logs import logs as run_logs
from rayhpc.launcher.runs.run import find_run, shared_dir, status_lines
from rayhpc.launcher.runs.stop import down_by_id, remove_leftovers
from rayhpc.launcher.runs.submit import entrypoint_of, wait_for_job
from rayhpc.launcher.runs.submit import submit as submit_job
from rayhpc.launcher.timeline import write_timeline

# The build tasks import `rayhpc.containers` inside them: it loads docker-py, which a login node
# running `launch`, `status` or `down` against a batch site never needs.


def user_errors(func):
    """Print a UserError as one line (no traceback) and exit 2; a cluster that does not answer
    as it should (ClusterError) as one line too, exit 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise Exit(code=2) from None
        # RecordError, UnsafeFile: a file of the run directory (the containers write it) that
        # is not a record, or a link planted there
        except (ClusterError, RecordError, UnsafeFile) as exc:
            print(f"rayhpc: error: {exc}", file=sys.stderr)
            raise Exit(code=1) from None

    return wrapper


def say(text: str) -> None:
    print(f"rayhpc: {text}", flush=True)


def write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


RUN_HELP = {
    "run": "the run id (`rayhpc launch` prints it; its directory is <shared>/runs/ID)",
    "site": "site profile whose shared dir holds the run (default: local)",
    "shared": "the shared dir the run was launched with (default: $RAYHPC_SHARED, else the "
              "site's, else ./shared)",
}


def find(run: str | None, site: str, shared: str | None):

    if not run:
        raise UserError("--run: give the run id (`rayhpc status` lists the runs)")
    return find_run(run, shared_dir(site, shared))


def command_after_dashes() -> list[str]:
    """The words after a standalone `--`, as given (invoke's own remainder loses quoting)."""
    if "--" not in sys.argv:
        return []
    return sys.argv[sys.argv.index("--") + 1:]


@task(auto_shortflags=False, iterable=["pip"], help={
    "recipe": "recipe name in recipes/ or path to a recipe YAML (default: ray)",
    "variant": "recipe variant: cpu or gpu (default: cpu)",
    "base": "base image instead of the recipe's rayproject/ray tag (e.g. the `rayhpc base` tag)",
    "tag": "tag for the built image (default: rayhpc/<recipe>:<ray>-py<XY>-<variant>, with "
           "-plus-<hash of the added packages> when --pip/--requirements add some)",
    "pip": "a pip requirement to add for this build only, one layer after the recipe's "
           "(repeatable); installed with the recipe's Ray kept",
    "requirements": "a requirements file (one requirement a line, # comments) to add for this "
                    "build only, like --pip",
    "ca_bundle": "PEM CA bundle for pip/apt during the build only (default: $PIP_CERT, "
                 "$REQUESTS_CA_BUNDLE or $SSL_CERT_FILE); never stored in the image",
    "pip_index_url": "pip index URL for the build only (default: $PIP_INDEX_URL)",
    "sif": "also convert the image to a SIF for Apptainer/Singularity (see `convert`)",
    "no_cache": "rebuild every layer instead of reusing the engine's cached ones",
    "platform": "the nodes' platform: linux/amd64 or linux/arm64 (Grace-Hopper; tags get "
                "-aarch64; another than this host's builds under emulation) (default: the "
                "recipe's, else linux/amd64)",
})
@user_errors
def build(c, recipe="ray", variant="cpu", base=None, tag=None, ca_bundle=None,
          pip_index_url=None, sif=False, no_cache=False, pip=None, requirements=None,
          platform=None):
    """Build a Docker image from a recipe; prints the image tag (and SIF path) last.

    --pip and --requirements add packages for one build; they are checked against the
    recipe's Ray (statically, then by pip's resolver in the base image) before the build.
    """
    from rayhpc.containers.images import build_recipe_image
    from rayhpc.containers.sif import convert_image

    image = build_recipe_image(recipe, variant, base=base, tag=tag, ca_bundle=ca_bundle,
                               pip_index_url=pip_index_url, no_cache=no_cache,
                               pip=tuple(pip or ()), requirements=requirements,
                               platform=platform)
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
    from rayhpc.containers.sif import convert_image

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
    from rayhpc.containers.apptainer_def import write_defs

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
    "platform": "linux/amd64 or linux/arm64: the stand-in's platform; another than this "
                "host's needs qemu-user-static (default: the recipe's, else linux/amd64)",
})
@user_errors
def base(c, recipe="ray", os_image=None, mirror=None, tag=None, ca_bundle=None,
         pip_index_url=None, no_cache=False, platform=None):
    """Build a stand-in for rayproject/ray where no registry is reachable; prints its tag last."""
    from rayhpc.containers.images import build_standin_base

    print(build_standin_base(recipe, os_image=os_image, mirror=mirror, tag=tag,
                             ca_bundle=ca_bundle, pip_index_url=pip_index_url,
                             no_cache=no_cache, platform=platform))


LAUNCH_FLAGS = ("nodes", "driver", "shared", "image", "join_timeout", "shm_size", "num_cpus",
                "num_gpus", "walltime", "queue", "account", "restarts", "restart_on_failure",
                "checkpoint_dir", "serve", "serve_port", "serve_bind")


@task(auto_shortflags=False, iterable=["group"], help={
    "site": "site profile name (see `rayhpc sites`) or path to a site YAML file (default: local)",
    **{flag: SETTINGS[flag].help for flag in LAUNCH_FLAGS},
    "group": "a node group NAME:NODES[:IMAGE][,KEY=VALUE...], repeated for each group (e.g. "
             "--group head:1 --group gpu:4:ray-gpu.sif,gpu=nvidia,resources.trainer=1); "
             "instead of the site file's `groups` and of --nodes",
    "dry_run": "print the job script; submit nothing (HPC sites)",
    "wait": "after submitting, follow the job: to its end with a driver (exit code: the "
            "driver's), until the cluster is up without one (HPC sites)",
    "interactive": "no driver: keep the cluster up for Ray jobs (`rayhpc submit`) until "
                   "`rayhpc down`, the walltime or Ctrl-C (also what a launch without any "
                   "driver does)",
    "detach": "interactive, local site: return once the cluster is up and leave it running "
              "(`rayhpc down --run ID` stops it)",
})
@user_errors
def launch(c, site="local", nodes=None, driver=None, shared=None, image=None, join_timeout=None,
           shm_size=None, num_cpus=None, num_gpus=None, walltime=None, queue=None, account=None,
           restarts=None, restart_on_failure=False, checkpoint_dir=None, serve=None,
           serve_port=None, serve_bind=None, group=None, dry_run=False, wait=False,
           interactive=False, detach=False):
    """Run a Ray cluster in containers: the driver, then teardown; no driver: keep it up.

    1 head + N-1 workers. With a driver, run it and tear down; without one (--interactive),
    keep the cluster up for Ray jobs (`rayhpc submit`); with --serve MODULE:APP, also serve a
    Ray Serve application over HTTP from the head (connect.txt says how to reach it).

    Settings come from the flags, else RAYHPC_<SETTING> variables, else the site file, else
    defaults. On the local site it exits with the driver's exit code (interactive: it stays in
    the foreground until Ctrl-C or `rayhpc down`, unless --detach). On an HPC site it writes
    the job script into the run directory and submits it (inside an allocation: runs it).
    """
    values = locals()
    cli = {flag: values[flag] for flag in LAUNCH_FLAGS}
    cli["restart_on_failure"] = restart_on_failure or None  # absent: the next layer's
    cli["group"] = group or []
    code = run_launch(site, cli, dry_run=dry_run, wait=wait, interactive=interactive,
                      detach=detach)
    if code:
        raise Exit(code=code)


@task(auto_shortflags=False, help={
    **RUN_HELP,
    "working_dir": "the job's working directory on every node: one in the shared dir is used "
                   "in place; elsewhere it is sent along (local site only) (default: the "
                   "shared dir)",
})
@user_errors
def submit(c, run=None, working_dir=None, site="local", shared=None):
    """Submit a Ray job to an interactive cluster: `rayhpc submit --run ID -- CMD ARGS...`.

    The command runs on the head as a Ray job (Ray's Jobs API, with the run's token); its
    output is followed here and the exit code is the job's. Ctrl-C stops the job.
    """
    command = command_after_dashes()
    entrypoint_of(command or "")  # refused before anything is looked up
    found = find(run, site, shared)
    job_id = submit_job(found, command, working_dir, say)
    with noting_signals() as signals:
        result = wait_for_job(found, job_id, write, signals)
    message = f": {result.message}" if result.message and result.exit_code else ""
    say(f"job {job_id} {result.status.lower()}, exit code {result.exit_code}{message}")
    if result.exit_code:
        raise Exit(code=result.exit_code)


@task(auto_shortflags=False, help={
    **RUN_HELP,
    "node": "a node's agent log (its name: head, worker-1, ... locally; the host name on HPC "
            "sites; `rayhpc status` lists them)",
    "file": "with --node: one of the node's Ray log files instead (raylet.out, "
            "gcs_server.out, ...)",
    "job": "one Ray job's output (its id: raysubmit_...)",
    "follow": "keep printing what is added, until the run (or the job) ends",
})
@user_errors
def logs(c, run=None, node=None, file=None, job=None, follow=False, site="local", shared=None):
    """Print a run's output, a node's agent log, or one of a node's Ray logs.

    The driver's output (an interactive cluster: each Ray job's), a node's agent log (--node),
    or a node's Ray log (--node N --file F); local and batch runs alike, finished ones too.
    """
    found = find(run, site, shared)
    with noting_signals() as signals:
        code = run_logs(found, write, node=node, file=file, job=job, follow=follow,
                        signals=signals)
    if code:
        raise Exit(code=code)


@task(auto_shortflags=False, help={
    **RUN_HELP,
    "run": "the run to stop cleanly (interactive clusters, batch jobs) or whose leftovers to "
           "remove (default: remove what dead runs left on this machine's engine)",
})
@user_errors
def down(c, run=None, site="local", shared=None):
    """Stop a run cleanly and wait until every node stopped (or remove leftovers).

    Batch runs: the scheduler's clean cancel, e.g. `scancel --batch --signal=TERM`. Without
    --run: remove the containers and networks that local launches left behind, of runs that
    are provably dead (none of their containers runs, or their run directory recorded their
    end or is gone); a run that may be alive is named, with the command that stops it.
    """
    if not run:
        remove_leftovers(print)
        return
    down_by_id(run, shared_dir(site, shared), say)


@task(auto_shortflags=False, help={
    **RUN_HELP,
    "run": "show only this run",
})
@user_errors
def status(c, run=None, site="local", shared=None):
    """Show the runs that have not finished, and what runs left on this engine.

    Each run: phase, nodes joined and lost, uptime; a batch job's state and time left; the
    local containers' states.
    """
    shared_path = shared_dir(site, shared)
    lines = status_lines(shared_path, run)
    if not lines:  # "no runs" only once the engine said so too
        backend_for(load_site(site)).check_leftovers_readable()
    print("\n".join(lines) if lines else f"no runs (in {shared_path / 'runs'} or on this "
          "machine's engine)")


@task(auto_shortflags=False, help={
    **RUN_HELP,
    "nodes": "the block's node count (worker nodes that join the running cluster)",
    "group": "the block's node group: one of the run's groups by name, or a new one as "
             "NAME:NODES[:IMAGE][,KEY=VALUE...] (as `launch --group`)",
    "walltime": "the block's walltime (default: the run's)",
    "queue": "the block's queue / partition (default: the first of the site's table that "
             "takes it, else the scheduler's default)",
})
@user_errors
def grow(c, run=None, nodes=None, group=None, walltime=None, queue=None, site="local",
         shared=None):
    """Add a block of worker nodes to a running cluster (a batch job of its own).

    Its nodes join the run's Ray cluster (interactive, or one running its driver) with the
    run's token; `rayhpc status --run ID` shows each block, `rayhpc shrink` releases one.
    """
    found = find(run, site, shared)
    count = None if nodes is None else _count(nodes, "--nodes")
    grow_run(found, site, BlockRequest(nodes=count, group=group, walltime=walltime,
                                       queue=queue), say)


@task(auto_shortflags=False, help={
    **RUN_HELP,
    "block": "the block to release (b2, b3, ...: `rayhpc status --run ID` lists them)",
})
@user_errors
def shrink(c, run=None, block=None, site="local", shared=None):
    """Release a block of a running cluster: drained first, then stopped (logs kept).

    No new work lands on its nodes; what runs there may finish within the drain window, then
    Ray retries it elsewhere. The cluster and its driver go on.
    """
    if not block:
        raise UserError("--block: give the block to release (`rayhpc status --run ID` lists "
                        "them)")
    shrink_run(find(run, site, shared), block, say)


@task(auto_shortflags=False, help={
    **RUN_HELP,
    "autoscale": "MIN:MAX blocks to keep (e.g. 0:4)",
    "block_nodes": "nodes per block (default 1)",
    "walltime": "each block's walltime (default: the run's)",
    "queue": "each block's queue (default: as `rayhpc grow`)",
    "up_after": "seconds Ray's demand must stay unmet before a block is added (default 30)",
    "idle_after": "seconds a block must stay idle before it is released (default 120)",
    "period": "seconds between looks at Ray's demand (default 5)",
    "block_lifetime": "a block running this long gets a replacement submitted ahead and is "
                      "released once the replacement joined (a walltime, e.g. 50:00; default "
                      "auto: the block's walltime less stop_grace and a fifth of it, at most "
                      "15 min; off: never)",
    "lifetime_stagger": "replacements come up to this much earlier, spread per block, so "
                        "that blocks started together are not replaced together (a walltime; "
                        "default 0)",
})
@user_errors
def autoscale(c, run=None, autoscale="0:1", block_nodes="1", walltime=None, queue=None,
              up_after="30", idle_after="120", period="5", block_lifetime="auto",
              lifetime_stagger="0", site="local", shared=None):
    """Keep a run between MIN and MAX blocks on Ray's demand (runs here, until the run ends).

    Reads Ray's unmet demand from the head's dashboard with the run's token; adds a block when
    it lasts, releases the block idle longest, backs off after a block that failed to start.
    A block past its lifetime gets a replacement ahead of its walltime, then drains once the
    replacement joined (one replacement at a time: at most MAX+1 blocks meanwhile).
    """
    least, most = parse_autoscale(autoscale)
    seconds = {flag: _seconds(value, flag, above_zero=flag == "--period") for flag, value in
               (("--up-after", up_after), ("--idle-after", idle_after), ("--period", period))}
    found = find(run, site, shared)
    policy = Policy(least, most, up_after_s=seconds["--up-after"],
                    idle_after_s=seconds["--idle-after"])
    request = BlockRequest(nodes=_count(block_nodes, "--block-nodes"), walltime=walltime,
                           queue=queue)
    with noting_signals() as signals:
        autoscale_run(found, site, policy, request, say, period_s=seconds["--period"],
                      stop=lambda: bool(signals), lifetime=(block_lifetime, lifetime_stagger))


def _seconds(value: str, flag: str, above_zero: bool) -> float:
    """A number of seconds from a flag: finite, and not negative (``above_zero``: above 0).
    (Text defaults: invoke would convert to float itself, with a traceback for "abc".)"""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0 or (above_zero and number == 0):
        raise UserError(f"{flag}: {value!r} is not a number of seconds "
                        f"({'above 0' if above_zero else '0 or more'}, e.g. 30)")
    return number


def _count(value: str, flag: str) -> int:
    if not str(value).strip().isdigit() or int(value) < 1:
        raise UserError(f"{flag}: {value!r} is not a node count (1 or more)")
    return int(value)


@task(auto_shortflags=False, help=RUN_HELP)
@user_errors
def report(c, run=None, site="local", shared=None):
    """Write a run's bring-up timeline, <run>/timeline.svg; prints its path.

    One row per node (bins of nodes by join time above 40): waiting for the head, ray start,
    joined, driver/up, stopping; the head's milestones as lines; late nodes named. Every run's
    head writes it at the end; this rewrites it from the run's timing.json and node records.
    """
    found = find(run, site, shared)
    if not found.paths.exists(found.paths.timing):
        raise UserError(f"--run: run {run} has no timing.json yet (a run writes it at its "
                        f"end); `rayhpc status {found.flags}` shows how far it is")
    print(write_timeline(found.paths))


@task(auto_shortflags=False,
      help={"site": "one site (name or file): also its queue table, its source and the day "
                    "it was read (Invoke has no optional positional arguments: a flag)"})
@user_errors
def sites(c, site=None):
    """List the site profiles: scheduler, launcher, container runtime, and the documentation
    each follows; with a SITE, that one and its queue table."""

    found = [load_site(site)] if site else list_sites()
    width = max(len(s.name) for s in found)
    print(f"{'site':<{width}}  {'scheduler':<9}  {'launcher':<8}  {'runtime':<11}  description")
    for s in found:
        print(f"{s.name:<{width}}  {s.scheduler:<9}  {backend_for(s).node_launcher(s):<8}  "
              f"{s.runtime:<11}  {s.description}")
        for doc in s.docs:
            print(f"{'':<{width}}  docs: {doc}")
        if site:
            print("\n".join(queue_table_lines(list(s.queues), s.queue_source)))


@task(auto_shortflags=False, help={"k": "only tests matching this pytest -k expression",
            "unit": "only the tests that need no Docker engine"})
def test(c, k=None, unit=False):
    """Run ruff and the test suite (REQUIRE_DOCKER=1 makes engine tests fail instead of skip)."""
    with c.cd(str(CHECKOUT)):
        c.run(f"{sys.executable} -m ruff check .", pty=False)
        # The slowest tests, listed at the end: what CI's time (under 50 minutes) is spent on.
        args = [sys.executable, "-m", "pytest", "--durations=30"]
        if k:
            args += ["-k", repr(k)]
        if unit:
            args += ["-m", "'not docker'"]
        c.run(" ".join(args), pty=False)


CHECKOUT = Path(__file__).resolve().parent.parent  # where the package runs from a checkout


def tests_run_here() -> bool:
    """Whether `test` works here: a checkout's tests beside the package, and ruff and pytest
    importable (an installed wheel has neither its tests nor, as a rule, the tools)."""
    return (CHECKOUT / "tests" / "test_architecture.py").is_file() and \
        all(importlib.util.find_spec(tool) is not None for tool in ("ruff", "pytest"))


# Only the tasks that work where this is installed.
namespace = Collection(build, convert, defs, base, launch, submit, logs, down, status, grow,
                       shrink, autoscale, report, sites, *([test] if tests_run_here() else []))

# The installed command (`[project.scripts]`: rayhpc = "rayhpc.cli:program.run"): the same
# tasks, flags, help and exit codes as `invoke` in a checkout, from any directory.
program = Program(namespace=namespace, version=__version__, name="rayhpc",
                  binary="rayhpc", binary_names=["rayhpc"])
