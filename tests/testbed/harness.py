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
# What unprivileged Apptainer needs in a container: user namespaces (seccomp), and /proc, /sys
# without masked paths (the API form of `--security-opt systempaths=unconfined`).
SECURITY = ["seccomp=unconfined", "apparmor=unconfined"]


@dataclass
class SlurmTestbed:
    api: docker.APIClient
    image: str
    shared: Path
    repo: Path
    name: str = field(default_factory=lambda: f"rayhpc-testbed-{secrets.token_hex(3)}")
    containers: dict[str, str] = field(default_factory=dict)

    def start(self, timeout: float = 90) -> None:
        self.api.create_network(self.name, labels={"org.rayhpc.testbed": self.name})
        for host in ("controller", *ALL_NODES):
            binds = {str(HERE / "slurm.conf"): {"bind": "/etc/slurm/slurm.conf", "mode": "ro"},
                     str(HERE / "entrypoint.sh"): {"bind": "/entrypoint.sh", "mode": "ro"},
                     str(self.shared): {"bind": str(self.shared), "mode": "rw"},
                     str(self.repo): {"bind": str(self.repo), "mode": "ro"}}
            host_config = self.api.create_host_config(
                binds=binds, init=True, shm_size="2g", security_opt=SECURITY,
                devices=["/dev/fuse:/dev/fuse:rwm"], network_mode=self.name)
            host_config.update(MaskedPaths=[], ReadonlyPaths=[])
            container = self.api.create_container(
                self.image, command=["/entrypoint.sh", host], hostname=host, user="root",
                name=f"{self.name}-{host}", host_config=host_config,
                environment={"PYTHONDONTWRITEBYTECODE": "1"},
                labels={"org.rayhpc.testbed": self.name},
                networking_config=self.api.create_networking_config(
                    {self.name: self.api.create_endpoint_config(aliases=[host])}))
            self.api.start(container)
            self.containers[host] = container["Id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self.exec("controller", "sinfo", "--noheader", "--format=%n %T").stdout
            if sum("idle" in line for line in states.splitlines()) == len(ALL_NODES):
                return
            time.sleep(0.5)
        raise RuntimeError(f"test bed nodes never became idle: {states!r}\n"
                           + self.exec("controller", "cat", "/var/log/slurm/slurmctld.log").stdout)

    def exec(self, host: str, *cmd: str, user: str = "root", workdir: str | None = None,
             timeout: float = 600) -> subprocess.CompletedProcess:
        args = ["docker", "exec", "-u", user] + (["-w", workdir] if workdir else [])
        return subprocess.run([*args, f"{self.name}-{host}", *cmd], capture_output=True,
                              text=True, timeout=timeout)

    def stop(self) -> None:
        for container in self.containers.values():
            with contextlib.suppress(docker.errors.APIError):
                self.api.remove_container(container, force=True)
        with contextlib.suppress(docker.errors.APIError):
            self.api.remove_network(self.name)
