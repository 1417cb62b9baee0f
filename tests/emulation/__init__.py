"""Emulated nodes of the HPC sites (site_nodes.yaml): the test bed's node pools made from the
table's hardware rows, and the stand-ins for what cannot run here (standins/). A GPU node
carries its vendor's management library, through which Ray counts GPUs (not through
variables): NVIDIA's NVML in the node's ld.so cache, which Apptainer's --nv binds in as it
binds the real one; AMD's amdsmi and Intel's dpctl (Python packages a ROCm or oneAPI image
carries) bound by the node's Apptainer into every container's Python (apptainer.conf
`bind path`), so the test image serves as every site's GPU image."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.testbed.harness import CPU_POOL, NodePool

HERE = Path(__file__).resolve().parent
TABLE = HERE / "site_nodes.yaml"
STANDINS = HERE / "standins"
# Which scheduler each site row's launcher belongs to (its submit commands are stood in for
# unless it is Slurm, which is the test bed's own).
SCHEDULER_OF = {"srun": "slurm", "pals": "pbs", "hydra": "pbs", "openmpi": "pbs",
                "pbsdsh": "pbs", "blaunch": "lsf", "jsrun": "lsf", "aprun": "cobalt"}
SUBMIT_COMMANDS = {"pbs": ("qsub", "qstat", "qdel", "qsig"), "cobalt": ("qsub", "qstat", "qdel"),
                   "lsf": ("bsub", "bjobs", "bkill")}
# Test bed hosts per hardware row (two nodes each: every emulated run is a 2-node run).
POOL_HOSTS = {"a100x4": ("nv1", "nv2"), "mi250x": ("amd1", "amd2"),
              "max1550x6": ("xe1", "xe2")}
# The test bed partition of each pool's nodes for the stood-in schedulers' jobs.
POOL_PARTITION = {"none": "debug", "a100x4": "nvidia", "mi250x": "amd", "max1550x6": "intel"}


def load_table(path: Path = TABLE) -> dict:
    return yaml.safe_load(path.read_text())


@dataclass(frozen=True)
class SiteRow:
    name: str
    row: dict

    @property
    def scheduler(self) -> str:
        return SCHEDULER_OF[self.row["launcher"]]

    @property
    def hardware(self) -> str:
        return self.row["hardware"]

    @property
    def partition(self) -> str:
        return POOL_PARTITION[self.hardware]


def site_rows(table: dict) -> list[SiteRow]:
    return [SiteRow(name, row) for name, row in table["sites"].items()]


def node_pools(table: dict, purelib: str = "") -> tuple[NodePool, ...]:
    """The CPU pool and one pool of two nodes per GPU hardware row the sites use, with the
    partitions, features and CPU counts their job scripts name; ``purelib``: the image's
    site-packages, where a node binds its vendor's Python library."""
    rows = site_rows(table)
    fabrics = tuple(dict.fromkeys(
        interface.rstrip("0123456789") for row in rows if row.hardware == "none"
        for interface in row.row["interfaces"] if not interface.startswith("hsn")))
    cpu_partitions = (*CPU_POOL.partitions,
                      *(p for row in rows for p in row.row.get("cpu_partitions", [])))
    pools = [NodePool(hosts=CPU_POOL.hosts, partitions=cpu_partitions, fabrics=fabrics)]
    for hardware, hosts in POOL_HOSTS.items():
        users = [row for row in rows if row.hardware == hardware]
        facts = table["hardware"][hardware]
        slurm_users = [row for row in users if row.scheduler == "slurm"]
        partitions = [POOL_PARTITION[hardware],
                      *(p for row in slurm_users for p in row.row.get("partitions", []))]
        if any(not row.row.get("partitions") for row in slurm_users):
            partitions.append("debug")  # a script naming no partition: the default one
        devices = tuple((path, major, minor) for path, major, minor in facts["device_files"])
        gres_conf = facts.get("gres_conf", "")
        library = facts.get("python_library")
        container_binds = ((str(STANDINS / "python" / library), f"{purelib}/{library}"),) \
            if library and purelib else ()
        pools.append(NodePool(
            hosts=hosts, cpus=max([2, *(row.row.get("cpus", 2) for row in users)]),
            features=",".join(dict.fromkeys(row.row["features"] for row in users
                                            if row.row.get("features"))),
            weight=10, gres=f"gpu:{facts['gpus']}" if gres_conf else "", gres_conf=gres_conf,
            devices=devices, partitions=tuple(dict.fromkeys(partitions)),
            nvml=facts["gpu"] == "nvidia",
            cap_add=("SYS_ADMIN",) if any(row.row.get("fakeroot") for row in users) else (),
            container_binds=container_binds))
    return tuple(pools)


def image_purelib(image: str) -> str:
    """The image's Python site-packages (rayproject/ray: /home/ray/anaconda3/...)."""
    return subprocess.run(
        ["docker", "run", "--rm", image, "python", "-c",
         "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True).stdout.strip()


def build_nvml(out: Path) -> Path:
    """The NVML stand-in as a shared library (the host's C compiler; the node binds it)."""
    library = out / "libnvidia-ml.so.1"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(library),
                    str(STANDINS / "nvml.c")], check=True)
    return library


def submit_shims(bin_dir: Path, scheduler: str) -> Path:
    """The login node's stand-ins of ``scheduler``'s batch commands, in ``bin_dir``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for command in SUBMIT_COMMANDS[scheduler]:
        shim = bin_dir / command
        shim.write_text(f"#!/bin/sh\nexec python3 {STANDINS / 'batch.py'} {TABLE} {scheduler} "
                        f"{command} \"$@\"\n")
        shim.chmod(0o755)
    return bin_dir
