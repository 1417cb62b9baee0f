"""Node groups: a cluster made of kinds of nodes (a CPU head, GPU workers), each with its own
image, GPUs, Ray resources and labels, and scheduler resources (pure: parsing and checks).

In a site file:

    groups:
      head: {nodes: 1, image: ray-cpu.sif}
      gpu:  {nodes: 4, image: ray-gpu.sif, gpu: nvidia, resources: {trainer: 1}}

on the command line, repeated: ``--group NAME:NODES[:IMAGE][,KEY=VALUE...]`` (e.g.
``--group gpu:4:ray-gpu.sif,gpu=nvidia,resources.trainer=1``). The head runs in exactly one
group: the one marked ``head: true``, else the one named ``head``. A launch without groups is
one implicit group of every node, as before groups existed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from rayhpc.common.user_error import UserError
from rayhpc.common.yaml_files import check_keys
from rayhpc.launcher.contract import RAY_GROUP_LABEL, RAY_IMAGE_LABEL, NodeGroup, label_value
from rayhpc.launcher.resolve.values import check_one_line, whole_number

HEAD_GROUP_NAME = "head"  # a group of this name holds the head unless another says head: true
GPUS = ("nvidia", "amd", "intel")
# Ray node labels (and group names, which become one): Kubernetes' label syntax, which Ray
# checks (an optional DNS prefix and "/", then at most 63 of [-_.A-Za-z0-9], alphanumeric at
# both ends; values the same, or empty).
_LABEL_NAME = r"[A-Za-z0-9]([-_.A-Za-z0-9]{0,61}[A-Za-z0-9])?"
LABEL_KEY_RE = re.compile(rf"([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}")
LABEL_VALUE_RE = re.compile(rf"({_LABEL_NAME})?")
GROUP_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,30}")
RESERVED_LABEL_PREFIXES = ("ray.io/", "rayhpc.io/")


# The keys of a group, with their parsers (value, where) -> value.
def _count(value: Any, where: str) -> int:
    try:
        return whole_number(value)
    except ValueError:
        raise UserError(f"{where}: {value!r}: must be a whole number") from None


def _nodes(value: Any, where: str) -> int:
    number = _count(value, where)
    if number < 1:
        raise UserError(f"{where}: {number}: a group has 1 node or more; remove the group "
                        "instead of giving it 0 nodes")
    return number


def _text(value: Any, where: str) -> str:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool) or not str(value):
        raise UserError(f"{where}: {value!r}: must be one non-empty string")
    return str(value)


def _flag(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise UserError(f"{where}: {value!r}: must be true or false")


def _gpu(value: Any, where: str) -> str:
    text = _text(value, where).lower()
    if text not in GPUS:
        raise UserError(f"{where}: {value!r} is not one of: {', '.join(GPUS)}")
    return text


def _resources(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise UserError(f"{where}: must be a mapping of resource name to amount, e.g. "
                        "{trainer: 1}")
    resources = {}
    for name, amount in value.items():
        if str(name) in ("CPU", "GPU", "memory", "object_store_memory") or ":" in str(name):
            raise UserError(f"{where}: {name}: Ray's own resource; give it with num_cpus, "
                            "num_gpus or the launch's memory settings, or pick another name")
        try:
            number = float(amount)
        except (TypeError, ValueError):
            number = -1.0
        if isinstance(amount, bool) or number <= 0:
            raise UserError(f"{where}: {name}: {amount!r}: must be a number above 0")
        resources[str(name)] = int(number) if number.is_integer() else number
    return resources


def _labels(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise UserError(f"{where}: must be a mapping of label to value, e.g. {{tier: gpu}}")
    labels = {}
    for key, text in value.items():
        key, text = str(key), "" if text is None else str(text)
        if not LABEL_KEY_RE.fullmatch(key) or key.startswith(RESERVED_LABEL_PREFIXES):
            raise UserError(f"{where}: {key!r}: not a label name Ray takes (letters, digits, "
                            "- _ . up to 63, an optional DNS prefix and /; not ray.io/ or "
                            "rayhpc.io/)")
        if not LABEL_VALUE_RE.fullmatch(text):
            raise UserError(f"{where}: {key}: {text!r}: not a label value Ray takes (letters, "
                            "digits, - _ . up to 63, alphanumeric at both ends)")
        labels[key] = text
    return labels


def _options(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise UserError(f"{where}: must be a mapping (the scheduler's own keys)")
    return dict(value)


def _words(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
        raise UserError(f"{where}: must be a list of strings")
    return list(value)


GROUP_KEYS = {"nodes": _nodes, "image": _text, "head": _flag, "gpu": _gpu,
              "num_cpus": _count, "num_gpus": _count, "resources": _resources,
              "labels": _labels, "queue": _text, "scheduler_options": _options,
              "runtime_options": _words}


def parse_group(name: Any, data: Any, where: str) -> NodeGroup:
    """One group from its mapping; UserError naming ``where`` (e.g. "site.yaml: groups: gpu")."""
    if not isinstance(name, str) or not GROUP_NAME_RE.fullmatch(name):
        raise UserError(f"{where}: {name!r}: a group name is a short lower-case word "
                        "(letters, digits, -), e.g. head, gpu, cpu-loaders")
    if not isinstance(data, Mapping):
        raise UserError(f"{where}: must be a mapping with at least `nodes` (keys: "
                        f"{', '.join(GROUP_KEYS)})")
    check_keys(dict(data), tuple(GROUP_KEYS), where, "")
    check_one_line(dict(data), where)  # its queue, image, options reach the job script
    if "nodes" not in data:
        raise UserError(f"{where}: nodes: required (how many nodes the group has)")
    values = {key: GROUP_KEYS[key](value, f"{where}: {key}") for key, value in data.items()
              if value is not None}
    return NodeGroup(name=name, **values)


def parse_groups(data: Any, where: str) -> tuple[NodeGroup, ...]:
    """A site file's `groups:` mapping (name -> group), checked as a whole."""
    if not isinstance(data, Mapping) or not data:
        raise UserError(f"{where}: must be a mapping of group name to group, e.g. "
                        "{head: {nodes: 1}, gpu: {nodes: 4, gpu: nvidia}}")
    groups = tuple(parse_group(name, value, f"{where}: {name}") for name, value in data.items())
    return with_head_first(groups, where)


def parse_group_flag(text: str, where: str = "--group") -> NodeGroup:
    """``NAME:NODES[:IMAGE][,KEY=VALUE...]``; keys as in a site file, ``resources.X=N`` and
    ``labels.X=V`` for one resource or label (an image may hold colons, never a comma)."""
    main, *pairs = str(text).split(",")
    parts = main.split(":", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise UserError(f"{where}: {text!r}: give NAME:NODES[:IMAGE][,KEY=VALUE...], e.g. "
                        "gpu:4:ray-gpu.sif,gpu=nvidia,resources.trainer=1")
    data: dict[str, Any] = {"nodes": parts[1]}
    if len(parts) == 3 and parts[2]:
        data["image"] = parts[2]
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"{where}: {text!r}: {pair!r} is not KEY=VALUE")
        top, _, sub = key.partition(".")
        if top == "scheduler_options" and sub:
            # A whole number is one (cpus_per_task=8), as YAML would read it.
            data.setdefault(top, {})[sub] = int(value) if value.isdigit() else value
        elif top in ("resources", "labels") and sub:
            data.setdefault(top, {})[sub] = value
        elif top in ("runtime_options",):
            data.setdefault(top, []).append(value)
        else:
            data[key] = value
    return parse_group(parts[0], data, f"{where} {parts[0]}")


def group_flags(values: list[str] | tuple[str, ...], where: str = "--group"
                ) -> tuple[NodeGroup, ...]:
    groups = tuple(parse_group_flag(text, where) for text in values)
    names = [group.name for group in groups]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise UserError(f"{where}: group {twice[0]} is given twice; give each group once")
    return with_head_first(groups, where)


def with_head_first(groups: tuple[NodeGroup, ...], where: str) -> tuple[NodeGroup, ...]:
    """The groups with the head's group first and marked; UserError unless exactly one holds
    the head (marked `head: true`, or, when none is marked, named `head`)."""
    marked = [group for group in groups if group.head]
    if len(marked) > 1:
        raise UserError(f"{where}: groups {' and '.join(g.name for g in marked)} both say "
                        "head: true; the head runs in exactly one group")
    if not marked:
        marked = [group for group in groups if group.name == HEAD_GROUP_NAME]
    if not marked:
        raise UserError(f"{where}: no group holds the head: mark one `head: true` (or name "
                        f"it {HEAD_GROUP_NAME}), e.g. {{head: {{nodes: 1}}, gpu: {{nodes: 4}}}}")
    head = marked[0]
    rest = tuple(group for group in groups if group is not head)
    return (replace(head, head=True), *rest)


def resolved_groups(groups: tuple[NodeGroup, ...], image: str,
                    num_gpus: int | None = None) -> tuple[NodeGroup, ...]:
    """Every group with its image (its own, else the launch's), its GPU count (its own, else
    the launch's ``num_gpus``; 0 for a group without a GPU kind: it asks for none) and the
    labels every node of it carries: its group's name and its image."""
    return tuple(replace(group, image=group.image or image,
                          num_gpus=group_gpu_count(group, num_gpus),
                          labels={**group.labels, RAY_GROUP_LABEL: group.name,
                                  RAY_IMAGE_LABEL: image_label(group.image or image)})
                 for group in groups)


def group_gpu_count(group: NodeGroup, num_gpus: int | None) -> int | None:
    """GPUs per node of ``group``: its own num_gpus, else the launch's; a group without a GPU
    kind gets none of the launch's (None stays None: Ray counts by itself)."""
    if group.num_gpus is not None:
        return group.num_gpus
    if num_gpus is None:
        return None
    return num_gpus if group.gpu else 0


def group_node_names(groups: tuple[NodeGroup, ...]) -> list[str]:
    """Node names where the launcher names the nodes (local site): the head is `head`, the
    others `<group>-<i>` counted in their group (the head's group counts from its second)."""
    names = []
    for group in groups:
        first = 1 if group.head else 0
        if group.head:
            names.append("head")
        names += [f"{group.name}-{i}" for i in range(1, group.nodes - first + 1)]
    return names


def nodes_by_group(groups: tuple[NodeGroup, ...], names: list[str]) -> dict[str, str]:
    """node name -> group name, for names made by `group_node_names`."""
    owners = [group.name for group in groups for _ in range(group.nodes)]
    return dict(zip(names, owners, strict=True))


def image_label(image: str) -> str:
    """An image reference as a Ray label value (`launcher.contract.label_value`)."""
    return label_value(image) or "image"


def version_mismatch(versions: Mapping[str, Mapping[str, str]]) -> str:
    """Why images cannot serve one cluster ("" : they can): Ray and Python must be the same in
    every one. ``versions``: image -> {"ray": ..., "python": ...}."""
    for what, name in (("ray", "Ray"), ("python", "Python")):
        seen: dict[str, str] = {}
        for image, found in versions.items():
            value = found.get(what, "")
            if what == "python":
                value = ".".join(value.split(".")[:2])  # 3.11.2 and 3.11.9 are one Python
            if value and seen and value not in seen:
                first_value, first_image = next(iter(seen.items()))
                return (f"{name} {first_value} in {first_image} but {name} {value} in "
                        f"{image}: every group's image needs the same {name} version (Ray "
                        "refuses nodes of another version); rebuild one of them")
            if value:
                seen.setdefault(value, image)
    return ""
