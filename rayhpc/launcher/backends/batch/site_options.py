"""The site's options a job script reads, resolved once into a value object (`SiteOptions`),
and what the job exports for every node from them (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rayhpc.common.user_error import UserError
from rayhpc.launcher.contract import RANK_VARS_ENV
from rayhpc.launcher.resolve.config import Site
from rayhpc.launcher.resolve.queues import Queue, queue_is_qos
from rayhpc.launcher.schedulers import SCHEDULERS, Scheduler


@dataclass(frozen=True)
class SiteOptions:
    """A site as its job scripts see it: its scheduler, runtime and the options they read,
    defaults filled in (`Site.option`). Read-only: the renderer takes it, never the `Site`."""
    name: str
    scheduler: Scheduler
    runtime: str  # the container runtime's name (`launcher.runtimes`)
    gpu: str
    requests_gpus: bool  # the scheduler is asked for GPUs (its scheduler_options say how)
    environment: dict[str, Any]
    setup: tuple[str, ...]
    directives: tuple[str, ...]
    scheduler_options: dict[str, Any]
    launcher_options: tuple[str, ...]
    runtime_options: tuple[str, ...]
    shared_nodes: bool
    setup_binds_gpus: bool
    proxy: str
    no_proxy: tuple[str, ...]
    queues: tuple[Queue, ...]

    @classmethod
    def of(cls, site: Site) -> SiteOptions:
        scheduler = SCHEDULERS[site.scheduler]
        scheduler_options = dict(site.option("scheduler_options"))
        return cls(name=site.name, scheduler=scheduler, runtime=site.runtime,
                   gpu=site.option("gpu"),
                   requests_gpus=scheduler.requests_gpus(scheduler_options),
                   environment=dict(site.option("environment")),
                   setup=tuple(site.option("setup")),
                   directives=tuple(site.option("directives")),
                   scheduler_options=scheduler_options,
                   launcher_options=tuple(site.option("launcher_options")),
                   runtime_options=tuple(site.option("runtime_options")),
                   shared_nodes=site.option("shared_nodes"),
                   setup_binds_gpus=site.option("setup_binds_gpus"),
                   proxy=site.option("proxy"), no_proxy=tuple(site.option("no_proxy")),
                   queues=tuple(site.queues))


PROXY_VARS = ("http_proxy", "https_proxy", "ftp_proxy", "HTTP_PROXY", "HTTPS_PROXY")
NO_PROXY_VARS = ("no_proxy", "NO_PROXY")


def queue_options(options: SiteOptions, queue: str | None) -> dict:
    """The site's scheduler_options, and for a queue its table marks as a QOS (Frontier's
    debug), the QOS option instead of the partition."""
    if queue_is_qos(options.queues, queue):
        return {**options.scheduler_options, "queue_option": "qos"}
    return options.scheduler_options


def proxy_environment(options: SiteOptions) -> dict[str, str]:
    """The site's outbound proxy as the variables tools read. The agents add the head's and
    their own address to no_proxy (known only once the nodes are up)."""
    if not options.proxy:
        return {}
    env = dict.fromkeys(PROXY_VARS, options.proxy)
    if options.no_proxy:
        env.update(dict.fromkeys(NO_PROXY_VARS, ",".join(options.no_proxy)))
    return env


def job_environment(options: SiteOptions) -> dict[str, str]:
    """What the job exports for every node: the site's environment, its proxy, and which
    variable holds the launcher's rank (the agent reads it)."""
    rank_vars = options.scheduler.task_rank_vars(options.scheduler_options)
    return {**{key: str(value) for key, value in options.environment.items()},
            **proxy_environment(options), RANK_VARS_ENV: ",".join(rank_vars)}


# Set in the site's environment, Ray leaves the devices to the program (as ALCF's vLLM setup
# does): then no check. Both: since ray-project/ray PR 64440 Ray selects a task's Intel GPU
# with ZE_AFFINITY_MASK (opt-out RAY_EXPERIMENTAL_NOSET_ZE_AFFINITY_MASK), before it with
# ONEAPI_DEVICE_SELECTOR (opt-out RAY_EXPERIMENTAL_NOSET_ONEAPI_DEVICE_SELECTOR, the one ALCF's
# Aurora setup_ray_cluster.sh sets); one alone leaves the other set per task by a Ray that uses
# it, and the program's own device selection is overridden.
NOSET_INTEL = ("RAY_EXPERIMENTAL_NOSET_ZE_AFFINITY_MASK",
               "RAY_EXPERIMENTAL_NOSET_ONEAPI_DEVICE_SELECTOR")


def intel_opt_out(options: SiteOptions) -> bool:
    """Whether the site leaves Intel devices to the program (both opt-outs set); UserError
    when only one is."""
    given = [name for name in NOSET_INTEL if name in options.environment]
    if given and len(given) < len(NOSET_INTEL):
        missing = next(name for name in NOSET_INTEL if name not in given)
        raise UserError(f"site {options.name}: environment: {given[0]} without {missing}: Ray "
                        "selects each task's Intel GPU with ZE_AFFINITY_MASK since ray-project/"
                        "ray PR 64440 and with ONEAPI_DEVICE_SELECTOR before it; to leave the "
                        f"devices to your program set both to '1' (or neither)")
    return bool(given)
