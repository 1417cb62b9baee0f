"""A stand-in for Intel's dpctl (SYCL devices from Python) on an emulated GPU node: the two
calls Ray's Intel GPU path makes (ray/_private/accelerators/intel_gpu.py in Ray 2.60:
`SyclContext("level_zero:gpu").device_count` and `SyclDevice("level_zero:gpu:0").name`).

The node's GPU cards are its /dev/dri/card* device files (the emulated node makes those its
site's documentation lists; AMD nodes, with /dev/kfd, have none of Intel's). Level Zero shows
each card as TILES devices when ZE_FLAT_DEVICE_HIERARCHY is FLAT (Intel's default on Data Center
GPU Max; ALCF: "treating each tile as a device"), as one under COMPOSITE, and ZE_AFFINITY_MASK
keeps only the devices it names. Nothing else is emulated."""

from __future__ import annotations

import glob
import os

MODEL = "Intel(R) Data Center GPU Max 1550"
TILES = 2  # per card, Data Center GPU Max 1550 (ALCF Aurora: 6 GPUs, 12 tiles per node)


def _devices() -> list[int]:
    if os.path.exists("/dev/kfd"):
        return []
    cards = len(glob.glob("/dev/dri/card[0-9]*"))
    flat = os.environ.get("ZE_FLAT_DEVICE_HIERARCHY", "FLAT").upper() == "FLAT"
    devices = list(range(cards * (TILES if flat else 1)))
    mask = os.environ.get("ZE_AFFINITY_MASK")
    if mask is not None:
        wanted = {int(word) for word in mask.split(",") if word.strip().isdigit()}
        devices = [device for device in devices if device in wanted]
    return devices


def _level_zero_gpus(filter_string: str) -> list[int]:
    backend, _, kind = filter_string.partition(":")
    if backend not in ("level_zero", "*") or not kind.startswith("gpu"):
        raise ValueError(f"dpctl stand-in: no device for filter {filter_string!r}")
    return _devices()


class SyclContext:
    def __init__(self, filter_string: str = "level_zero:gpu") -> None:
        self.device_count = len(_level_zero_gpus(filter_string))


class SyclDevice:
    def __init__(self, filter_string: str = "level_zero:gpu:0") -> None:
        index = int(filter_string.rsplit(":", 1)[1]) if filter_string.count(":") == 2 else 0
        if index >= len(_level_zero_gpus(filter_string)):
            raise ValueError(f"dpctl stand-in: no device {filter_string!r}")
        self.name = MODEL
