"""Start and stop the Slurm test bed: a controller (the login node) and compute nodes, each a
container of the same image on a network of their own, with a shared directory mounted at the
same path everywhere (as a cluster file system)."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors

HERE = Path(__file__).resolve().parent
RECIPE = str(HERE / "slurm-node.yaml")
COMPUTE_NODES = ("node1", "node2")
# One more, for a head job of one node and a block of two (elastic clusters): the launch tests
# above use the first two.
ALL_NODES = (*COMPUTE_NODES, "node3")
# Where a node's GPU management library stand-in is found (tests/emulation/standins/nvml.c):
# in the node's ld.so cache, as Apptainer's --nv looks for the real one.
NVML_PATH = "/usr/local/lib/libnvidia-ml.so.1"


@dataclass(frozen=True)
class NodePool:
    """Compute nodes of one kind: their slurm.conf node line, their GPUs as gres.conf names
    them, the device files each node shows (path, major, minor) and the partitions they are
    in. The CPU pool (node1-3) is every test bed's; emulated sites add theirs."""
    hosts: tuple[str, ...]
    cpus: int = 2
    features: str = ""
    weight: int = 1  # Slurm takes the lowest weight first: CPU nodes before GPU ones
    gres: str = ""  # e.g. gpu:8
    gres_conf: str = ""  # the gres.conf line's File= and Flags= for these nodes
    devices: tuple[tuple[str, int, int], ...] = ()
    partitions: tuple[str, ...] = ()
    nvml: bool = False  # the NVML stand-in in the node's ld.so cache (NVIDIA nodes)
    fabrics: tuple[str, ...] = ()  # more networks the nodes join (their interface prefixes)
    # Capabilities a site's nodes grant their users' containers: SYS_ADMIN lets newgidmap
    # write a user namespace's group map here, which Apptainer's --fakeroot needs (a site
    # enables it per job, e.g. ALCF's `-l singularity_fakeroot=true`).
    cap_add: tuple[str, ...] = ()
    # Host directories Apptainer binds into every container on these nodes (apptainer.conf
    # `bind path = SRC:DEST`, as a site binds its GPU stack): (source here, destination).
    container_binds: tuple[tuple[str, str], ...] = ()

    def node_line(self) -> str:
        line = (f"NodeName={','.join(self.hosts)} CPUs={self.cpus} RealMemory=1000 "
                f"Weight={self.weight} State=UNKNOWN")
        line += f" Gres={self.gres}" if self.gres else ""
        return line + (f" Features={self.features}" if self.features else "")


CPU_POOL = NodePool(hosts=ALL_NODES, partitions=("debug",))
# Docker names a container's interfaces by its network's prefix: every node's first is hsn0,
# the Slingshot name the HPC sites' profiles give (their `interface`).
FABRIC_PREFIX = "hsn"


def slurm_conf(pools: tuple[NodePool, ...]) -> str:
    """tests/testbed/slurm.conf with the pools' nodes and partitions (debug: the default)."""
    lines = [(HERE / "slurm.conf").read_text().rstrip("\n")]
    if any(pool.gres for pool in pools):
        lines.append("GresTypes=gpu")
    lines += [pool.node_line() for pool in pools]
    partitions: dict[str, list[str]] = {}
    for pool in pools:
        for partition in pool.partitions:
            partitions.setdefault(partition, []).extend(pool.hosts)
    for partition, hosts in partitions.items():
        default = " Default=YES" if partition == "debug" else ""
        lines.append(f"PartitionName={partition} Nodes={','.join(hosts)}{default} "
                     "MaxTime=INFINITE State=UP")
    return "\n".join(lines) + "\n"


def gres_conf(pools: tuple[NodePool, ...]) -> str:
    return "".join(f"NodeName={','.join(pool.hosts)} Name=gpu {pool.gres_conf}\n"
                   for pool in pools if pool.gres_conf)
# What unprivileged Apptainer needs in a container: user namespaces (seccomp), and /proc, /sys
# without masked paths (the API form of `--security-opt systempaths=unconfined`).
SECURITY = ["seccomp=unconfined", "apparmor=unconfined"]


@dataclass
class SlurmTestbed:
    """The test bed; ``shared``: a directory every node mounts at the same path (the
    cluster file system), removed with the test bed."""
    api: docker.APIClient
    image: str
    shared: Path
    repo: Path
    pools: tuple[NodePool, ...] = (CPU_POOL,)
    nvml: Path | None = None  # the built NVML stand-in (pools with nvml=True)
    tools: tuple[Path, ...] = ()  # stand-in commands, in every node's /usr/local/bin
    name: str = field(default_factory=lambda: f"rayhpc-testbed-{secrets.token_hex(3)}")
    containers: dict[str, str] = field(default_factory=dict)
    networks: list[str] = field(default_factory=list)
    apptainer_conf: str = ""

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(host for pool in self.pools for host in pool.hosts)

    def start(self, timeout: float = 90) -> None:
        config = Path(self.shared) / f".{self.name}"
        config.mkdir()
        (config / "slurm.conf").write_text(slurm_conf(self.pools))
        (config / "gres.conf").write_text(gres_conf(self.pools))
        if any(pool.container_binds for pool in self.pools):
            # The node image's own apptainer.conf, to which a pool adds its bind paths.
            self.apptainer_conf = subprocess.run(
                ["docker", "run", "--rm", "--entrypoint", "cat", self.image,
                 "/etc/apptainer/apptainer.conf"], capture_output=True, text=True,
                check=True).stdout
        self.create_network(self.name, FABRIC_PREFIX)
        for pool in (NodePool(hosts=("controller",)), *self.pools):
            for host in pool.hosts:
                self.start_node(host, pool, config)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self.exec("controller", "sinfo", "--noheader", "--format=%n %T").stdout
            if sum("idle" in line for line in states.splitlines()) == len(self.hosts):
                return
            time.sleep(0.5)
        raise RuntimeError(f"test bed nodes never became idle: {states!r}\n"
                           + self.exec("controller", "cat", "/var/log/slurm/slurmctld.log").stdout)

    def create_network(self, name: str, prefix: str) -> None:
        self.api.create_network(name, labels={"org.rayhpc.testbed": self.name},
                                options={"com.docker.network.container_iface_prefix": prefix})
        self.networks.append(name)

    def start_node(self, host: str, pool: NodePool, config: Path) -> None:
        binds = {str(config / "slurm.conf"): {"bind": "/etc/slurm/slurm.conf", "mode": "ro"},
                 str(config / "gres.conf"): {"bind": "/etc/slurm/gres.conf", "mode": "ro"},
                 str(HERE / "entrypoint.sh"): {"bind": "/entrypoint.sh", "mode": "ro"},
                 str(self.shared): {"bind": str(self.shared), "mode": "rw"},
                 str(self.repo): {"bind": str(self.repo), "mode": "ro"}}
        for tool in self.tools:
            binds[str(tool)] = {"bind": f"/usr/local/bin/{tool.name}", "mode": "ro"}
        if pool.container_binds:
            conf = config / f"apptainer-{host}.conf"
            conf.write_text(self.apptainer_conf + "".join(
                f"bind path = /container-binds/{index}:{target}\n"
                for index, (_, target) in enumerate(pool.container_binds)))
            binds[str(conf)] = {"bind": "/etc/apptainer/apptainer.conf", "mode": "ro"}
            for index, (source, _) in enumerate(pool.container_binds):
                binds[source] = {"bind": f"/container-binds/{index}", "mode": "ro"}
        if pool.nvml and self.nvml:
            binds[str(self.nvml)] = {"bind": NVML_PATH, "mode": "ro"}
        host_config = self.api.create_host_config(
            binds=binds, init=True, shm_size="2g", security_opt=SECURITY,
            devices=["/dev/fuse:/dev/fuse:rwm"], network_mode=self.name,
            cap_add=list(pool.cap_add) or None)
        host_config.update(MaskedPaths=[], ReadonlyPaths=[])
        devices = " ".join(f"{path}:{major}:{minor}" for path, major, minor in pool.devices)
        container = self.api.create_container(
            self.image, command=["/entrypoint.sh", host], hostname=host, user="root",
            name=f"{self.name}-{host}", host_config=host_config,
            environment={"PYTHONDONTWRITEBYTECODE": "1", "TESTBED_DEVICES": devices},
            labels={"org.rayhpc.testbed": self.name},
            networking_config=self.api.create_networking_config(
                {self.name: self.api.create_endpoint_config(aliases=[host])}))
        for prefix in pool.fabrics:
            # A second fabric: its interface is <prefix>0 (Docker counts per prefix). Host
            # names resolve on the first network only, as one name has one address.
            network = f"{self.name}-{prefix}"
            if network not in self.networks:
                self.create_network(network, prefix)
            self.api.connect_container_to_network(container["Id"], network)
        self.api.start(container)
        self.containers[host] = container["Id"]

    def exec(self, host: str, *cmd: str, user: str = "root", workdir: str | None = None,
             timeout: float = 600) -> subprocess.CompletedProcess:
        args = ["docker", "exec", "-u", user] + (["-w", workdir] if workdir else [])
        return subprocess.run([*args, f"{self.name}-{host}", *cmd], capture_output=True,
                              text=True, timeout=timeout)

    @contextlib.contextmanager
    def running(self):
        """The test bed up for the block's length; stopped, and its shared dir removed, after."""
        try:
            self.start()
            yield self
        finally:
            self.stop()
            subprocess.run(["rm", "-rf", str(self.shared)], check=False)

    def stop(self) -> None:
        for container in self.containers.values():
            with contextlib.suppress(docker.errors.APIError):
                self.api.remove_container(container, force=True)
        for network in self.networks:
            with contextlib.suppress(docker.errors.APIError):
                self.api.remove_network(network)
