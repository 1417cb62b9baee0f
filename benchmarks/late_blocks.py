"""The scale simulator's late-block case (`scale.py --late-blocks 8 --block-nodes 128`): while
the head of an N-node run keeps its driver going, blocks of simulated agents join the running
cluster and leave it again, the way `invoke grow` and `invoke shrink` make them.

Each block is prepared as `invoke grow` prepares one (its record claimed in blocks/, its node
program `blocks/<b>.pyz` with the spec inside) and its nodes start as a block's job script
starts them (`blocks/<b>.pyz --role worker --block <b>`, the head's address in
RAYHPC_HEAD_HOST); it leaves by its stop file (`invoke shrink`'s `release`), the head draining
and stopping its nodes. Blocks go in waves of `at_once`: a wave joins, stays up `hold_s`, and
leaves before the next one comes (agents take ~11 MiB each: 1024 + 8 x 128 at once would not
fit this machine).

Figures: the run directory's operations per second (all processes) and the head's alone, and
the head's `ray.nodes()` calls per second, in each phase (the cluster up without blocks, blocks
joining, blocks up, blocks leaving); the operations per node of a block's node next to a node of
the first job's (one-time: all but the periodic looks); each wave's join and leave times."""

from __future__ import annotations

import json
import time
from pathlib import Path

from scale import GOAL_OPS_S, Simulation, is_block_node, overlap

from rayhpc.launcher.backends.bundle import node_program
from rayhpc.launcher.contract import json_text, read_blocks, read_json
from rayhpc.launcher.resolve.config import load_site
from rayhpc.launcher.runs.grow_shrink import BlockRequest, claim, release, resolve_block
from rayhpc.launcher.runs.run import Run

BLOCK_PHASES = ("up, no block", "blocks joining", "blocks up", "blocks leaving")
HEAD = "sim-00000"


def waiting_driver(done: Path) -> str:
    """A driver that runs until ``done`` exists (the blocks have come and gone)."""
    return ("python -c 'import os, time; any(time.sleep(0.2) for _ in iter(lambda: "
            f"os.path.exists(\"{done}\"), True))'")


class LateBlocks:
    def __init__(self, nodes: int, work: Path, blocks: int, block_nodes: int, at_once: int,
                 hold_s: float, wait_s: float):
        self.done = work / "driver.done"
        self.sim = Simulation(nodes, work, None, 0, wait_s, driver=waiting_driver(self.done))
        self.run = Run(self.sim.paths, self.sim.spec)
        self.blocks, self.block_nodes = blocks, block_nodes
        self.at_once, self.hold_s = at_once, hold_s
        self.windows: dict[str, list[tuple[float, float]]] = {p: [] for p in BLOCK_PHASES}
        self.waves: list[dict] = []
        self.next_index = nodes

    def submit(self) -> tuple[str, list]:
        """One block as `invoke grow` makes it (record, node program), its nodes started as
        its job script starts them; its name and processes."""
        sim = self.sim
        block, spec = resolve_block(sim.spec, load_site("slurm"), read_blocks(sim.paths),
                                    BlockRequest(nodes=self.block_nodes), False, time.time())
        block = claim(self.run, block)
        program = sim.paths.block_file(block.name, "pyz")
        program.write_bytes(node_program(json_text(spec.to_json())))
        procs = []
        for _ in range(self.block_nodes):
            procs.append(sim.start(self.next_index, program, block.name))
            self.next_index += 1
        return block.name, procs

    def block_counts(self) -> dict:
        return (read_json(self.sim.paths.status) or {}).get("blocks") or {}

    def wait_until(self, names: list[str], key: str, timeout: float = 900) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = self.block_counts()
            if all(counts.get(n, {}).get(key) == self.block_nodes for n in names):
                return
            if self.sim.paths.exit_code.exists():
                raise RuntimeError("the run ended while its blocks came and went")
            time.sleep(0.2)
        raise RuntimeError(f"blocks {names}: not all {key} after {timeout:.0f} s: "
                           f"{self.block_counts()}")

    def go(self) -> dict:
        sim = self.sim
        moments = sim.bring_up()
        deadline = time.monotonic() + 1800
        while sim.seen_all is None:
            if time.monotonic() > deadline or sim.paths.exit_code.exists():
                raise RuntimeError("the first job's nodes never all joined")
            time.sleep(0.2)
        time.sleep(2)  # the joining phase's last writes
        start = time.time()
        time.sleep(self.hold_s)
        self.windows["up, no block"].append((start, time.time()))
        made = 0
        while made < self.blocks:
            wave = min(self.at_once, self.blocks - made)
            start = time.time()
            submitted = [self.submit() for _ in range(wave)]
            names = [name for name, _ in submitted]
            self.wait_until(names, "joined")
            joined = time.time()
            self.windows["blocks joining"].append((start, joined))
            time.sleep(self.hold_s)
            released = time.time()
            self.windows["blocks up"].append((joined, released))
            for name in names:
                release(self.run, next(b for b in read_blocks(sim.paths) if b.name == name),
                        "scale simulator")
            self.wait_until(names, "left")
            for _, procs in submitted:
                for proc in procs:
                    proc.wait(timeout=120)
            left = time.time()
            self.windows["blocks leaving"].append((released, left))
            self.waves.append({"blocks": names, "join_s": joined - start,
                               "leave_s": left - released})
            made += wave
        self.done.touch()
        sim.wait()
        time.sleep(0.3)
        sim.cleanup()
        return self.figures(sim.figures(*moments))

    def figures(self, base: dict) -> dict:
        files = self.sim.count_files()
        everyone = buckets(files)
        head = buckets([d for d in files if d.get("node") == HEAD])
        gcs = read_json(self.sim.counts / "gcs.json") or {"nodes_calls": []}
        phases = {}
        for phase, windows in self.windows.items():
            span = sum(end - start for start, end in windows)
            phases[phase] = {
                "ops_s": rate(everyone, windows) / span if span else None,
                "head_ops_s": rate(head, windows) / span if span else None,
                "nodes_calls_s": sum(1 for t in gcs["nodes_calls"] for s, e in windows
                                     if s <= t < e) / span if span else None}
        per_node = {}
        for kind, chosen in (("first job", lambda n: n != HEAD and not is_block_node(n)),
                             ("block", is_block_node)):
            group = [d for d in files if chosen(d.get("node", ""))]
            count = len({d["node"] for d in group}) or 1
            total = sum(sum(d["per_second"].values()) for d in group)
            periodic = sum(d["kinds"].get("periodic", 0) for d in group)
            files_per_node = {}
            for d in group:
                for key, n in d.get("files", {}).items():
                    key = generic(key, d["node"])
                    files_per_node[key] = files_per_node.get(key, 0) + n
            per_node[kind] = {"nodes": count, "ops": total / count,
                              "one_time": (total - periodic) / count,
                              "files": {k: round(v / count, 2)
                                        for k, v in sorted(files_per_node.items())}}
        status = read_json(self.sim.paths.timing) or {}
        return {**base, "phases": phases, "per_node": per_node, "waves": self.waves,
                "blocks": status.get("blocks")}


def generic(key: str, node: str) -> str:
    """A file's key with the node's own name (and its block's) made generic: per-node sums."""
    key = key.replace(node, "<node>")
    block = node.partition("-")[0] if is_block_node(node) else ""
    return key.replace(f"/blocks/{block}.", "/blocks/<block>.") if block else key


def buckets(files: list[dict]) -> dict[int, int]:
    found: dict[int, int] = {}
    for data in files:
        for second, count in data["per_second"].items():
            found[int(second)] = found.get(int(second), 0) + count
    return found


def rate(counts: dict[int, int], windows: list[tuple[float, float]]) -> float:
    """The operations in the windows (whole seconds weighted by their overlap)."""
    return sum(count * overlap(second, start, end) for start, end in windows
               for second, count in counts.items())


def report(result: dict, print_table) -> None:
    print_table(f"N={result['nodes']}: the first job's phases (the driver's spans the blocks)",
                ["waiting ops/s", "joining ops/s", "driver ops/s", "teardown ops/s",
                 "one-time ops/node", "GCS up->all joined s", "last reg->seen s"],
                [[*result["rates"].values(), result["one_time_per_node"], result["join_s"],
                  result["delay_s"]]])
    rows = [[phase, *(None if v is None else round(v, 2) for v in figures.values())]
            for phase, figures in result["phases"].items()]
    print_table(f"N={result['nodes']} + {len(result['waves'])} wave(s) of late blocks: run "
                "directory ops/s (all processes), the head's alone, ray.nodes() calls/s",
                ["phase", "ops/s", "head ops/s", "nodes()/s"], rows)
    print_table("operations on the run directory per node",
                ["node of", "nodes", "ops/node", "one-time ops/node"],
                [[kind, f["nodes"], round(f["ops"], 2), round(f["one_time"], 2)]
                 for kind, f in result["per_node"].items()])
    for kind, figures in result["per_node"].items():
        print(f"{kind}: {json.dumps(figures['files'])}")
    for wave in result["waves"]:
        print(f"wave {','.join(wave['blocks'])}: all joined in {wave['join_s']:.1f} s, all "
              f"left {wave['leave_s']:.1f} s after the stop files")
    worst = max(v["ops_s"] for v in result["phases"].values() if v["ops_s"] is not None)
    block, first = result["per_node"]["block"], result["per_node"]["first job"]
    met = worst <= GOAL_OPS_S and block["one_time"] <= first["one_time"]
    print(f"\nlate blocks: <= {GOAL_OPS_S} ops/s in every block phase (worst {worst:.0f}); a "
          f"block's node costs the run directory no more than a first-job node (one-time "
          f"{block['one_time']:.1f} vs {first['one_time']:.1f}) -> "
          f"{'met' if met else 'NOT met'}; exit code {result['exit_code']}")
