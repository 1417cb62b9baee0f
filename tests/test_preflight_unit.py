"""The node's preflight before `ray start` (launcher/node/preflight.py): each check as a pure
function of what the node shows, the order and the first failure, and what runs on this
machine for real (its /dev, /dev/shm, rlimits, temp dir)."""

from __future__ import annotations

import resource

import pytest

from rayhpc.launcher.node import preflight
from rayhpc.launcher.node.preflight import (
    GpuDevices,
    NodeFacts,
    check_disk,
    check_gpus,
    check_open_files,
    check_shm,
    check_socket_path,
    check_versions,
    count_gpus,
    first_failure,
    run_checks,
)

GIB = 1 << 30


def test_open_files_below_rays_suggestion_are_warned_about_not_refused():
    assert check_open_files(1048576, 1048576).line == "soft 1048576, hard 1048576"
    assert check_open_files(resource.RLIM_INFINITY, resource.RLIM_INFINITY).ok
    low = check_open_files(4096, 4096)
    assert low.ok and low.line.startswith("soft 4096, hard 4096: below the 65536 Ray's "
                                          "troubleshooting guide suggests")


def test_shm_says_once_what_the_object_store_gets():
    assert check_shm(2 * GIB, int(1.6 * GIB), None).line == \
        "/dev/shm 2.0 GiB: object store 1.6 GiB (80% of it at most)"
    small = check_shm(96 << 20, None, None)
    assert small.ok and small.line == ("/dev/shm 96 MiB: too small for an object store of its "
                                       "own; Ray's default (it may fall back to /tmp, slow)")
    assert check_shm(128 << 20, 107374182, None).line == \
        "/dev/shm 128 MiB: object store 102 MiB (80% of it at most)"
    asked = check_shm(GIB, 4 * GIB, 4 * GIB)
    assert asked.ok and "smaller than the object store asked for (4.0 GiB)" in asked.line


def test_temp_dir_space_refused_where_ray_would_stop_writing():
    assert check_disk("/tmp/rh", 100 * GIB, 50 * GIB).ok
    full = check_disk("/tmp/rh", 100 * GIB, 4 * GIB)
    assert not full.ok and full.line == "/tmp/rh: 4.0 GiB free of 100.0 GiB"
    assert "95% full" in full.fix


def test_socket_path():
    assert check_socket_path("/tmp/rh-abcd123", True, 107).ok
    long = check_socket_path("/" + "x" * 80, False, 107)
    assert not long.ok and "e.g. /tmp/ray-$USER" in long.fix


# What each site's nodes show (device files), from its documentation (the sources are in
# tests/emulation/site_nodes.yaml, whose emulated nodes run these counts for real): Polaris 4
# A100 (/dev/nvidia0-3); Frontier 4 MI250X = 8 GCDs (/dev/kfd, a render node per GCD); Aurora 6
# cards of 2 tiles ("6 GPUs and 12 GPU tiles", card0-card5), 12 devices for Level Zero under
# ZE_FLAT_DEVICE_HIERARCHY=FLAT, 6 under COMPOSITE.
POLARIS = GpuDevices(nvidia=4)
FRONTIER = GpuDevices(kfd=True, render_nodes=8, cards=8)
AURORA = GpuDevices(render_nodes=6, cards=6, level_zero=12)


@pytest.mark.parametrize("kind, devices, count", [
    ("nvidia", POLARIS, 4), ("amd", FRONTIER, 8), ("amd", GpuDevices(render_nodes=8), 0),
    ("intel", AURORA, 12), ("intel", GpuDevices(render_nodes=6, cards=6, level_zero=6,
                                                hierarchy="COMPOSITE"), 6),
    ("intel", GpuDevices(render_nodes=6, cards=6), 6), ("", POLARIS, 4), ("", AURORA, 12),
    ("", GpuDevices(), 0)])
def test_gpus_counted_as_each_kinds_runtime_shows_them(kind, devices, count):
    assert count_gpus(kind, devices)[0] == count


def test_intel_gpus_are_counted_as_ray_counts_them_and_said_so():
    assert count_gpus("intel", AURORA)[1] == ("Level Zero devices, ZE_FLAT_DEVICE_HIERARCHY="
                                              "FLAT, on 6 cards")
    without_dpctl = count_gpus("intel", GpuDevices(render_nodes=6, cards=6))
    assert without_dpctl == (6, "cards; no dpctl in the image, so tiles are not counted")
    # Aurora's default launch asks for its 12 tiles: it passes on Aurora's nodes, and a
    # COMPOSITE hierarchy (6 devices) is refused with the fix.
    assert check_gpus("intel", 12, *count_gpus("intel", AURORA)).ok
    refused = check_gpus("intel", 12, 6, "cards")
    assert not refused.ok and "ZE_FLAT_DEVICE_HIERARCHY=FLAT" in refused.fix


def test_gpus_visible_against_those_asked_for():
    assert check_gpus("nvidia", 4, 4).ok
    assert check_gpus("", None, 0).ok and check_gpus("", 0, 0).ok
    missing = check_gpus("nvidia", 4, 0)
    assert not missing.ok and missing.line == "0 nvidia GPUs visible, 4 asked for"
    assert "--nv" in missing.fix


def test_versions_against_the_heads():
    head = {"ray": "2.60.0", "python": "3.11.9"}
    assert check_versions(head, None).line == "Ray 2.60.0, Python 3.11.9 (the head's)"
    assert check_versions({"ray": "2.60.0", "python": "3.11.2"}, head).ok
    other = check_versions({"ray": "2.59.1", "python": "3.11.9"}, head)
    assert not other.ok
    assert other.error("worker-2") == (
        "preflight on worker-2: versions: Ray 2.59.1, Python 3.11.9 here, Ray 2.60.0, Python "
        "3.11.9 on the head; Ray refuses nodes of another version: run one image (or images of "
        "the same Ray and Python) on every node")
    assert not check_versions({"ray": "2.60.0", "python": "3.12.1"}, head).ok


def facts(**changes: object) -> NodeFacts:
    values = dict(open_files=(65536, 65536), shm_bytes=2 * GIB, object_store=int(1.6 * GIB),
                  temp_dir="/tmp/rh-abcd123", temp_dir_fits=True, socket_limit=107,
                  disk=(100 * GIB, 50 * GIB), gpu_kind="", gpus_found=0, gpus_counted="",
                  versions={"ray": "2.60.0", "python": "3.11.9"})
    values.update(changes)
    return NodeFacts(**values)


def test_run_checks_in_order_and_the_first_failure():
    checks = run_checks(facts(), None, None, None)
    assert [check.name for check in checks] == ["open files", "socket path", "temp dir space",
                                                "shm", "gpus", "versions"]
    assert first_failure(checks) is None
    checks = run_checks(facts(gpus_found=0), None, 2, {"ray": "2.59.0", "python": "3.11.9"})
    assert first_failure(checks).name == "gpus"  # the first of two failures
    assert checks[-1].log_line().startswith("preflight versions: FAILED: ")


def test_the_checks_on_this_machine_for_real(tmp_path):
    """What the agent reads here (no GPU on this machine): every check passes but the GPU one
    when GPUs are asked for."""
    total, free = preflight.disk(str(tmp_path))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    found, _ = preflight.visible_gpus("nvidia")
    real = facts(open_files=(soft, hard), disk=(total, free), gpu_kind="nvidia",
                 gpus_found=found, versions=preflight.node_versions("2.60.0"))
    checks = run_checks(real, None, None, None)
    assert [check.ok for check in checks] == [True] * 6
    if not found:
        assert not check_gpus("nvidia", 1, found).ok
