"""Render the batch job script of a launch (pure: data in, text out; golden-tested per site).

The script starts one node agent per node through the site's launcher (srun, aprun, mpiexec,
jsrun) inside the site's container runtime, passes the walltime warning (or a SIGTERM sent to
the batch script, e.g. `scancel --batch --signal=TERM`) on to them through the run directory's
`stop` file, and exits with the driver's exit code. Where the scheduler sends no warning before
its walltime kill (PBS, Cobalt), a timer in the script writes the stop file `stop_grace`
seconds before the walltime. A site whose setup does not put the container runtime on PATH
fails at once, with a line in job.out and in the run directory's `error`.

Its shape is one template (`JOB_SCRIPT`); a launch's first job and a grown block's job differ
only in what fills its slots (`first_job_slots`, `block_slots`). The site's options come in
resolved once (`SiteOptions`).
"""

from __future__ import annotations

import shlex
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from rayhpc.launcher.backends.batch.job_request import block_command, job_for, node_command
from rayhpc.launcher.backends.batch.site_options import (
    NOSET_INTEL,
    SiteOptions,
    intel_opt_out,
    job_environment,
)
from rayhpc.launcher.contract import HEAD_HOST_ENV, Block, LaunchSpec, RunPaths, fabric_environment
from rayhpc.launcher.resolve.config import Site
from rayhpc.launcher.resolve.fabric_interface import export_unless_set
from rayhpc.launcher.resolve.values import has_control
from rayhpc.launcher.runtimes import ExecRequest, runtime
from rayhpc.launcher.schedulers import Job, Scheduler
from rayhpc.launcher.times import format_walltime

# The job script. A slot alone on its line (`@launch`) holds lines, none leaving no line; any
# other slot (`@what`) holds text. Slots are marked with `@`, so the shell's `$` stays as is.
JOB_SCRIPT = """\
#!/bin/bash
@directives

# Rendered by rayhpc for @what.
# Do not edit: @written_by
set -u
export RAYHPC_RUN_DIR=@run_dir
@attempt
@walltime_timer
@site_setup
@environment
@head_host
@checks
cd @workdir
@prologue

@launch_comment
@launch
@stop_comment
trap '(set -C; echo job script: walltime or cancel > "$RAYHPC_RUN_DIR/@stop") 2>/dev/null' TERM INT
wait "$step"
@exit_code
@requeue
exit "$code"
"""


class SlotTemplate(string.Template):
    """`JOB_SCRIPT`'s slot marks: `@name` (the shell's `$name` stays literal)."""
    delimiter = "@"


def fill(template: str, slots: Mapping[str, str | Sequence[str]]) -> str:
    """``template`` with its slots filled (KeyError for a slot not given): a slot alone on its
    line by its lines, any other by its text. ValueError for a control character in any of
    them: values are checked where they come in (`launcher.resolve.values.one_line`); this is
    the last guard, so that none can start a line of its own."""
    for name, value in slots.items():
        for text in [value] if isinstance(value, str) else value:
            if has_control(text):
                raise ValueError(f"job script slot {name}: {text!r} holds a control character")
    texts = {name: value for name, value in slots.items() if isinstance(value, str)}
    lines: list[str] = []
    for line in template.splitlines():
        value = slots.get(line[1:], "") if line.startswith("@") else ""
        if isinstance(value, str):
            lines.append(SlotTemplate(line).substitute(texts))
        else:
            lines += value
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class CommonSlots:
    """The slots both kinds of job fill alike, from their own job, command and files."""
    directives: tuple[str, ...]
    run_dir: str
    walltime_timer: tuple[str, ...]
    site_setup: tuple[str, ...]
    environment: tuple[str, ...]  # the site's exports, then NCCL's and Gloo's interface
    checks: tuple[str, ...]  # the runtime on PATH, dpctl in Intel GPU images
    workdir: str
    prologue: tuple[str, ...]
    launch: tuple[str, ...]
    stop: str  # the stop file the TERM trap writes


@dataclass(frozen=True)
class KindSlots:
    """The slots where a launch's first job and a grown block's job differ."""
    what: str
    written_by: str
    head_host: tuple[str, ...]  # where the head's agent listens (none: the agents find it)
    launch_comment: str
    stop_comment: tuple[str, ...]
    exit_code: tuple[str, ...]  # how the script's exit code is found once the step ended
    attempt: tuple[str, ...] = ()  # --restarts: which attempt this is (the files before kept)
    requeue: tuple[str, ...] = ()  # --restarts: back in the queue when the run goes on


def render_job_script(spec: LaunchSpec, site: Site, block: Block | None = None,
                      head_ip: str = "") -> str:
    """The launch's job script; with ``block``: that grown block's (worker nodes only, which
    reach the head's agent at ``head_ip`` and stop on the block's own stop file)."""
    options = SiteOptions.of(site)
    job = job_for(spec, options, block)
    files = script_files(spec, block)
    command = block_command(spec, options, block) if block else node_command(spec, options)
    kind = (block_slots(spec, options, block, head_ip) if block
            else first_job_slots(spec, options, job, files))
    common = common_slots(spec, options, job, command, files, block)
    return fill(JOB_SCRIPT, {**vars(common), **vars(kind)})


def common_slots(spec: LaunchSpec, options: SiteOptions, job: Job, command: list[str],
                 files: ScriptFiles, block: Block | None) -> CommonSlots:
    """The slots filled alike for both kinds of job. The launch lines are made first: where
    the checks would fail too, their error (e.g. a launcher the scheduler lacks) is the one
    reported."""
    scheduler = options.scheduler
    launch = scheduler.launch_lines(job, [] if job.groups else command,
                                    list(options.launcher_options))
    return CommonSlots(
        directives=tuple(scheduler.render_directives(job)),
        run_dir=shlex.quote(str(RunPaths(spec.run_dir).dir)),
        walltime_timer=(() if scheduler.warns_before_walltime
                        else walltime_timer(job, scheduler, files.stop)),
        site_setup=setup_lines(options),
        environment=(*(f"export {key}={shlex.quote(value)}"
                       for key, value in job_environment(options).items()),
                     *fabric_lines(spec, options)),
        checks=(*runtime_check(options, files), *intel_gpu_check(spec, options, files, block)),
        workdir=shlex.quote(str(spec.shared)),
        prologue=tuple(scheduler.prologue(job)),
        launch=tuple(launch),
        stop=files.stop)


def first_job_slots(spec: LaunchSpec, options: SiteOptions, job: Job,
                    files: ScriptFiles) -> KindSlots:
    """The launch's own job: every node, rank 0 the head; its exit code is the driver's."""
    groups = " + ".join(f"{group.name} {group.nodes}" for group in job.groups)
    head_host = options.scheduler.head_host_for(job)
    return KindSlots(
        what=(f"run {spec.run_id} on site {options.name} ({spec.nodes} nodes"
              f"{f': {groups}' if groups else ''})"),
        written_by="`rayhpc launch` writes it anew; `--dry-run` prints it.",
        head_host=(
            "# Where the head's agent listens (rank 0's host): workers reach it over the network,",
            "# not by polling the shared file system.",
            f"export {HEAD_HOST_ENV}=\"$({head_host})\"") if head_host else (),
        launch_comment=(
            "# One node agent per node, in its group's container; rank 0 (the head's group) "
            "is the Ray head." if job.groups else
            "# One node agent per node, in the container; rank 0 becomes the Ray head."),
        stop_comment=(
            "# The walltime warning comes here. Tell the agents through the run directory (srun",
            "# would kill its tasks on SIGTERM, not pass it on): they stop the driver and Ray on",
            "# every node and keep the logs.",
            "# (set -C: the stop file is made once, by whoever asks first.)"),
        exit_code=(
            'wait "$step" 2>/dev/null  # a trapped signal ends the first wait early',
            f"code=$(cat \"$RAYHPC_RUN_DIR/{files.exit_code}\" 2>/dev/null || echo 1)"),
        attempt=tuple(attempt_lines(spec, options.scheduler, files)) if job.restarts else (),
        requeue=tuple(requeue_lines(options.scheduler)) if job.restarts else ())


def attempt_lines(spec: LaunchSpec, scheduler: Scheduler, files: ScriptFiles) -> list[str]:
    """--restarts: claim the next attempt (attempts/<n>/, `contract.attempts`), keep the files
    of the one before there, and end at once past the last attempt allowed (where the
    scheduler reran the job once more by itself)."""
    run_dir = '"$RAYHPC_RUN_DIR"'
    names = " ".join(path.name for path in RunPaths(spec.run_dir).attempt_files())
    allowed = spec.restarts + 1
    job_id = f'${{{scheduler.job_id_var}:-}}'
    last = scheduler.last_attempt_lines()
    message = (f"rayhpc: the job started again after the run's last attempt (--restarts "
               f"{spec.restarts}): the run ends here")
    return [
        f"# --restarts {spec.restarts}: when the allocation ends before the driver (walltime, "
        "preemption, a node lost),",
        "# the run starts again: this job is requeued. Each attempt claims attempts/<n>/, and "
        "the files of",
        "# the attempt before it move there (rayhpc's contract.attempts).",
        f"mkdir -p {run_dir}/attempts",
        "attempt=1",
        f'while [ -e {run_dir}/attempts/"$attempt" ]; do attempt=$((attempt + 1)); done',
        f'mkdir {run_dir}/attempts/"$attempt"',
        'if [ "$attempt" -gt 1 ]; then',
        f"  for name in {names}; do",
        f'    if [ -e {run_dir}/"$name" ] || [ -L {run_dir}/"$name" ]; then',
        f'      mv -f {run_dir}/"$name" {run_dir}/attempts/"$((attempt - 1))"/',
        "    fi",
        "  done",
        f"  mkdir -p {run_dir}/nodes {run_dir}/logs",
        "fi",
        f'echo "$(date +%s) {job_id}" > {run_dir}/attempts/"$attempt"/started',
        f'echo "rayhpc: attempt $attempt of {allowed} (job {job_id})"',
        f'if [ "$attempt" -gt {allowed} ]; then',
        *fail_lines(message, files),
        "fi",
        *([f'if [ "$attempt" -eq {allowed} ]; then',
           "  # The last attempt: the scheduler must not run the job again by itself.",
           *(f"  {line} || true" for line in last),
           "fi"] if last else []),
    ]


def requeue_lines(scheduler: Scheduler) -> list[str]:
    """--restarts: the head wrote `restarting` (before exit_code) when the run goes on: the
    job goes back in the queue for the next attempt."""
    paths = RunPaths("$RAYHPC_RUN_DIR")
    restarting = f'"$RAYHPC_RUN_DIR/{paths.restarting.name}"'
    requeue = scheduler.requeue_lines(f'"$RAYHPC_RUN_DIR/{paths.job_script.name}"',
                                      f'"$RAYHPC_RUN_DIR/{paths.job_id.name}"')
    return [
        "# The run goes on (the head wrote `restarting`, before exit_code): back in the queue.",
        f"if [ -e {restarting} ]; then",
        f'  echo "rayhpc: $(head -n 1 {restarting})"',
        "  if ! {",
        *(f"    {line}" for line in requeue),
        "  }; then",
        "    echo \"rayhpc: the job could not be put back in the queue: the run ends here\" >&2",
        f"    rm -f {restarting}",
        "  fi",
        "fi",
    ]


def block_slots(spec: LaunchSpec, options: SiteOptions, block: Block,
                head_ip: str) -> KindSlots:
    """A grown block's job: worker nodes that join the running cluster at ``head_ip``; its
    exit code is its step's."""
    return KindSlots(
        what=(f"block {block.name} of run {spec.run_id} on site {options.name} ({block.nodes} "
              f"worker nodes{f' of group {block.group}' if block.group else ''}, joining the "
              "head's cluster)"),
        written_by="`rayhpc grow` writes it.",
        head_host=(
            "# Where the head's agent listens (its address, from head.json when the block was",
            "# submitted): the block's nodes read nothing of the shared file system to find it.",
            f"export {HEAD_HOST_ENV}={shlex.quote(head_ip)}"),
        launch_comment="# One worker agent per node, in the container: they join the running "
                       "cluster.",
        stop_comment=(
            "# The walltime warning comes here. Ask the head to release this block (its stop",
            "# file): it drains the block's nodes, then tells their agents to stop; they stop",
            "# Ray and keep the logs, and the cluster goes on without them.",
            "# (set -C: the stop file is made once, by whoever asks first.)"),
        exit_code=(
            "code=$?",
            "# A trapped signal ends the first wait early: the step's own end is its code.",
            'if kill -0 "$step" 2>/dev/null; then wait "$step"; code=$?; fi'))


class ScriptFiles(NamedTuple):
    """The run directory's files a job script writes, relative to it: the stop request (its
    walltime warning, a cancel), and where it says it cannot start (error, exit code)."""
    stop: str
    error: str
    exit_code: str  # "" : none (a block's job does not end the run)


def script_files(spec: LaunchSpec, block: Block | None = None) -> ScriptFiles:
    """The launch's own: stop, error, exit_code; a block's: blocks/<block>.stop and .error."""
    paths = RunPaths(spec.run_dir)
    if block is None:
        return ScriptFiles(paths.stop.name, paths.error.name, paths.exit_code.name)
    return ScriptFiles(*(str(paths.block_file(block.name, kind).relative_to(paths.dir))
                         for kind in ("stop", "error")), "")


def fail_lines(message: str, files: ScriptFiles) -> list[str]:
    """Say why the job cannot start (job.out and the error file), record it, exit 1."""
    return [f"  echo {shlex.quote(message)} | tee \"$RAYHPC_RUN_DIR/{files.error}\" >&2",
            *([f"  echo 1 > \"$RAYHPC_RUN_DIR/{files.exit_code}\""] if files.exit_code
              else []),
            "  exit 1"]


# -- the script's own lines: the site's setup, the fabric, the checks, the walltime timer

def setup_lines(options: SiteOptions) -> tuple[str, ...]:
    """The site's setup (module loads), run before anything needs what it provides."""
    if not options.setup:
        return ()
    return ("# The site's setup (set +u: module scripts may read unset variables).",
            "set +u", *options.setup, "set -u")


def fabric_lines(spec: LaunchSpec, options: SiteOptions) -> list[str]:
    """NCCL's and Gloo's interface: the node's (`launcher.resolve.fabric_interface`), if unset."""
    fabric = fabric_environment(spec.interface, options.environment)
    if not fabric:
        return []
    return [f"# NCCL and Gloo on the interface Ray uses ({spec.interface}), unless the job's "
            "environment sets them.",
            *(export_unless_set(name, value) for name, value in fabric.items())]


def runtime_check(options: SiteOptions, files: ScriptFiles) -> list[str]:
    """Stop at once, saying why, when the site's setup did not put the runtime on PATH."""
    program = runtime(options.runtime).program
    modules = [line for line in options.setup if line.split()[:1] in (["module"], ["ml"])]
    expected = (f"modules: {'; '.join(modules)}" if modules
                else "the site setup loads no module")
    message = (f"rayhpc: site {options.name}: {program} is not on PATH after the site setup "
               f"({expected}); fix `setup` in the site file")
    return [
        f"if ! command -v {program} >/dev/null 2>&1; then",
        *fail_lines(message, files),
        "fi",
    ]


# Ray (2.60, python/ray/_private/accelerators/intel_gpu.py) counts Intel GPUs only through
# dpctl, and only then gives each task its own (ZE_AFFINITY_MASK=<ids>); without dpctl it
# takes "GPU" for NVIDIA's (CUDA_VISIBLE_DEVICES) and every task sees every tile.
DPCTL_CHECK = ["python", "-c", "import dpctl"]


def intel_gpu_check(spec: LaunchSpec, options: SiteOptions, files: ScriptFiles,
                    block: Block | None = None) -> list[str]:
    """Stop at once when an image of Intel GPU nodes lacks dpctl (its tasks would not be
    isolated), saying why and how to fix it."""
    if intel_opt_out(options):
        return []
    groups = spec.groups if block is None else tuple(g for g in spec.groups
                                                     if g.name == block.group)
    images = ([group.image for group in groups if group.gpu == "intel"] if groups
              else [block.image if block else spec.image] if options.gpu == "intel"
              else [])
    lines = []
    for image in dict.fromkeys(images):
        request = ExecRequest(image=image, command=DPCTL_CHECK, binds=[str(spec.shared)],
                              gpu="intel")
        check = runtime(options.runtime, list(options.runtime_options)).exec_command(request)
        message = (f"rayhpc: site {options.name}: {image} has no dpctl: Ray would take the "
                   "Intel GPUs for NVIDIA ones and every task would see every tile; add "
                   "dpctl to the image (pip install dpctl), or set "
                   f"{' and '.join(NOSET_INTEL)} to '1' in the site's environment to manage "
                   "devices yourself")
        lines += [
            "# Ray gives each task its own Intel GPU (ZE_AFFINITY_MASK) only with dpctl in the",
            "# image (ray-project/ray python/ray/_private/accelerators/intel_gpu.py).",
            f"if ! {shlex.join(check)} >/dev/null 2>&1; then",
            *fail_lines(message, files),
            "fi",
        ]
    return lines


def walltime_timer(job: Job, scheduler: Scheduler, stop_name: str) -> tuple[str, ...]:
    """A background timer that writes the stop file stop_grace seconds before the job's
    walltime, counted from the start of the script (which starts with the job)."""
    wait_s = job.walltime_s - job.stop_grace_s
    return (
        f"# No signal comes from {scheduler.name} before its walltime kill: this timer asks "
        f"the agents to stop",
        f"# {job.stop_grace_s} s before the walltime ({format_walltime(job.walltime_s)}, "
        "counted from the script's start),",
        "# as a Slurm job's --signal would.",
        "(",
        f"  sleep {wait_s} & sleeper=$!",
        "  trap 'kill \"$sleeper\" 2>/dev/null; exit 0' TERM",
        f"  wait \"$sleeper\" && (set -C; echo \"job script: walltime in {job.stop_grace_s} s\""
        f" > \"$RAYHPC_RUN_DIR/{stop_name}\") 2>/dev/null",
        ") &",
        "timer=$!",
        "trap 'kill \"$timer\" 2>/dev/null' EXIT  # the timer ends with the script",
    )
