"""A stand-in for AMD's amdsmi Python package (ROCm's management library) on an emulated GPU
node: the few calls Ray's AMD GPU path makes (ray/_private/thirdparty/pyamdsmi/pyamdsmi.py in
Ray 2.60: amdsmi_init, amdsmi_get_processor_handles, amdsmi_get_gpu_id, amdsmi_shut_down).

Like the real library, it finds GPUs only where the ROCm kernel driver shows itself (/dev/kfd)
and counts one GPU per render node (/dev/dri/renderD*: one per GCD on MI250X nodes); the
emulated node makes the device files its site's documentation lists. Every GPU reports the
PCI device id DEVICE_ID. Nothing else is emulated."""

from __future__ import annotations

import enum
import glob
import os

# MI250X (Aldebaran), as Ray's amd_product_dict names it (ray/_private/accelerators/amd_gpu.py).
DEVICE_ID = 0x7408


class AmdSmiLibraryException(Exception):
    pass


class AmdSmiInitFlags(enum.IntFlag):
    INIT_ALL_PROCESSORS = 0xFFFFFFFF
    INIT_AMD_CPUS = 1 << 0
    INIT_AMD_GPUS = 1 << 1


class AmdSmiMemoryType(enum.IntEnum):
    VRAM = 0
    VIS_VRAM = 1
    GTT = 2


_handles: list[int] = []


def amdsmi_init(flags: int = AmdSmiInitFlags.INIT_AMD_GPUS) -> None:
    if not os.path.exists("/dev/kfd"):
        raise AmdSmiLibraryException("AMDSMI_STATUS_DRIVER_NOT_LOADED: no /dev/kfd")
    _handles[:] = range(len(glob.glob("/dev/dri/renderD*")))


def amdsmi_shut_down() -> None:
    _handles.clear()


def amdsmi_get_processor_handles() -> list[int]:
    return list(_handles)


def amdsmi_get_gpu_id(handle: int) -> int:
    if handle not in _handles:
        raise AmdSmiLibraryException("AMDSMI_STATUS_INVAL: unknown handle")
    return DEVICE_ID
