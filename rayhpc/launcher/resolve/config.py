"""Site profiles and config layering: CLI flags > RAYHPC_* environment > site file > defaults."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayhpc.common.user_error import UserError
from rayhpc.common.yaml_files import check_keys, find_yaml, read_yaml, yaml_names
from rayhpc.containers.platforms import DEFAULT_PLATFORM, check_platform
from rayhpc.launcher import SITES_DIR
from rayhpc.launcher.contract import NodeGroup
from rayhpc.launcher.resolve.fabric_interface import check_interface
from rayhpc.launcher.resolve.groups import GPUS, parse_groups
from rayhpc.launcher.resolve.queues import Queue, parse_queues
from rayhpc.launcher.resolve.values import (
    check_env_names,
    check_one_line,
    non_negative_int,
    one_line,
    positive_int,
)
from rayhpc.launcher.runtimes import RUNTIMES
from rayhpc.launcher.schedulers import batch_scheduler, qos_titles
from rayhpc.launcher.times import WALLTIME_FORMS, parse_walltime

ENV_PREFIX = "RAYHPC_"
TYPE_WORDS = {int: "a whole number", str: "a string", dict: "a mapping", list: "a list",
              bool: "true or false"}
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SIZE_RE = re.compile(r"^\d+(\.\d+)?\s*([kmgt]i?b?|b)?$", re.I)


def _bytes(value: Any) -> int:
    """A size like 64m or 1g as bytes."""
    text = _size(value).lower().rstrip("b").rstrip("i")
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(float(text))


def size_bytes(text: str) -> int:
    """A size setting's value (512m, 2g) as bytes."""
    return _bytes(text)


def _size(value: Any) -> str:
    text = str(value).strip()
    if not _SIZE_RE.match(text):
        raise ValueError("must be a size like 512m or 2g")
    if not float(re.match(r"[\d.]+", text).group()):
        raise ValueError("must be more than 0")
    return text


def _interface(value: Any) -> str:
    return check_interface(_text(value))


def _command(value: Any) -> str:
    if not isinstance(value, (str, int, float)):
        raise ValueError(f"must be one string, not a {type(value).__name__}")
    text = str(value)
    if not text.strip():
        raise ValueError("must not be empty")
    return text


def _flag(value: Any) -> bool:
    """true/false (YAML), or a flag's or variable's word for it."""
    if isinstance(value, bool):
        return value
    words = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
    if str(value).strip().lower() not in words:
        raise ValueError("must be true or false")
    return words[str(value).strip().lower()]


SERVE_BINDS = ("loopback", "network")
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_SERVE_APP_RE = re.compile(rf"^{_IDENTIFIER}(\.{_IDENTIFIER})*:{_IDENTIFIER}$")


def _serve_app(value: Any) -> str:
    """A Ray Serve application as `serve run` names one: MODULE:NAME (an import path)."""
    text = str(value).strip()
    if not _SERVE_APP_RE.match(text):
        raise ValueError("must be an import path MODULE:NAME, e.g. examples.serve_echo:app "
                         "(the module in the shared dir or the image, NAME its application)")
    return text


def _port(value: Any) -> int:
    """A TCP port a non-root process may listen on (the containers never run as root)."""
    port = positive_int(value)
    if not 1024 <= port <= 65535:
        raise ValueError("must be a port from 1024 to 65535 (the nodes' processes are not root)")
    return port


def _serve_bind(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in SERVE_BINDS:
        raise ValueError(f"must be one of: {', '.join(SERVE_BINDS)}")
    return text


def _text(value: Any) -> str:
    """A setting that may reach a job script's lines (a path, queue, account): one line."""
    return one_line(_command(value))


@dataclass(frozen=True)
class Setting:
    parse: Callable[[Any], Any]
    default: Any
    help: str


# Every setting with its help text (also the help of `rayhpc launch`'s flags).
SETTINGS: dict[str, Setting] = {
    "nodes": Setting(positive_int, None, "nodes in all, head included (default: the "
                     "allocation's inside one, else 3)"),
    "shared": Setting(_text, "./shared", "directory mounted on every node; the run dir goes in "
                      "<shared>/runs/ (default: ./shared)"),
    "driver": Setting(_command, None, "command run on the head in the shared dir; {address} "
                      "becomes the head's ip:port and RAY_ADDRESS is set (default: none, an "
                      "interactive cluster that stays up; see --interactive)"),
    "image": Setting(_text, None, "container image: a tag on the local site (default: the ray "
                     "recipe's cpu image, built on first use), a SIF path for Apptainer sites"),
    "join_timeout": Setting(positive_int, 180, "seconds to wait for every node to join "
                            "(default: 180)"),
    "stop_timeout": Setting(positive_int, 30, "seconds to wait for nodes to stop"),
    "shm_size": Setting(_size, "2g", "shared memory per node, bounds Ray's object store "
                        "(default: 2g)"),
    "object_store_memory": Setting(positive_int, None, "object store bytes per node"),
    "dashboard_host": Setting(_text, None, "address Ray's dashboard binds to (default: the "
                              "head's cluster address; token-protected)"),
    "interface": Setting(_interface, None, "network interface whose address Ray uses (and "
                         "NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME, unless set)"),
    "temp_dir": Setting(_text, None, "node-local Ray temp dir (short: AF_UNIX limit)"),
    "num_cpus": Setting(positive_int, None, "CPUs Ray may use per node (default: the CPUs "
                        "the node agent may run on)"),
    "num_gpus": Setting(non_negative_int, None, "GPUs per node: Ray's count and, on sites "
                        "that ask their scheduler for GPUs, the request (default: none asked; "
                        "Ray counts what it finds; 0: a CPU launch)"),
    "walltime": Setting(parse_walltime, 1800, f"batch job time limit in Slurm's forms and "
                        f"meaning: {WALLTIME_FORMS} (30:00 is 30 minutes; default: 00:30:00)"),
    "queue": Setting(_text, None, "batch queue, partition or QOS (default: the site's queue "
                     "table picks one by node count, else the scheduler's default)"),
    "account": Setting(_text, None, "project to charge (HPC sites)"),
    "stop_grace": Setting(positive_int, 60, "seconds before the walltime to stop cleanly"),
    "restarts": Setting(non_negative_int, 0, "times the run starts again, same run id, when "
                        "its allocation ends before its driver (walltime, preemption, a node "
                        "lost); the driver gets RAYHPC_ATTEMPT and RAYHPC_RESUME=1 (default: 0)"),
    "restart_on_failure": Setting(_flag, False, "with --restarts: start again when the "
                                  "driver exits non-zero too (default: a failed driver ends "
                                  "the run)"),
    "checkpoint_dir": Setting(_text, None, "where the driver keeps checkpoints "
                              "(RAYHPC_CHECKPOINT_DIR), inside the shared dir (default: "
                              "<shared>/checkpoints/<run id>)"),
    "serve": Setting(_serve_app, "", "a Ray Serve application MODULE:NAME deployed on the "
                     "head once the cluster is up (the module in the shared dir or the image); "
                     "an interactive cluster with an HTTP endpoint (see docs/serving.md)"),
    "serve_port": Setting(_port, None, "the endpoint's HTTP port on the head: Ray Serve's with "
                          "--serve (default: 8000), or a driver's own HTTP service (e.g. "
                          "vLLM's server), which rayhpc then probes and tunnels"),
    "serve_bind": Setting(_serve_bind, "loopback", "where the endpoint listens on the head: "
                          "loopback (reached through an SSH tunnel to the head node; on the "
                          "local site, this host's 127.0.0.1) or network (the head's cluster "
                          "address: the login node reaches it) (default: loopback)"),
    "head_cpus": Setting(non_negative_int, None, "CPUs Ray may use on the head (default: as "
                         "on the workers; 0 keeps tasks off the head, for large clusters)"),
    "log_cap": Setting(_bytes, 64 << 20, "most log bytes kept per node, e.g. 64m (Ray's "
                       "daemons' logs first; worker process logs only from the head and "
                       "failed nodes)"),
}
# Site-file-only keys: how the machine works, not per-launch choices.
SITE_OPTIONS: dict[str, type] = {
    "gpu": str,                 # nvidia, amd, intel or none: the nodes' GPUs (see launcher.gpus)
    "runtime_options": list,    # extra flags of the container runtime
    "launcher_options": list,   # extra flags of srun / aprun / mpiexec / jsrun
    "scheduler_options": dict,  # the scheduler's own keys (each scheduler module lists them)
    "directives": list,         # raw scheduler directive lines, passed through
    "setup": list,              # shell lines run first in the job (module loads, ulimit)
    "environment": dict,        # exported in the job, seen by every node
    "queues": dict,             # queue table: name -> limits, auto, qos, routes (queues.py)
    "queues_source": str,       # where the queue table comes from (page, section, commit)
    "queues_read": str,         # the day the table was read against it (YYYY-MM-DD)
    "requires_account": bool,   # the site refuses jobs without a project (--account)
    "shared_nodes": bool,       # nodes may be shared with other jobs: ask for no exclusivity
    "setup_binds_gpus": bool,   # the setup's modules bind the GPU stack: no --nv/--rocm flag
    "proxy": str,               # outbound proxy of the compute nodes (http_proxy, https_proxy)
    "no_proxy": list,           # hosts reached without the proxy (the head's address is added)
    "groups": dict,             # node groups: name -> nodes, image, gpu, resources, ... (groups.py)
    "platform": str,            # the nodes' platform, linux/amd64 (default) or linux/arm64
}
# Site options never written into a job script (`groups` are checked by `parse_group`): the
# others' texts must be one line each.
PROSE_OPTIONS = ("queues_source", "groups")
SITE_KEYS = ("name", "description", "docs", "scheduler", "runtime", *SETTINGS, *SITE_OPTIONS)


@dataclass(frozen=True)
class Site:
    name: str
    path: Path
    scheduler: str
    runtime: str
    description: str
    settings: dict[str, Any]
    options: dict[str, Any]
    docs: tuple[str, ...] = ()  # the documentation the profile follows (URLs, repo paths)
    queues: tuple[Queue, ...] = ()
    groups: tuple[NodeGroup, ...] = ()

    def option(self, key: str) -> Any:
        return self.options.get(key, SITE_OPTIONS[key]())

    @property
    def platform(self) -> str:
        """The platform of the site's nodes: what images it runs must be built for."""
        return self.options.get("platform") or DEFAULT_PLATFORM

    @property
    def platform_source(self) -> str:
        """What says the nodes' platform, for messages: the site file's key, or its default."""
        said = "" if "platform" in self.options else f" (not set: {DEFAULT_PLATFORM})"
        return f"{self.path}: platform{said}"

    @property
    def queue_source(self) -> str:
        """Where the queue table comes from and when it was read ("" : not said)."""
        source, read = self.option("queues_source"), self.option("queues_read")
        return ", ".join(part for part in (source, f"read {read}" if read else "") if part)


def load_site(name_or_path: str, sites_dir: Path = SITES_DIR) -> Site:
    """A site profile by name (launcher/sites/<name>.yaml) or by the path of a YAML file."""
    path = find_yaml(name_or_path, sites_dir, "site", "--site")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: a site file is a YAML mapping (keys: {', '.join(SITE_KEYS)})")
    check_keys(data, SITE_KEYS, path, "")
    for key in ("scheduler", "runtime"):
        if not isinstance(data.get(key), str):
            raise UserError(f"{path}: {key}: required (a name, see `rayhpc sites`)")
    if data["runtime"] not in RUNTIMES:
        raise UserError(f"{path}: runtime: {data['runtime']!r} is not supported; one of: "
                        f"{', '.join(RUNTIMES)}")
    settings = {}
    for key, setting in SETTINGS.items():
        if data.get(key) is not None:
            settings[key] = _parse(setting, data[key], f"{path}: {key}")
    options = {}
    for key, kind in SITE_OPTIONS.items():
        if data.get(key) is None:
            continue
        if not isinstance(data[key], kind):
            raise UserError(f"{path}: {key}: must be a {kind.__name__}")
        if key not in PROSE_OPTIONS:
            check_one_line(data[key], f"{path}: {key}")
        options[key] = data[key]
    check_env_names(options.get("environment", {}), f"{path}: environment")
    if "platform" in options:
        options["platform"] = check_platform(options["platform"], f"{path}: platform")
    if options.get("gpu") == "none":  # said explicitly: the nodes have no GPUs
        options["gpu"] = ""
    _check_gpu(options.get("gpu", ""), data["runtime"], f"{path}: ")
    problem = RUNTIMES[data["runtime"]].scheduler_problem(data["scheduler"])
    if problem:
        raise UserError(f"{path}: runtime: {problem}")
    if batch_scheduler(data["scheduler"]):  # other sites take none: their backend says so
        _check_scheduler_options(options.get("scheduler_options", {}), data["scheduler"],
                                 f"{path}: ")
    docs = data.get("docs") or []
    if isinstance(docs, str):
        docs = [docs]
    if not isinstance(docs, list) or not all(isinstance(d, str) for d in docs):
        raise UserError(f"{path}: docs: must be a list of URLs or repository paths")
    queues = parse_queues(options["queues"], path) if "queues" in options else []
    scheduler = batch_scheduler(data["scheduler"])
    if not (scheduler and scheduler.has_qos) and any(queue.qos for queue in queues):
        raise UserError(f"{path}: queues: qos: only {qos_titles()} has QOS queues; remove `qos`")
    if "queues_read" in options and not _DATE_RE.match(options["queues_read"]):
        raise UserError(f"{path}: queues_read: {options['queues_read']!r}: must be the day "
                        "the queue table was read, as YYYY-MM-DD (quoted)")
    name = str(data.get("name") or path.stem)
    check_one_line(name, f"{path}: name")  # the job script names its site
    site = Site(name=name, path=path,
                scheduler=data["scheduler"], runtime=data["runtime"],
                description=str(data.get("description") or ""), settings=settings,
                options=options, docs=tuple(docs), queues=tuple(queues))
    if "groups" not in options:
        return site
    groups = parse_groups(options.pop("groups"), f"{path}: groups")
    check_groups(groups, site, f"{path}: groups")
    return dataclasses.replace(site, groups=groups)


def check_groups(groups: tuple[NodeGroup, ...], site: Site, where: str) -> None:
    """What the site can do with node groups: its scheduler must express them, its runtime
    pass each group's GPUs, its scheduler know each group's scheduler_options."""
    scheduler = batch_scheduler(site.scheduler)
    problem = scheduler.groups_problem(site.option("scheduler_options")) if scheduler else ""
    if problem:
        raise UserError(f"{where}: site {site.name} runs {site.scheduler}, which cannot run "
                        f"node groups: {problem}")
    for group in groups:
        at = f"{where}: {group.name}"
        if group.gpu:
            _check_gpu(group.gpu, site.runtime, f"{at}: ")
            if site.option("gpu") and group.gpu != site.option("gpu"):
                raise UserError(f"{at}: gpu: {group.gpu}: site {site.name} has "
                                f"{site.option('gpu')} GPUs (its `gpu`), not {group.gpu}")
        if group.scheduler_options:
            if scheduler is None:
                raise UserError(f"{at}: scheduler_options: the {site.scheduler} site has no "
                                "scheduler; remove them")
            _check_scheduler_options(group.scheduler_options, site.scheduler, f"{at}: ")
        if group.queue and scheduler is None:
            raise UserError(f"{at}: queue: the {site.scheduler} site has no queues; remove it")


def _check_gpu(gpu: str, runtime_name: str, where: str) -> None:
    if not gpu:
        return
    if gpu not in GPUS:
        raise UserError(f"{where}gpu: {gpu!r} is not one of: {', '.join(GPUS)}")
    passes = RUNTIMES[runtime_name].gpus
    if gpu not in passes:
        raise UserError(f"{where}gpu: {gpu!r}: runtime {runtime_name} cannot pass {gpu} GPUs "
                        f"into its containers (it passes: {', '.join(passes) or 'none'}); "
                        "use a runtime that can (apptainer passes nvidia, amd and intel)")


def _check_scheduler_options(options: dict, scheduler_name: str, where: str) -> None:
    """Each scheduler's own keys only (a typo gets the closest valid key), of their types."""
    scheduler = batch_scheduler(scheduler_name)
    known = scheduler.options if scheduler else {}
    check_keys(options, tuple(known), where.rstrip(": "), "scheduler_options: ")
    for key, value in options.items():
        if not isinstance(value, known[key]) or (isinstance(value, bool)
                                                  and bool not in known[key]):
            kinds = " or ".join(TYPE_WORDS[kind] for kind in known[key])
            raise UserError(f"{where}scheduler_options: {key}: must be {kinds}")
    problem = scheduler.option_problem(options) if scheduler else ""
    if problem:
        raise UserError(f"{where}scheduler_options: {problem}")


def list_sites(sites_dir: Path = SITES_DIR) -> list[Site]:
    return [load_site(str(sites_dir / f"{name}.yaml")) for name in yaml_names(sites_dir)]


def resolve_settings(site: Site, cli: Mapping[str, Any],
                     environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Every setting from the first layer that has it: CLI, environment, site file, default."""
    values = {}
    for key, setting in SETTINGS.items():
        env_var = ENV_PREFIX + key.upper()
        if cli.get(key) is not None:
            values[key] = _parse(setting, cli[key], f"--{key.replace('_', '-')}")
        elif environ.get(env_var):
            values[key] = _parse(setting, environ[env_var], f"${env_var}")
        elif key in site.settings:
            values[key] = site.settings[key]
        else:
            values[key] = setting.default
    return values


def run_flags(run_id: str, shared: Path, environ: Mapping[str, str] = os.environ) -> str:
    """`--run ID` as the commands rayhpc suggests write it: with `--shared DIR` where the run's
    shared directory is not the one a command given neither --site nor --shared looks in
    ($RAYHPC_SHARED, else the local site's, else ./shared here)."""
    default = (environ.get(ENV_PREFIX + "SHARED") or load_site("local").settings.get("shared")
               or SETTINGS["shared"].default)
    if Path(default).expanduser().resolve() == Path(shared).expanduser().resolve():
        return f"--run {run_id}"
    return f"--run {run_id} --shared {shlex.quote(str(shared))}"


def _parse(setting: Setting, value: Any, where: str) -> Any:
    try:
        return setting.parse(value)
    except (ValueError, TypeError) as exc:
        message = str(exc) if "must" in str(exc) else "not a valid value"
        raise UserError(f"{where}: {value!r}: {message}") from None
