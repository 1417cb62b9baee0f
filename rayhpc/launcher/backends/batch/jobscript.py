"""Render the batch job script of a launch (pure: data in, text out; golden-tested per site).

The script starts one node agent per node through the site's launcher (srun, aprun, mpiexec,
jsrun) inside the site's container runtime, passes the walltime warning (or a SIGTERM sent to
the batch script, e.g. `scancel --batch --signal=TERM`) on to them through the run directory's
`stop` file, and exits with the driver's exit code. Where the scheduler sends no warning before
its walltime kill (PBS, Cobalt), a timer in the script writes the stop file `stop_grace`
seconds before the walltime. A site whose setup does not put the container runtime on PATH
fails at once, with a line in job.out and in the run directory's `error`.
"""

from __future__ import annotations

import dataclasses
import shlex
from typing import NamedTuple

from rayhpc.common.user_error import UserError
from rayhpc.launcher.contract import (
    HEAD_HOST_ENV,
    RANK_VARS_ENV,
    Block,
    LaunchSpec,
    NodeGroup,
    RunPaths,
    fabric_environment,
)
from rayhpc.launcher.resolve.config import Site
from rayhpc.launcher.resolve.fabric_interface import export_unless_set
from rayhpc.launcher.resolve.gpus import NodeGpus, node_gpus
from rayhpc.launcher.resolve.queues import queue_is_qos
from rayhpc.launcher.runtimes import ExecRequest, runtime
from rayhpc.launcher.schedulers import SCHEDULERS, Job, Scheduler
from rayhpc.launcher.schedulers.scheduler_interface import JobGroup
from rayhpc.launcher.times import format_walltime


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


PROXY_VARS = ("http_proxy", "https_proxy", "ftp_proxy", "HTTP_PROXY", "HTTPS_PROXY")
NO_PROXY_VARS = ("no_proxy", "NO_PROXY")


def job_for(spec: LaunchSpec, site: Site, block: Block | None = None) -> Job:
    if block is not None:
        return block_job(spec, site, block)
    # The file systems the job touches: the shared dir (run dir, driver) and the SIF images.
    images = [group.image for group in spec.groups] or [spec.image]
    paths = (str(spec.shared),
             *dict.fromkeys(image for image in images if image.startswith("/")))
    groups = tuple(job_group(spec, site, group) for group in spec.groups)
    scheduler = SCHEDULERS[site.scheduler]
    gpus = gpus_of(spec, site)
    return Job(name=spec.project, nodes=spec.nodes, walltime_s=spec.walltime_s,
               output=str(RunPaths(spec.run_dir).job_output), queue=spec.queue or "",
               account=spec.account or "", stop_grace_s=spec.stop_grace,
               extra=queue_options(site, spec.queue), gpu=gpus.kind,
               exclusive=not site.option("shared_nodes"), paths=paths,
               directives=tuple(site.option("directives")), groups=groups,
               gpus=gpus.request, exports=node_exports(spec, site, scheduler))


def block_job(spec: LaunchSpec, site: Site, block: Block) -> Job:
    """A grown block's job: worker nodes of one kind (its group's, if any), its own walltime,
    queue and output file; the run's account unless the block has its own."""
    group = spec.group(block.group) if block.group else None
    paths = (str(spec.shared), *([block.image] if block.image.startswith("/") else []))
    gpus = gpus_of(spec, site, group)
    extra = {**queue_options(site, block.queue), **(group.scheduler_options if group else {})}
    return Job(name=f"{spec.project}-{block.name}", nodes=block.nodes,
               walltime_s=block.walltime_s,
               output=str(RunPaths(spec.run_dir).block_file(block.name, "out")),
               queue=block.queue, account=spec.account or "", stop_grace_s=spec.stop_grace,
               extra=extra, gpu=gpus.kind, exclusive=not site.option("shared_nodes"),
               paths=paths, directives=tuple(site.option("directives")), gpus=gpus.request,
               exports=(*node_exports(spec, site, SCHEDULERS[site.scheduler]),
                        *([] if SCHEDULERS[site.scheduler].head_host else [HEAD_HOST_ENV])))


def block_command(spec: LaunchSpec, site: Site, block: Block) -> list[str]:
    """A block's node agent: a worker of the block (its group's, if any), from the block's
    own node program (the run's spec with the block's group in it)."""
    paths = RunPaths(spec.run_dir)
    group = spec.group(block.group) if block.group else None
    args = ["--role", "worker", "--block", block.name,
            *(["--group", block.group] if block.group else [])]
    return node_command(spec, site, group,
                        paths.agent_command(*args, program=paths.block_file(block.name, "pyz")),
                        always_head_host=True)


def job_group(spec: LaunchSpec, site: Site, group: NodeGroup) -> JobGroup:
    """One node group as the scheduler sees it: its nodes, queue, scheduler options (the
    site's, then the group's) and its agent command (in its image, with its GPUs)."""
    gpus = gpus_of(spec, site, group)
    return JobGroup(name=group.name, nodes=group.nodes,
                    command=node_command(spec, site, group),
                    queue=group.queue or spec.queue or "",
                    extra={**queue_options(site, group.queue or spec.queue),
                           **group.scheduler_options},
                    gpu=gpus.kind, gpus=gpus.request)


def gpus_of(spec: LaunchSpec, site: Site, group: NodeGroup | None = None) -> NodeGpus:
    """The GPUs a node (of ``group``) asks the scheduler for and passes into its container:
    one count per node drives both (see `launcher.resolve.gpus`)."""
    requests = SCHEDULERS[site.scheduler].requests_gpus(site.option("scheduler_options"))
    if group is None:
        return node_gpus(site.option("gpu"), spec.num_gpus, requests)
    return node_gpus(group.gpu, group.num_gpus, requests)


def node_exports(spec: LaunchSpec, site: Site, scheduler: Scheduler) -> tuple[str, ...]:
    """What the job script exports for the agents (and PATH, which the site's setup may have
    changed): launchers that start tasks without the script's environment pass these."""
    return ("PATH", "RAYHPC_RUN_DIR", *job_environment(site, scheduler),
            *fabric_environment(spec.interface, site.option("environment")),
            *([HEAD_HOST_ENV] if scheduler.head_host else []))


def queue_options(site: Site, queue: str | None) -> dict:
    """The site's scheduler_options, and for a queue its table marks as a QOS (Frontier's
    debug), the QOS option instead of the partition."""
    options = site.option("scheduler_options")
    return {**options, "queue_option": "qos"} if queue_is_qos(site.queues, queue) else options


def proxy_environment(site: Site) -> dict[str, str]:
    """The site's outbound proxy as the variables tools read. The agents add the head's and
    their own address to no_proxy (known only once the nodes are up)."""
    proxy = site.option("proxy")
    if not proxy:
        return {}
    env = dict.fromkeys(PROXY_VARS, proxy)
    if site.option("no_proxy"):
        env.update(dict.fromkeys(NO_PROXY_VARS, ",".join(site.option("no_proxy"))))
    return env


def job_environment(site: Site, scheduler: Scheduler) -> dict[str, str]:
    """What the job exports for every node: the site's environment, its proxy, and which
    variable holds the launcher's rank (the agent reads it)."""
    return {**{key: str(value) for key, value in site.option("environment").items()},
            **proxy_environment(site),
            RANK_VARS_ENV: ",".join(scheduler.task_rank_vars(site.option("scheduler_options")))}


def node_command(spec: LaunchSpec, site: Site, group: NodeGroup | None = None,
                 agent: list[str] | None = None, always_head_host: bool = False) -> list[str]:
    """The node agent, in the image, through the site's container runtime. In a group: the
    group's image, GPUs and runtime options (after the site's), the agent told its group and,
    outside the head's group, that it is a worker (each group's launcher may count its ranks
    from 0: PBS runs one mpiexec per group). ``agent``: another agent command line (a
    block's); ``always_head_host``: the head's host is passed in (a block's job knows it)."""
    scheduler = SCHEDULERS[site.scheduler]
    args = []
    if group is not None:
        args = ["--group", group.name, *([] if group.head else ["--role", "worker"])]
    request = ExecRequest(image=group.image if group else spec.image,
                          command=agent or RunPaths(spec.run_dir).agent_command(*args),
                          binds=[str(spec.shared)], workdir=str(spec.shared),
                          gpu="" if site.option("setup_binds_gpus")
                          else gpus_of(spec, site, group).kind,
                          pass_env=[*scheduler.env_passthrough,
                                    *job_environment(site, scheduler),
                                    *fabric_environment(spec.interface,
                                                        site.option("environment")),
                                    *([HEAD_HOST_ENV] if scheduler.head_host
                                      or always_head_host else [])])
    options = [*site.option("runtime_options"), *(group.runtime_options if group else [])]
    return runtime(site.runtime, options).exec_command(request)


def fabric_lines(spec: LaunchSpec, site: Site) -> list[str]:
    """NCCL's and Gloo's interface: the node's (`launcher.resolve.fabric_interface`), if unset."""
    fabric = fabric_environment(spec.interface, site.option("environment"))
    if not fabric:
        return []
    return [f"# NCCL and Gloo on the interface Ray uses ({spec.interface}), unless the job's "
            "environment sets them.",
            *(export_unless_set(name, value) for name, value in fabric.items())]


# Ray (2.60, python/ray/_private/accelerators/intel_gpu.py) counts Intel GPUs only through
# dpctl, and only then gives each task its own (ZE_AFFINITY_MASK=<ids>); without dpctl it
# takes "GPU" for NVIDIA's (CUDA_VISIBLE_DEVICES) and every task sees every tile.
DPCTL_CHECK = ["python", "-c", "import dpctl"]
# Set in the site's environment, Ray leaves the devices to the program (as ALCF's vLLM setup
# does): then no check. Both: since ray-project/ray PR 64440 Ray selects a task's Intel GPU
# with ZE_AFFINITY_MASK (opt-out RAY_EXPERIMENTAL_NOSET_ZE_AFFINITY_MASK), before it with
# ONEAPI_DEVICE_SELECTOR (opt-out RAY_EXPERIMENTAL_NOSET_ONEAPI_DEVICE_SELECTOR, the one ALCF's
# Aurora setup_ray_cluster.sh sets); one alone leaves the other set per task by a Ray that uses
# it, and the program's own device selection is overridden.
NOSET_INTEL = ("RAY_EXPERIMENTAL_NOSET_ZE_AFFINITY_MASK",
               "RAY_EXPERIMENTAL_NOSET_ONEAPI_DEVICE_SELECTOR")


def intel_opt_out(site: Site) -> bool:
    """Whether the site leaves Intel devices to the program (both opt-outs set); UserError
    when only one is."""
    given = [name for name in NOSET_INTEL if name in site.option("environment")]
    if given and len(given) < len(NOSET_INTEL):
        missing = next(name for name in NOSET_INTEL if name not in given)
        raise UserError(f"site {site.name}: environment: {given[0]} without {missing}: Ray "
                        "selects each task's Intel GPU with ZE_AFFINITY_MASK since ray-project/"
                        "ray PR 64440 and with ONEAPI_DEVICE_SELECTOR before it; to leave the "
                        f"devices to your program set both to '1' (or neither)")
    return bool(given)


def intel_gpu_check(spec: LaunchSpec, site: Site, files: ScriptFiles,
                    block: Block | None = None) -> list[str]:
    """Stop at once when an image of Intel GPU nodes lacks dpctl (its tasks would not be
    isolated), saying why and how to fix it."""
    if intel_opt_out(site):
        return []
    groups = spec.groups if block is None else tuple(g for g in spec.groups
                                                     if g.name == block.group)
    images = ([group.image for group in groups if group.gpu == "intel"] if groups
              else [block.image if block else spec.image] if site.option("gpu") == "intel"
              else [])
    lines = []
    for image in dict.fromkeys(images):
        request = ExecRequest(image=image, command=DPCTL_CHECK, binds=[str(spec.shared)],
                              gpu="intel")
        check = runtime(site.runtime, site.option("runtime_options")).exec_command(request)
        message = (f"rayhpc: site {site.name}: {image} has no dpctl: Ray would take the "
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


def walltime_timer(spec: LaunchSpec, scheduler: Scheduler, stop_name: str) -> list[str]:
    """A background timer that writes the stop file stop_grace seconds before the walltime,
    counted from the start of the script (which starts with the job)."""
    wait_s = spec.walltime_s - spec.stop_grace
    return [
        f"# No signal comes from {scheduler.name} before its walltime kill: this timer asks "
        f"the agents to stop",
        f"# {spec.stop_grace} s before the walltime ({format_walltime(spec.walltime_s)}, "
        "counted from the script's start),",
        "# as a Slurm job's --signal would.",
        "(",
        f"  sleep {wait_s} & sleeper=$!",
        "  trap 'kill \"$sleeper\" 2>/dev/null; exit 0' TERM",
        f"  wait \"$sleeper\" && (set -C; echo \"job script: walltime in {spec.stop_grace} s\""
        f" > \"$RAYHPC_RUN_DIR/{stop_name}\") 2>/dev/null",
        ") &",
        "timer=$!",
        "trap 'kill \"$timer\" 2>/dev/null' EXIT  # the timer ends with the script",
    ]


def runtime_check(site: Site, files: ScriptFiles) -> list[str]:
    """Stop at once, saying why, when the site's setup did not put the runtime on PATH."""
    program = runtime(site.runtime).program
    modules = [line for line in site.option("setup") if line.split()[:1] in (["module"], ["ml"])]
    expected = (f"modules: {'; '.join(modules)}" if modules
                else "the site setup loads no module")
    message = (f"rayhpc: site {site.name}: {program} is not on PATH after the site setup "
               f"({expected}); fix `setup` in the site file")
    return [
        f"if ! command -v {program} >/dev/null 2>&1; then",
        *fail_lines(message, files),
        "fi",
    ]


def render_job_script(spec: LaunchSpec, site: Site, block: Block | None = None,
                      head_ip: str = "") -> str:
    """The launch's job script; with ``block``: that grown block's (worker nodes only, which
    reach the head's agent at ``head_ip`` and stop on the block's own stop file)."""
    scheduler = SCHEDULERS[site.scheduler]
    job = job_for(spec, site, block)
    command = block_command(spec, site, block) if block else node_command(spec, site)
    launch = scheduler.launch_lines(job, [] if job.groups else command,
                                    site.option("launcher_options"))
    head_host = shlex.quote(head_ip) if block else scheduler.head_host_for(job)
    groups = " + ".join(f"{group.name} {group.nodes}" for group in job.groups)
    files = script_files(spec, block)
    run_dir = shlex.quote(str(RunPaths(spec.run_dir).dir))
    timer = [] if scheduler.warns_before_walltime else walltime_timer(
        dataclasses.replace(spec, walltime_s=job.walltime_s), scheduler, files.stop)
    setup = site.option("setup")
    what = (f"block {block.name} of run {spec.run_id} on site {site.name} ({block.nodes} "
            f"worker nodes{f' of group {block.group}' if block.group else ''}, joining the "
            "head's cluster)" if block else
            f"run {spec.run_id} on site {site.name} ({spec.nodes} nodes"
            f"{f': {groups}' if groups else ''})")
    lines = [
        "#!/bin/bash",
        *scheduler.render_directives(job),
        "",
        f"# Rendered by rayhpc for {what}.",
        ("# Do not edit: `rayhpc grow` writes it." if block else
         "# Do not edit: `rayhpc launch` writes it anew; `--dry-run` prints it."),
        "set -u",
        f"export RAYHPC_RUN_DIR={run_dir}",
        *timer,
        *(["# The site's setup (set +u: module scripts may read unset variables).",
           "set +u", *setup, "set -u"] if setup else []),
        *(f"export {key}={shlex.quote(value)}"
          for key, value in job_environment(site, scheduler).items()),
        *fabric_lines(spec, site),
        *(["# Where the head's agent listens (its address, from head.json when the block was",
           "# submitted): the block's nodes read nothing of the shared file system to find it.",
           f"export {HEAD_HOST_ENV}={head_host}"] if block else
          ["# Where the head's agent listens (rank 0's host): workers reach it over the "
           "network,",
           "# not by polling the shared file system.",
           f"export {HEAD_HOST_ENV}=\"$({head_host})\""] if head_host else []),
        *runtime_check(site, files),
        *intel_gpu_check(spec, site, files, block),
        f"cd {shlex.quote(str(spec.shared))}",
        *scheduler.prologue(job),
        "",
        ("# One worker agent per node, in the container: they join the running cluster."
         if block else
         "# One node agent per node, in its group's container; rank 0 (the head's group) "
         "is the Ray head." if job.groups else
         "# One node agent per node, in the container; rank 0 becomes the Ray head."),
        *launch,
        *(["# The walltime warning comes here. Ask the head to release this block (its stop",
           "# file): it drains the block's nodes, then tells their agents to stop; they stop",
           "# Ray and keep the logs, and the cluster goes on without them.",
           "# (set -C: the stop file is made once, by whoever asks first.)"] if block else
          ["# The walltime warning comes here. Tell the agents through the run directory (srun",
           "# would kill its tasks on SIGTERM, not pass it on): they stop the driver and Ray on",
           "# every node and keep the logs.",
           "# (set -C: the stop file is made once, by whoever asks first.)"]),
        f"trap '(set -C; echo job script: walltime or cancel > "
        f"\"$RAYHPC_RUN_DIR/{files.stop}\") 2>/dev/null' TERM INT",
        'wait "$step"',
        *(["code=$?",
           "# A trapped signal ends the first wait early: the step's own end is its code.",
           'if kill -0 "$step" 2>/dev/null; then wait "$step"; code=$?; fi']
          if block else
          ['wait "$step" 2>/dev/null  # a trapped signal ends the first wait early',
           f"code=$(cat \"$RAYHPC_RUN_DIR/{files.exit_code}\" 2>/dev/null || echo 1)"]),
        'exit "$code"',
    ]
    return "\n".join(lines) + "\n"
