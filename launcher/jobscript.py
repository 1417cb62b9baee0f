"""Render the batch job script of a launch (pure: data in, text out; golden-tested per site).

The script starts one node agent per node through the site's launcher (srun, aprun, mpiexec,
jsrun) inside the site's container runtime, passes the walltime warning (or a SIGTERM sent to
the batch script, e.g. `scancel --batch --signal=TERM`) on to them through the run directory's
`stop` file, and exits with the driver's exit code.
"""

from __future__ import annotations

import shlex

from launcher.agent import RunPaths
from launcher.config import Site
from launcher.runtimes import ExecRequest, runtime
from launcher.schedulers import SCHEDULERS, Job, parse_walltime
from launcher.spec import LaunchSpec


def job_for(spec: LaunchSpec, site: Site) -> Job:
    return Job(name=spec.project, nodes=spec.nodes, walltime_s=parse_walltime(spec.walltime),
               output=str(RunPaths(spec.run_dir).job_output), queue=spec.queue or "",
               account=spec.account or "", stop_grace_s=spec.stop_grace,
               extra=site.option("scheduler_options"))


def node_command(spec: LaunchSpec, site: Site) -> list[str]:
    """The node agent, in the image, through the site's container runtime."""
    request = ExecRequest(image=spec.image, command=RunPaths(spec.run_dir).agent_command(),
                          binds=[str(spec.shared)], workdir=str(spec.shared),
                          gpu=site.option("gpu"))
    return runtime(site.runtime, site.option("runtime_options")).exec_command(request)


def render_job_script(spec: LaunchSpec, site: Site) -> str:
    scheduler = SCHEDULERS[site.scheduler]
    job = job_for(spec, site)
    launch = scheduler.launch_command(job, node_command(spec, site),
                                      site.option("launcher_options"))
    paths = RunPaths(spec.run_dir)
    run_dir = shlex.quote(str(paths.dir))
    lines = [
        "#!/bin/bash",
        *scheduler.directives(job),
        "",
        f"# Rendered by rayhpc for run {spec.run_id} on site {site.name} ({spec.nodes} nodes).",
        "# Do not edit: `invoke launch` writes it anew; `--dry-run` prints it.",
        "set -u",
        *site.option("setup"),
        *(f"export {key}={shlex.quote(str(value))}"
          for key, value in site.option("environment").items()),
        f"export RAYHPC_RUN_DIR={run_dir}",
        f"cd {shlex.quote(str(spec.shared))}",
        "",
        "# One node agent per node, in the container; rank 0 becomes the Ray head.",
        shlex.join(launch) + " &",
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
