"""What the head reports about the nodes: what each brought to Ray, per group, who is missing or
lost (pure functions of Ray's node list and the workers' records)."""

from __future__ import annotations

import re

from rayhpc.launcher.contract import LEFT, RAY_NODE_LABEL, NodeGroup, NodeRecord, label_value
from rayhpc.launcher.node.launch_failed import LaunchFailed


def node_resources(ray_nodes: list[dict], names: list[str],
                   names_by_ip: dict[str, str]) -> dict[str, dict]:
    """What each node brought to Ray (from `ray.nodes()`), by node name: CPUs, GPUs and their
    kind, memory and object store bytes, custom resources. A node is known by its label (one
    of ``names``), else by its address."""
    by_label = {label_value(name): name for name in names}
    found = {}
    for info in ray_nodes:
        labels = info.get("Labels") or {}
        name = (by_label.get(labels.get(RAY_NODE_LABEL, ""))
                or names_by_ip.get(info.get("NodeManagerAddress", "")))
        if not name:
            continue
        res = info.get("Resources") or {}
        kinds = sorted(k.split(":", 1)[1] for k in res if k.startswith("accelerator_type:"))
        found[name] = {
            "cpus": res.get("CPU", 0), "gpus": res.get("GPU", 0),
            "gpu_kind": ",".join(kinds) or labels.get("ray.io/accelerator-type", ""),
            "memory": int(res.get("memory", 0)),
            "object_store": int(res.get("object_store_memory", 0)),
            "custom": {k: v for k, v in sorted(res.items())
                       if k not in ("CPU", "GPU", "memory", "object_store_memory")
                       and not k.startswith(("node:", "accelerator_type:"))}}
    return found


def gpu_shortfall(groups: list[NodeGroup], group_of: dict[str, str],
                  resources: dict[str, dict]) -> str:
    """Why the launch must fail ("" : it need not): a group that asked for GPUs (`gpu`, and no
    num_gpus of 0) has nodes that brought none to Ray. A GPU job silently on CPUs is worse."""
    for group in groups:
        if not group.gpu or group.num_gpus == 0:
            continue
        without = sorted(node for node, owner in group_of.items()
                         if owner == group.name and not resources.get(node, {}).get("gpus"))
        if without:
            return (f"group {group.name} asked for {group.gpu} GPUs, but Ray found none "
                    f"on {first_few(without, 'and more')} ({len(without)} of {group.nodes} "
                    "nodes): check the group's scheduler resources (its num_gpus and gpu), the "
                    "runtime's GPU flags and the image's GPU stack")
    return ""


def group_totals(groups: list[NodeGroup], group_of: dict[str, str],
                 resources: dict[str, dict]) -> dict[str, dict]:
    """Per group: nodes that reported, CPUs, GPUs (and kinds), memory and object store."""
    totals = {}
    for group in groups:
        nodes = [resources[n] for n, owner in group_of.items()
                 if owner == group.name and n in resources]
        totals[group.name] = {
            "nodes": len(nodes), "image": group.image,
            **{key: sum(r[key] for r in nodes)
               for key in ("cpus", "gpus", "memory", "object_store")},
            "gpu_kind": ",".join(sorted({r["gpu_kind"] for r in nodes if r["gpu_kind"]})),
            "custom": {k: sum(r["custom"].get(k, 0) for r in nodes)
                       for k in sorted({k for r in nodes for k in r["custom"]})}}
    return totals


def size_text(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def resources_line(group: str, total: dict) -> str:
    """One console line of what a group's nodes brought: nodes, CPUs, GPUs, memory, object
    store, custom resources."""
    gpus = f"{total['gpus']:g} GPUs" + (f" ({total['gpu_kind']})" if total["gpu_kind"] else "")
    custom = "".join(f", {name} {amount:g}" for name, amount in total["custom"].items())
    who = f"group {group}: " if group else ""
    image = f" of {total['image']}" if group and total["image"] else ""
    return (f"{who}{total['nodes']} node{'s' if total['nodes'] != 1 else ''}{image}: "
            f"{total['cpus']:g} CPUs, {gpus}, {size_text(total['memory'])} memory, "
            f"{size_text(total['object_store'])} object store{custom}")


def missing_nodes(expected: list[str], count: int, records: dict[str, dict]) -> list[str]:
    """Describe nodes that have not joined: named ones from spec, else by count of unknown."""
    joined = {name for name, rec in records.items() if rec.get("state") == "joined"}
    described = []
    names = expected or sorted(records)
    for name in names:
        if name in joined:
            continue
        rec = records.get(name)
        state = rec.get("state") if rec else None
        why = {None: "its agent never reached the head", "waiting": "agent waiting for the head",
               "starting": "ray start did not finish"}.get(state, f"state {state}")
        if rec and rec.get("reason"):
            why += f": {rec['reason']}"
        described.append(f"{name} ({why})")
    unnamed = count - len(joined) - len(described)
    if not expected and unnamed > 0:
        described.append(f"{unnamed} more node(s) whose agent never reached the head")
    return described


def failed_before_joining(node: str, reason: str) -> str:
    """The launch's error when a worker's agent failed before it joined: the agent's own words
    (a preflight failure names the node, the check and the fix), with the node's name in
    front where they do not hold it."""
    reason = reason or "its agent failed (no reason given)"
    if re.search(rf"(?<![\w.-]){re.escape(node)}(?![\w-])", reason):
        return reason
    return f"{node} failed before joining: {reason}"


def first_few(items: list[str], rest_hint: str, shown: int = 5) -> str:
    """A short list for a one-line message: the first few, then how many more and where."""
    text = ", ".join(items[:shown])
    if len(items) > shown:
        text += f" and {len(items) - shown} more ({rest_hint})"
    return text


def lost_nodes(joined_ips: dict[str, str], alive_ips: set[str]) -> list[str]:
    """Names of nodes that were in the cluster (ip -> name) and are no longer alive in it."""
    return sorted(name for ip, name in joined_ips.items() if ip not in alive_ips)


def nodes_poll_s(nodes: int, during_driver: bool = False) -> float:
    """How often the head asks Ray's GCS for every node's record: each answer carries all N
    records, so the rate falls as N grows (and is lower while the driver runs)."""
    if during_driver:
        return max(2.0, nodes / 32)
    return min(10.0, max(0.5, nodes / 100))


def status_every_s(nodes: int) -> float:
    """How often the head rewrites status.json at most (unless a change must show at once):
    every node is in it, 2.3 MB at 10,000 nodes, so the rate falls as N grows: once a second
    up to 1,000 nodes, every 10 s at 10,000."""
    return max(1.0, nodes / 1000)


def final_of(name: str, peer: dict) -> NodeRecord:
    """A worker's final record as the head keeps it: its own (sent at its end), else what the
    head knew of it; with when the head heard each state."""
    try:
        record = NodeRecord.from_json(peer["final"], f"{name}'s final record") \
            if peer["final"] else NodeRecord(node=name, state=peer["state"],
                                             reason=peer["reason"], ip=peer["ip"])
    except ValueError:  # a worker that sent no record of this rayhpc's
        record = NodeRecord(node=name, state=peer["state"], reason=peer["reason"], ip=peer["ip"])
    record.times = peer["times"]
    if peer["state"] == LEFT:  # released from its block: it left, drained
        record.state, record.block = LEFT, peer["block"]
    return record


def report_resources(head) -> None:
    """What every node brought to Ray, from Ray's node list at the join (no extra call): one
    line per group on the console, each node's in status.json, the groups' totals in
    timing.json (the summary). A GPU group whose nodes brought no GPU fails the launch."""
    records = head.server.records()
    names_by_ip = {head.ip: head.node, **{r["ip"]: name for name, r in records.items()
                                          if r["ip"]}}
    head.resources = node_resources(head.ray_nodes, [head.node, *records], names_by_ip)
    groups = list(head.spec.groups) or [NodeGroup(name="", nodes=head.spec.nodes,
                                                  image=head.spec.image)]
    group_of = {head.node: head.group.name if head.group else "",
                **{name: r["group"] for name, r in records.items()}}
    totals = group_totals(groups, group_of, head.resources)
    head.timing.groups = totals
    for name, total in totals.items():
        head.note(resources_line(name, total))
    problem = gpu_shortfall(groups, group_of, head.resources)
    if problem:
        raise LaunchFailed(problem)
