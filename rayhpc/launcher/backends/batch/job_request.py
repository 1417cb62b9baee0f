"""What a batch job asks its scheduler for (`Job`: nodes, walltime, queue, GPUs, node groups)
and the node agent's command line on each node, for a launch's first job and a grown block's
(pure: from the spec and the site's resolved options)."""

from __future__ import annotations

from rayhpc.launcher.backends.batch.site_options import (
    SiteOptions,
    job_environment,
    queue_options,
)
from rayhpc.launcher.contract import (
    HEAD_HOST_ENV,
    Block,
    LaunchSpec,
    NodeGroup,
    RunPaths,
    fabric_environment,
)
from rayhpc.launcher.resolve.gpus import NodeGpus, node_gpus
from rayhpc.launcher.runtimes import ExecRequest, runtime
from rayhpc.launcher.schedulers import Job
from rayhpc.launcher.schedulers.scheduler_interface import JobGroup


def job_for(spec: LaunchSpec, options: SiteOptions, block: Block | None = None) -> Job:
    """The launch's job (every node, in groups if it has them); with ``block``: the block's."""
    if block is not None:
        return block_job(spec, options, block)
    # The file systems the job touches: the shared dir (run dir, driver) and the SIF images.
    images = [group.image for group in spec.groups] or [spec.image]
    paths = (str(spec.shared),
             *dict.fromkeys(image for image in images if image.startswith("/")))
    groups = tuple(job_group(spec, options, group) for group in spec.groups)
    gpus = gpus_of(spec, options)
    return Job(name=spec.project, nodes=spec.nodes, walltime_s=spec.walltime_s,
               output=str(RunPaths(spec.run_dir).job_output), queue=spec.queue or "",
               account=spec.account or "", stop_grace_s=spec.stop_grace,
               extra=queue_options(options, spec.queue), gpu=gpus.kind,
               exclusive=not options.shared_nodes, paths=paths,
               directives=options.directives, groups=groups,
               gpus=gpus.request, exports=node_exports(spec, options),
               restarts=spec.restarts)


def block_job(spec: LaunchSpec, options: SiteOptions, block: Block) -> Job:
    """A grown block's job: worker nodes of one kind (its group's, if any), its own walltime,
    queue and output file; the run's account unless the block has its own."""
    group = spec.group(block.group) if block.group else None
    paths = (str(spec.shared), *([block.image] if block.image.startswith("/") else []))
    gpus = gpus_of(spec, options, group)
    extra = {**queue_options(options, block.queue),
             **(group.scheduler_options if group else {})}
    return Job(name=f"{spec.project}-{block.name}", nodes=block.nodes,
               walltime_s=block.walltime_s,
               output=str(RunPaths(spec.run_dir).block_file(block.name, "out")),
               queue=block.queue, account=spec.account or "", stop_grace_s=spec.stop_grace,
               extra=extra, gpu=gpus.kind, exclusive=not options.shared_nodes,
               paths=paths, directives=options.directives, gpus=gpus.request,
               exports=(*node_exports(spec, options),
                        *([] if options.scheduler.head_host else [HEAD_HOST_ENV])))


def block_command(spec: LaunchSpec, options: SiteOptions, block: Block) -> list[str]:
    """A block's node agent: a worker of the block (its group's, if any), from the block's
    own node program (the run's spec with the block's group in it)."""
    paths = RunPaths(spec.run_dir)
    group = spec.group(block.group) if block.group else None
    args = ["--role", "worker", "--block", block.name,
            *(["--group", block.group] if block.group else [])]
    return node_command(spec, options, group,
                        paths.agent_command(*args, program=paths.block_file(block.name, "pyz")),
                        always_head_host=True)


def job_group(spec: LaunchSpec, options: SiteOptions, group: NodeGroup) -> JobGroup:
    """One node group as the scheduler sees it: its nodes, queue, scheduler options (the
    site's, then the group's) and its agent command (in its image, with its GPUs)."""
    gpus = gpus_of(spec, options, group)
    return JobGroup(name=group.name, nodes=group.nodes,
                    command=node_command(spec, options, group),
                    queue=group.queue or spec.queue or "",
                    extra={**queue_options(options, group.queue or spec.queue),
                           **group.scheduler_options},
                    gpu=gpus.kind, gpus=gpus.request)


def gpus_of(spec: LaunchSpec, options: SiteOptions, group: NodeGroup | None = None) -> NodeGpus:
    """The GPUs a node (of ``group``) asks the scheduler for and passes into its container:
    one count per node drives both (see `launcher.resolve.gpus`)."""
    if group is None:
        return node_gpus(options.gpu, spec.num_gpus, options.requests_gpus)
    return node_gpus(group.gpu, group.num_gpus, options.requests_gpus)


def node_exports(spec: LaunchSpec, options: SiteOptions) -> tuple[str, ...]:
    """What the job script exports for the agents (and PATH, which the site's setup may have
    changed): launchers that start tasks without the script's environment pass these."""
    return ("PATH", "RAYHPC_RUN_DIR", *job_environment(options),
            *fabric_environment(spec.interface, options.environment),
            *([HEAD_HOST_ENV] if options.scheduler.head_host else []))


def node_command(spec: LaunchSpec, options: SiteOptions, group: NodeGroup | None = None,
                 agent: list[str] | None = None, always_head_host: bool = False) -> list[str]:
    """The node agent, in the image, through the site's container runtime. In a group: the
    group's image, GPUs and runtime options (after the site's), the agent told its group and,
    outside the head's group, that it is a worker (each group's launcher may count its ranks
    from 0: PBS runs one mpiexec per group). ``agent``: another agent command line (a
    block's); ``always_head_host``: the head's host is passed in (a block's job knows it)."""
    scheduler = options.scheduler
    args = []
    if group is not None:
        args = ["--group", group.name, *([] if group.head else ["--role", "worker"])]
    request = ExecRequest(image=group.image if group else spec.image,
                          command=agent or RunPaths(spec.run_dir).agent_command(*args),
                          binds=[str(spec.shared)], workdir=str(spec.shared),
                          gpu="" if options.setup_binds_gpus
                          else gpus_of(spec, options, group).kind,
                          pass_env=[*scheduler.env_passthrough,
                                    *job_environment(options),
                                    *fabric_environment(spec.interface, options.environment),
                                    *([HEAD_HOST_ENV] if scheduler.head_host
                                      or always_head_host else [])])
    runtime_options = [*options.runtime_options, *(group.runtime_options if group else [])]
    return runtime(options.runtime, runtime_options).exec_command(request)
