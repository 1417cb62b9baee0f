"""Hardening that needs no engine: the capacity check on fake machine facts (a real launch the
machine cannot hold would take the engine down), containers' output bounded where it is kept,
spec.json files of the wrong shape, image tags the engine would choke on."""

from __future__ import annotations

import json

import pytest

from containers.errors import UserError
from launcher.backends.local.capacity import (
    GIB,
    MachineFacts,
    check_capacity,
    node_memory,
    nodes_that_fit,
)
from launcher.backends.local.launch import bounded_head_and_tail
from launcher.contract import LaunchSpec
from tests.cli import invoke
from tests.specs import make_spec

MACHINE = MachineFacts(memory_bytes=24 * GIB, cpus=2)  # the machines of this project


def test_the_nodes_that_fit_are_the_machines_memory_over_each_nodes_shm_and_ray():
    # 24 GiB less 1 GiB for the machine and 0.5 GiB for the head, over 2 GiB shm + 0.5 GiB.
    assert nodes_that_fit(MACHINE, 2 * GIB) == 9
    assert nodes_that_fit(MACHINE, GIB // 2) == 22
    assert nodes_that_fit(MachineFacts(2 * GIB, 1), 2 * GIB) == 0
    assert node_memory(GIB) == GIB + 512 * (1 << 20)


def test_a_node_count_the_machine_cannot_hold_is_refused_naming_the_largest_that_fits():
    check_capacity(9, "2g", 2 * GIB, MACHINE)  # fits: no word
    with pytest.raises(UserError) as refused:
        check_capacity(5000, "2g", 2 * GIB, MACHINE)
    message = str(refused.value)
    assert message.startswith("--nodes: 5000 local nodes do not fit on this machine: each "
                              "takes 2.5 GiB (--shm-size 2g and 512 MiB for Ray)"), message
    assert "use --nodes 9 or fewer" in message
    with pytest.raises(UserError, match=r"^--shm-size: 64g per node does not fit even one "):
        check_capacity(1, "64g", 64 * GIB, MACHINE)


def test_a_containers_output_is_kept_to_its_first_and_last_halves_with_the_drop_counted():
    chunks = [bytes([65 + i % 26]) * 1000 for i in range(100)]  # 100,000 bytes
    first, last, dropped = bounded_head_and_tail(iter(chunks), 10_000)
    data = b"".join(chunks)
    assert first == data[:5000] and last == data[-5000:] and dropped == 90_000
    assert bounded_head_and_tail(iter([b"short\n"]), 10_000) == (b"short\n", b"", 0)
    first, last, dropped = bounded_head_and_tail(iter([b"x" * 7000]), 10_000)
    assert first + last == b"x" * 7000 and dropped == 0


@pytest.mark.parametrize("field,value", [("ports", [1, 2]), ("node_names", "str"),
                                         ("published", [1]), ("nodes", "3"),
                                         ("groups", [1, 2]), ("shared", 7)])
def test_a_spec_json_with_a_field_of_the_wrong_type_is_not_a_spec(field, value):
    data = json.loads(json.dumps(make_spec(nodes=2).to_json()))
    assert LaunchSpec.from_json(data) == make_spec(nodes=2)
    with pytest.raises(ValueError, match=f"spec.json: {field}: "):
        LaunchSpec.from_json({**data, field: value})


@pytest.mark.parametrize("content", ["[1, 2]", '"str"', "{}", '{"ports": [1, 2]}'])
def test_status_and_down_take_a_run_directory_whose_spec_is_not_one(tmp_path, content):
    """One bad spec.json among the runs: `status` lists the others, `down` of it says no run."""
    good = make_spec("slurm", nodes=2, shared=str(tmp_path), run_id="20260101-000000-good",
                     image="/x.sif")  # a batch run: no engine needed to list it
    bad = {**good.to_json(), "ports": [1, 2]} if "ports" in content else json.loads(content)
    for run_id, spec in (("20260101-000000-good", good.to_json()),
                         ("20260101-000000-bad0", bad)):
        (tmp_path / "runs" / run_id).mkdir(parents=True)
        (tmp_path / "runs" / run_id / "spec.json").write_text(json.dumps(spec, default=str))
    env = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    status = invoke("status", "--shared", str(tmp_path), env=env, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "Traceback" not in status.stderr
    assert "20260101-000000-good" in status.stdout
    assert "20260101-000000-bad0" not in status.stdout
    down = invoke("down", "--run", "20260101-000000-bad0", "--shared", str(tmp_path), env=env,
                  timeout=120)
    assert down.returncode == 2 and "Traceback" not in down.stderr, down.stderr
    assert down.stderr.startswith("error: ") and len(down.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("flag,tag", [("--tag", "UPPER/Case:tag"), ("--base", "Bad Base")])
def test_build_refuses_an_image_reference_the_engine_cannot_take(flag, tag):
    result = invoke("build", flag, tag, env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
                    timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"error: {flag}: {tag!r} is not a valid image reference; use "
                             "[registry/]name[:tag] in lower case, e.g. "
                             "rayhpc/ray:2.60.0-py311-cpu\n")
