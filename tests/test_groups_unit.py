"""Node groups without an engine: parsing (site file and --group), the resolved launch, the
compose file, `ray start` per group, and the checks at the join on fake Ray node records."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import yaml

from rayhpc.common.user_error import UserError
from rayhpc.launcher.backends.local.compose import render_compose
from rayhpc.launcher.contract import (
    RAY_GROUP_LABEL,
    RAY_IMAGE_LABEL,
    LaunchSpec,
    NodeGroup,
    label_value,
)
from rayhpc.launcher.node.ray_start import ray_start_args
from rayhpc.launcher.node.report import gpu_shortfall, group_totals, node_resources, resources_line
from rayhpc.launcher.resolve.config import load_site
from rayhpc.launcher.resolve.groups import (
    group_flags,
    image_label,
    parse_group_flag,
    version_mismatch,
)
from tests import PROJECT_ROOT
from tests.specs import make_spec

HYBRID = """\
scheduler: local
runtime: docker
groups:
  gpu: {nodes: 2, image: "ray:gpu", gpu: nvidia, resources: {trainer: 1}, labels: {tier: gpu}}
  cpu: {nodes: 2, head: true}
"""


def site_file(tmp_path, text: str) -> str:
    path = tmp_path / "hybrid.yaml"
    path.write_text(text)
    return str(path)


def test_site_groups_resolve_head_first_with_images_labels_and_node_names(tmp_path):
    spec = make_spec(site_file(tmp_path, HYBRID), image="ray:cpu")
    assert [g.name for g in spec.groups] == ["cpu", "gpu"]
    assert [g.head for g in spec.groups] == [True, False]
    assert spec.nodes == 4 and spec.image == "ray:cpu"
    assert spec.node_names == ["head", "cpu-1", "gpu-1", "gpu-2"]
    cpu, gpu = spec.groups
    assert cpu.image == "ray:cpu" and gpu.image == "ray:gpu"
    assert gpu.labels == {"tier": "gpu", RAY_GROUP_LABEL: "gpu", RAY_IMAGE_LABEL: "ray_gpu"}
    assert gpu.resources == {"trainer": 1} and gpu.gpu == "nvidia"
    # spec.json carries them to the agents, and back.
    again = LaunchSpec.from_json(json.loads(json.dumps(spec.to_json())))
    assert again == spec


def test_group_flags_replace_the_site_groups(tmp_path):
    spec = make_spec(site_file(tmp_path, HYBRID), image="ray:cpu",
                     group=["head:1", "worker:3:reg.example/ray:2.60-gpu,num_gpus=2"])
    assert [(g.name, g.nodes, g.image) for g in spec.groups] == \
        [("head", 1, "ray:cpu"), ("worker", 3, "reg.example/ray:2.60-gpu")]
    assert spec.groups[1].num_gpus == 2 and spec.nodes == 4


def test_a_launch_without_groups_is_as_before():
    spec = make_spec(nodes=3, image="ray:cpu")
    assert spec.groups == () and spec.node_names == ["head", "worker-1", "worker-2"]
    assert "--group" not in render_compose(spec)


def test_group_flag_short_form():
    group = parse_group_flag("gpu:4:host:5000/ray:tag,gpu=nvidia,num_cpus=8,"
                             "resources.trainer=1,resources.disk=0.5,labels.tier=fast,"
                             "scheduler_options.constraint=gpu,scheduler_options.gpus_per_node=4,"
                             "queue=gpuq,head=false")
    assert (group.name, group.nodes, group.image, group.gpu) == \
        ("gpu", 4, "host:5000/ray:tag", "nvidia")
    assert group.num_cpus == 8 and group.queue == "gpuq" and group.head is False
    assert group.resources == {"trainer": 1, "disk": 0.5}
    assert group.labels == {"tier": "fast"}
    assert group.scheduler_options == {"constraint": "gpu", "gpus_per_node": 4}


@pytest.mark.parametrize("flags, message", [
    (["gpu"], "--group: 'gpu': give NAME:NODES[:IMAGE]"),
    (["head:0"], "--group head: nodes: 0: a group has 1 node or more"),
    (["head:two"], "--group head: nodes: 'two': must be a whole number"),
    (["head:1", "head:2"], "--group: group head is given twice"),
    (["a:1", "b:2"], "--group: no group holds the head: mark one `head: true` (or name it head)"),
    (["a:1,head=true", "b:1,head=true"], "--group: groups a and b both say head: true"),
    (["head:1,colour=red"], "--group head: colour: unknown key; allowed:"),
    (["head:1,imgae=x"], "--group head: imgae: unknown key; did you mean 'image'?"),
    (["head:1,gpu=tpu"], "--group head: gpu: 'tpu' is not one of: nvidia, amd, intel"),
    (["head:1,resources.CPU=2"], "--group head: resources: CPU: Ray's own resource"),
    (["head:1,resources.trainer=0"], "--group head: resources: trainer: '0': must be a number"),
    (["head:1,labels.ray.io/x=1"], "--group head: labels: 'ray.io/x': not a label name Ray"),
    (["head:1,labels.tier=a b"], "--group head: labels: tier: 'a b': not a label value"),
    (["Head:1"], "--group Head: 'Head': a group name is a short lower-case word"),
    (["head:1,gpu"], "--group: 'head:1,gpu': 'gpu' is not KEY=VALUE"),
])
def test_bad_group_flags(flags, message):
    with pytest.raises(UserError) as err:
        group_flags(flags)
    assert str(err.value).startswith(message), str(err.value)


@pytest.mark.parametrize("text, message", [
    ("groups: {head: {nodes: 1}, gpu: {nodes: 0}}",
     "groups: gpu: nodes: 0: a group has 1 node or more"),
    ("groups: {head: {nodes: 1, imgae: x}}",
     "groups: head: imgae: unknown key; did you mean 'image'?"),
    ("groups: {head: {image: x}}", "groups: head: nodes: required"),
    ("groups: {a: {nodes: 1}}", "groups: no group holds the head"),
    ("groups: {a: {nodes: 1, head: true}, head: {nodes: 1, head: true}}",
     "groups: groups a and head both say head: true"),
    ("groups: [head]", "groups: must be a dict"),
    ("groups: {head: {nodes: 1, queue: debug}}",
     "groups: head: queue: the local site has no queues; remove it"),
    ("groups: {head: {nodes: 1, gpu: intel}}",
     "groups: head: gpu: 'intel': runtime docker cannot pass intel GPUs"),
])
def test_bad_site_groups(tmp_path, text, message):
    path = site_file(tmp_path, f"scheduler: local\nruntime: docker\n{text}\n")
    with pytest.raises(UserError) as err:
        load_site(path)
    assert str(err.value).startswith(f"{path}: {message}"), str(err.value)


def test_site_gpu_kind_binds_the_groups(tmp_path):
    path = site_file(tmp_path, "scheduler: slurm\nruntime: apptainer\ngpu: nvidia\n"
                               "groups: {head: {nodes: 1}, gpu: {nodes: 2, gpu: amd}}\n")
    with pytest.raises(UserError, match="groups: gpu: gpu: amd: site hybrid has nvidia GPUs"):
        load_site(path)


def test_nodes_flag_with_groups_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"--nodes: the node groups give the node count "
                                        r"\(cpu 2 \+ gpu 2 = 4\); drop --nodes"):
        make_spec(site_file(tmp_path, HYBRID), nodes=4)


def test_compose_runs_each_node_in_its_groups_image_with_its_gpus(tmp_path):
    spec = make_spec(site_file(tmp_path, HYBRID), image="ray:cpu")
    services = yaml.safe_load(render_compose(spec))["services"]
    assert list(services) == ["head", "cpu-1", "gpu-1", "gpu-2"]
    assert [s["image"] for s in services.values()] == ["ray:cpu", "ray:cpu", "ray:gpu",
                                                       "ray:gpu"]
    for name, group in (("head", "cpu"), ("cpu-1", "cpu"), ("gpu-2", "gpu")):
        command = services[name]["command"]
        assert command[command.index("--group") + 1] == group
        assert services[name]["labels"]["org.rayhpc.group"] == group
    assert services["gpu-1"]["deploy"] == {"resources": {"reservations": {"devices": [
        {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]}}}
    assert "deploy" not in services["head"] and "ports" in services["head"]


SPEC = make_spec("slurm", image="/x.sif", num_gpus=1)


def test_ray_start_takes_the_groups_cpus_gpus_resources_and_labels():
    group = NodeGroup(name="gpu", nodes=2, num_cpus=8, num_gpus=4, resources={"trainer": 1})
    args = ray_start_args(SPEC, "10.0.0.2", "10.0.0.1:6379", None, "/tmp/r", cpus=64,
                          group=group, labels={"rayhpc.io/group": "gpu", "tier": "fast"})
    assert args[-4:] == ["--num-cpus=8", "--num-gpus=4", '--resources={"trainer": 1}',
                         "--labels=rayhpc.io/group=gpu,tier=fast"]
    # Without a group, as before: the launch's settings.
    plain = ray_start_args(SPEC, "10.0.0.2", "10.0.0.1:6379", None, "/tmp/r", cpus=64)
    assert plain[-2:] == ["--num-cpus=64", "--num-gpus=1"]
    # head_cpus still keeps tasks off the head of a group.
    head = ray_start_args(replace(SPEC, head_cpus=0), "10.0.0.1", None, None, "/tmp/r",
                          cpus=64, group=group)
    assert "--num-cpus=0" in head


def ray_node(ip: str, cpus: float, gpus: float = 0, node: str = "", **custom: float) -> dict:
    resources = {"CPU": cpus, "memory": 8 << 30, "object_store_memory": 2 << 30,
                 f"node:{ip}": 1.0, **custom}
    if gpus:
        resources.update({"GPU": gpus, "accelerator_type:A100": 1.0})
    return {"NodeManagerAddress": ip, "Resources": resources,
            "Labels": {"rayhpc.io/node": node} if node else {}}


GROUPS = [NodeGroup(name="cpu", nodes=1, image="cpu.sif"),
          NodeGroup(name="gpu", nodes=2, image="gpu.sif", gpu="nvidia")]
GROUP_OF = {"head": "cpu", "g1": "gpu", "g2": "gpu"}


def test_node_resources_by_label_else_by_address():
    nodes = [ray_node("10.0.0.1", 64), ray_node("10.0.0.2", 32, 4, node="g1", trainer=1),
             ray_node("10.0.0.9", 1)]
    found = node_resources(nodes, ["head", "g1", "g2"], {"10.0.0.1": "head"})
    assert set(found) == {"head", "g1"}  # 10.0.0.9: no label, unknown address
    assert found["g1"] == {"cpus": 32, "gpus": 4, "gpu_kind": "A100", "memory": 8 << 30,
                           "object_store": 2 << 30, "custom": {"trainer": 1}}
    assert found["head"]["gpus"] == 0 and found["head"]["gpu_kind"] == ""


def test_a_gpu_group_whose_nodes_bring_no_gpu_fails_naming_group_and_nodes():
    resources = node_resources([ray_node("1", 64, node="head"), ray_node("2", 32, 4, node="g1"),
                                ray_node("3", 32, node="g2")], list(GROUP_OF), {})
    problem = gpu_shortfall(GROUPS, GROUP_OF, resources)
    assert problem.startswith("group gpu asked for nvidia GPUs, but Ray found none on g2 "
                              "(1 of 2 nodes)")
    resources["g2"]["gpus"] = 4
    assert gpu_shortfall(GROUPS, GROUP_OF, resources) == ""
    # A node that never reported counts as none; num_gpus 0 asks for none.
    del resources["g1"]
    assert "on g1 (1 of 2" in gpu_shortfall(GROUPS, GROUP_OF, resources)
    assert gpu_shortfall([replace(GROUPS[1], num_gpus=0)], GROUP_OF, resources) == ""


def test_group_totals_and_the_console_line():
    resources = node_resources([ray_node("1", 64, node="head"),
                                ray_node("2", 32, 4, node="g1", trainer=1),
                                ray_node("3", 32, 4, node="g2", trainer=1)], list(GROUP_OF), {})
    totals = group_totals(GROUPS, GROUP_OF, resources)
    assert totals["gpu"]["nodes"] == 2 and totals["gpu"]["gpus"] == 8
    assert resources_line("gpu", totals["gpu"]) == (
        "group gpu: 2 nodes of gpu.sif: 64 CPUs, 8 GPUs (A100), 16.0 GiB memory, 4.0 GiB "
        "object store, trainer 2")
    assert resources_line("", totals["cpu"]) == (
        "1 node: 64 CPUs, 0 GPUs, 8.0 GiB memory, 2.0 GiB object store")


def test_a_long_host_name_is_still_found_by_its_label():
    host = "x3006c0s13b0n0.hsn.cm.polaris.alcf.anl.gov.example.org.a.long.domain"
    assert len(host) > 63 and len(label_value(host)) == 63
    found = node_resources([ray_node("10.0.0.5", 8, node=label_value(host))], [host], {})
    assert list(found) == [host]


def test_image_labels_fit_rays_label_syntax():
    assert image_label("rayhpc/ray:2.60.0-py311-cpu") == "rayhpc_ray_2.60.0-py311-cpu"
    assert image_label("/lus/eagle/projects/x/ray-gpu.sif") == "lus_eagle_projects_x_ray-gpu.sif"
    long = image_label("/p/" + "a" * 100 + "/ray.sif")
    assert len(long) <= 63 and long.endswith("ray.sif")


def test_version_mismatch_names_both_images():
    same = {"a": {"ray": "2.60.0", "python": "3.11.2"}, "b": {"ray": "2.60.0", "python": "3.11.9"}}
    assert version_mismatch(same) == ""
    ray = {"a": {"ray": "2.60.0", "python": "3.11"}, "b": {"ray": "2.59.1", "python": "3.11"}}
    assert version_mismatch(ray).startswith("Ray 2.60.0 in a but Ray 2.59.1 in b")


def test_the_hybrid_example_site_loads_with_a_cpu_head_and_gpu_workers():
    site = load_site(str(PROJECT_ROOT / "rayhpc/examples/sites/hybrid.yaml"))
    head, gpu = site.groups
    assert (head.name, head.head, head.gpu, head.queue) == ("head", True, "", "cpu")
    assert (gpu.gpu, gpu.queue, gpu.resources) == ("nvidia", "gpu", {"trainer": 1})
    assert head.image.endswith("-cpu.sif") and gpu.image.endswith("-gpu.sif")


def test_a_shared_dir_staged_before_gets_the_new_examples_and_keeps_edits(tmp_path):
    from rayhpc.launcher.backends.rundir import stage_examples

    stage_examples(tmp_path)
    examples = tmp_path / "examples"
    (examples / "hello_groups.py").unlink()  # as staged by a version without it
    (examples / "hello_nodes.py").write_text("# my edit\n")
    stage_examples(tmp_path)
    bundled = (PROJECT_ROOT / "rayhpc/examples/hello_groups.py").read_text()
    assert (examples / "hello_groups.py").read_text() == bundled
    assert (examples / "hello_nodes.py").read_text() == "# my edit\n"
    assert not list(examples.glob(".*.tmp"))
