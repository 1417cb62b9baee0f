"""The node's checks before `ray start` (standard library only: it runs in stock
rayproject/ray images). Each check is a pure function of what was read from the node; each
gives one line for the node's log, and a failure names the fix. `run_checks` reads the node
and runs them; the agent calls it before starting Ray and refuses to start on the first
failure (its error names the node).

What a check reads is node-local (/proc, /dev, the temp dir, rlimits): nothing on the shared
file system. The version check needs the head's versions, which the head sends with its
address (one message the workers get anyway).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import platform
import resource
from dataclasses import dataclass

# Ray's troubleshooting guide (ray-project/ray doc/source/ray-observability/monitoring-debugging/
# troubleshoot-failures.rst, "Running out of file descriptors") suggests raising the limit with
# "a command like ulimit -n 65536" and checking the hard limit: an example, not a floor it
# names, so a node below it is warned about, not refused.
OPEN_FILES_SUGGESTED = 65536
# Ray stops writing to a node's local disk (spilling, logs' fallback) once it is this full: its
# `local_fs_capacity_threshold` setting, 0.95 by default (RAY_local_fs_capacity_threshold).
DISK_FULL_FRACTION = 0.95


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    line: str  # what the node's log says
    fix: str = ""  # how to make it pass (failures only)

    def log_line(self) -> str:
        return f"preflight {self.name}: {'ok' if self.ok else 'FAILED'}: {self.line}"

    def error(self, node: str) -> str:
        return f"preflight on {node}: {self.name}: {self.line}; {self.fix}"


def check_open_files(soft: int, hard: int, suggested: int = OPEN_FILES_SUGGESTED) -> Check:
    """The open-files limit after raising the soft one to the hard one (the agent does)."""
    line = f"soft {soft}, hard {hard}"
    if hard != resource.RLIM_INFINITY and hard < suggested:
        line += (f": below the {suggested} Ray's troubleshooting guide suggests; a busy node "
                 "may fail with \"Too many open files\" (ask the site for a higher hard limit, "
                 "`ulimit -Hn`)")
    return Check("open files", True, line)


def check_shm(shm_bytes: int, object_store: int | None, requested: int | None) -> Check:
    """/dev/shm against the object store the node gets: sized down to fit (said once here)."""
    if requested and shm_bytes and requested > shm_bytes:
        return Check("shm", True, f"/dev/shm {size_text(shm_bytes)} is smaller than the "
                     f"object store asked for ({size_text(requested)}): Ray puts the rest in "
                     "/tmp (slow); give a larger shm (--shm-size) or a smaller "
                     "object_store_memory")
    if object_store is None:
        return Check("shm", True, f"/dev/shm {size_text(shm_bytes)}: too small for an object "
                     "store of its own; Ray's default (it may fall back to /tmp, slow)")
    return Check("shm", True, f"/dev/shm {size_text(shm_bytes)}: object store "
                 f"{size_text(object_store)} (80% of it at most)")


def check_disk(path: str, total: int, free: int,
               full_fraction: float = DISK_FULL_FRACTION) -> Check:
    """Free space where Ray writes its session (the temp dir)."""
    line = f"{path}: {size_text(free)} free of {size_text(total)}"
    if total and (total - free) / total >= full_fraction:
        return Check("temp dir space", False, line,
                     f"Ray writes nothing more there once it is {full_fraction:.0%} full: free "
                     "space on the node, or set temp_dir to a node-local file system with room")
    return Check("temp dir space", True, line)


def check_socket_path(temp_dir: str, fits: bool, limit: int) -> Check:
    line = f"{temp_dir} ({len(temp_dir)} bytes; Ray's socket paths under it must fit {limit})"
    if not fits:
        return Check("socket path", False, line, "set temp_dir to a short node-local path, "
                     "e.g. /tmp/ray-$USER")
    return Check("socket path", True, line)


# What shows the GPUs of each kind in a container: NVIDIA's device files (/dev/nvidia0, ...;
# /dev/nvidiactl and /dev/nvidia-uvm are not GPUs), AMD's /dev/kfd with a render node per GPU
# (per GCD on MI250X) under /dev/dri (ROCm), Intel's cards under /dev/dri. An Intel card may
# hold several tiles, and Level Zero shows each tile as a device under
# ZE_FLAT_DEVICE_HIERARCHY=FLAT (ALCF Aurora, docs/aurora/running-jobs-aurora.md: "a total of 6
# GPUs and 12 GPU tiles on the GPUs per Aurora node"; the frameworks module "sets
# ZE_FLAT_DEVICE_HIERARCHY=FLAT, treating each tile as a device"): those devices are what Ray
# counts (through dpctl) and what num_gpus means there, not the cards.
@dataclass(frozen=True)
class GpuDevices:
    """What a node shows of its GPUs."""
    nvidia: int = 0  # /dev/nvidia<N>
    kfd: bool = False  # /dev/kfd: ROCm's kernel driver
    render_nodes: int = 0  # /dev/dri/renderD*
    cards: int = 0  # /dev/dri/card<N>
    level_zero: int | None = None  # Intel's devices as Ray counts them (None: no dpctl)
    hierarchy: str = "FLAT"  # ZE_FLAT_DEVICE_HIERARCHY (Level Zero's default: FLAT)


def count_gpus(kind: str, devices: GpuDevices) -> tuple[int, str]:
    """GPUs of ``kind`` ("" : any) from what the node shows, and how they were counted."""
    intel, how = devices.cards, "cards; no dpctl in the image, so tiles are not counted"
    if devices.level_zero is not None:
        intel = devices.level_zero
        how = (f"Level Zero devices, ZE_FLAT_DEVICE_HIERARCHY={devices.hierarchy}, on "
               f"{devices.cards} cards")
    counts = {"nvidia": (devices.nvidia, ""),
              "amd": (devices.render_nodes if devices.kfd else 0, ""),
              "intel": (intel, how if devices.cards else "")}
    if kind:
        return counts[kind]
    return max(counts.values(), key=lambda count: count[0])


def check_gpus(kind: str, wanted: int | None, found: int, how: str = "") -> Check:
    """GPUs visible in the container against those asked for (``wanted`` None or 0: none)."""
    named = f"{kind} GPUs" if kind else "GPUs"
    visible = f"{found} {named} visible" + (f" ({how})" if how else "")
    if not wanted:
        return Check("gpus", True, f"{visible}, none asked for")
    line = f"{visible}, {wanted} asked for"
    if found < wanted:
        fix = ("check the job's GPU request (the site's gpu and num_gpus), the runtime's "
               "GPU flag (--nv, --rocm) and the image (CUDA or ROCm)")
        if kind == "intel":
            fix = ("num_gpus counts Level Zero devices: tiles under "
                   "ZE_FLAT_DEVICE_HIERARCHY=FLAT, cards under COMPOSITE; set the hierarchy "
                   "in the site's environment or num_gpus to match, and put dpctl in the "
                   "image (Ray counts Intel GPUs through it)")
        return Check("gpus", False, line, fix)
    return Check("gpus", True, line)


def check_versions(node: dict[str, str], head: dict[str, str] | None) -> Check:
    """This node's Ray and Python (major.minor) against the head's (None: this is the head)."""
    mine = f"Ray {node['ray']}, Python {node['python']}"
    if head is None:
        return Check("versions", True, f"{mine} (the head's)")
    theirs = f"Ray {head['ray']}, Python {head['python']}"
    if node["ray"] != head["ray"] or minor(node["python"]) != minor(head["python"]):
        return Check("versions", False, f"{mine} here, {theirs} on the head",
                     "Ray refuses nodes of another version: run one image (or images of the "
                     "same Ray and Python) on every node")
    return Check("versions", True, f"{mine}, as the head")


def minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def size_text(size: int) -> str:
    """GiB with one decimal; MiB below one GiB (a small /dev/shm: 96 MiB, not "0.1 GiB")."""
    if size < 1 << 30:
        return f"{size / (1 << 20):.0f} MiB"
    return f"{size / (1 << 30):.1f} GiB"


# -- reading the node (not pure; each read is node-local)

def node_versions(ray_version: str) -> dict[str, str]:
    return {"ray": ray_version, "python": platform.python_version()}


def visible_gpus(kind: str) -> tuple[int, str]:
    """The node's GPUs of ``kind`` as its device files (and for Intel, Ray) show them."""
    devices = GpuDevices(nvidia=len(glob.glob("/dev/nvidia[0-9]*")),
                         kfd=os.path.exists("/dev/kfd"),
                         render_nodes=len(glob.glob("/dev/dri/renderD*")),
                         cards=len(glob.glob("/dev/dri/card[0-9]*")),
                         level_zero=level_zero_devices() if kind in ("", "intel") else None,
                         hierarchy=os.environ.get("ZE_FLAT_DEVICE_HIERARCHY", "FLAT"))
    return count_gpus(kind, devices)


def level_zero_devices() -> int | None:
    """Intel's GPU devices as Ray counts them (dpctl's level_zero:gpu context; None: no dpctl in
    the image, so Ray counts none)."""
    if importlib.util.find_spec("dpctl") is None:
        return None
    from ray._private.accelerators.intel_gpu import IntelGPUAcceleratorManager

    return IntelGPUAcceleratorManager.get_current_node_num_accelerators()


def disk(path: str) -> tuple[int, int]:
    stat = os.statvfs(path)
    return stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize


@dataclass(frozen=True)
class NodeFacts:
    """What the checks read from the node."""
    open_files: tuple[int, int]  # soft, hard (after the agent raised the soft one)
    shm_bytes: int
    object_store: int | None
    temp_dir: str
    temp_dir_fits: bool
    socket_limit: int
    disk: tuple[int, int]  # total, free
    gpu_kind: str
    gpus_found: int
    gpus_counted: str  # how (e.g. Intel's tiles); "" : by their device files
    versions: dict[str, str]


def run_checks(facts: NodeFacts, requested_store: int | None, gpus_wanted: int | None,
               head_versions: dict[str, str] | None) -> list[Check]:
    """Every check, in order (the agent logs each and stops at the first failure)."""
    return [check_open_files(*facts.open_files),
            check_socket_path(facts.temp_dir, facts.temp_dir_fits, facts.socket_limit),
            check_disk(facts.temp_dir, *facts.disk),
            check_shm(facts.shm_bytes, facts.object_store, requested_store),
            check_gpus(facts.gpu_kind, gpus_wanted, facts.gpus_found, facts.gpus_counted),
            check_versions(facts.versions, head_versions)]


def first_failure(checks: list[Check]) -> Check | None:
    return next((check for check in checks if not check.ok), None)
