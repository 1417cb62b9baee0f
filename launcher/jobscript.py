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

import shlex

from launcher.agent import HEAD_HOST_ENV, RANK_VARS_ENV, RunPaths
from launcher.config import Site
from launcher.runtimes import ExecRequest, runtime
from launcher.schedulers import SCHEDULERS, Job, Scheduler, Shell, format_walltime
from launcher.spec import LaunchSpec

PROXY_VARS = ("http_proxy", "https_proxy", "ftp_proxy", "HTTP_PROXY", "HTTPS_PROXY")
NO_PROXY_VARS = ("no_proxy", "NO_PROXY")


def job_for(spec: LaunchSpec, site: Site) -> Job:
    # The file systems the job touches: the shared dir (run dir, driver) and a SIF image.
    paths = (str(spec.shared), *([spec.image] if spec.image.startswith("/") else []))
    return Job(name=spec.project, nodes=spec.nodes, walltime_s=spec.walltime_s,
               output=str(RunPaths(spec.run_dir).job_output), queue=spec.queue or "",
               account=spec.account or "", stop_grace_s=spec.stop_grace,
               extra=site.option("scheduler_options"), gpu=site.option("gpu"),
               exclusive=not site.option("shared_nodes"), paths=paths,
               directives=tuple(site.option("directives")))


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
            **proxy_environment(site), RANK_VARS_ENV: ",".join(scheduler.rank_vars)}


def node_command(spec: LaunchSpec, site: Site) -> list[str]:
    """The node agent, in the image, through the site's container runtime."""
    scheduler = SCHEDULERS[site.scheduler]
    request = ExecRequest(image=spec.image, command=RunPaths(spec.run_dir).agent_command(),
                          binds=[str(spec.shared)], workdir=str(spec.shared),
                          gpu=site.option("gpu"),
                          pass_env=[*scheduler.env_passthrough,
                                    *job_environment(site, scheduler),
                                    *([HEAD_HOST_ENV] if scheduler.head_host else [])])
    return runtime(site.runtime, site.option("runtime_options")).exec_command(request)


def shell_join(argv: list[str]) -> str:
    """A command line for the script: every word quoted, except the ones the shell expands."""
    return " ".join(word if isinstance(word, Shell) else shlex.quote(word) for word in argv)


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


def runtime_check(site: Site, paths: RunPaths) -> list[str]:
    """Stop at once, saying why, when the site's setup did not put the runtime on PATH."""
    program = runtime(site.runtime).program
    modules = [line for line in site.option("setup") if line.split()[:1] in (["module"], ["ml"])]
    expected = (f"modules: {'; '.join(modules)}" if modules
                else "the site setup loads no module")
    message = (f"rayhpc: site {site.name}: {program} is not on PATH after the site setup "
               f"({expected}); fix `setup` in the site file")
    return [
        f"if ! command -v {program} >/dev/null 2>&1; then",
        f"  echo {shlex.quote(message)} | tee \"$RAYHPC_RUN_DIR/{paths.error.name}\" >&2",
        f"  echo 1 > \"$RAYHPC_RUN_DIR/{paths.exit_code.name}\"",
        "  exit 1",
        "fi",
    ]


def render_job_script(spec: LaunchSpec, site: Site) -> str:
    scheduler = SCHEDULERS[site.scheduler]
    job = job_for(spec, site)
    launch = scheduler.launch_command(job, node_command(spec, site),
                                      site.option("launcher_options"))
    paths = RunPaths(spec.run_dir)
    run_dir = shlex.quote(str(paths.dir))
    timer = [] if scheduler.warns_before_walltime else walltime_timer(spec, scheduler,
                                                                      paths.stop.name)
    setup = site.option("setup")
    lines = [
        "#!/bin/bash",
        *scheduler.render_directives(job),
        "",
        f"# Rendered by rayhpc for run {spec.run_id} on site {site.name} ({spec.nodes} nodes).",
        "# Do not edit: `invoke launch` writes it anew; `--dry-run` prints it.",
        "set -u",
        f"export RAYHPC_RUN_DIR={run_dir}",
        *timer,
        *(["# The site's setup (set +u: module scripts may read unset variables).",
           "set +u", *setup, "set -u"] if setup else []),
        *(f"export {key}={shlex.quote(value)}"
          for key, value in job_environment(site, scheduler).items()),
        *(["# Where the head's agent listens (rank 0's host): workers reach it over the "
           "network,",
           "# not by polling the shared file system.",
           f"export {HEAD_HOST_ENV}=\"$({scheduler.head_host})\""]
          if scheduler.head_host else []),
        *runtime_check(site, paths),
        f"cd {shlex.quote(str(spec.shared))}",
        *scheduler.prologue(job),
        "",
        "# One node agent per node, in the container; rank 0 becomes the Ray head.",
        shell_join(launch) + " &",
        "step=$!",
        "# The walltime warning comes here. Tell the agents through the run directory (srun",
        "# would kill its tasks on SIGTERM, not pass it on): they stop the driver and Ray on",
        "# every node and keep the logs.",
        "# (set -C: the stop file is made once, by whoever asks first.)",
        f"trap '(set -C; echo job script: walltime or cancel > "
        f"\"$RAYHPC_RUN_DIR/{paths.stop.name}\") 2>/dev/null' TERM INT",
        'wait "$step"',
        'wait "$step" 2>/dev/null  # a trapped signal ends the first wait early',
        f"code=$(cat \"$RAYHPC_RUN_DIR/{paths.exit_code.name}\" 2>/dev/null || echo 1)",
        'exit "$code"',
    ]
    return "\n".join(lines) + "\n"
