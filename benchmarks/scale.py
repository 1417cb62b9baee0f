"""Scale simulator: N node agents as plain processes against a stand-in for Ray that starts at
once (benchmarks/sim_ray), the run directory on local disk, every metadata operation on it
counted per phase (see sim_ray/README.md for how).

For each N it prints the run directory's metadata operations per second in each phase summed
over all nodes, the one-time operations per node (all but the periodic looks at the stop
file and head.json and the head's status.json), the head's `ray.nodes()` calls per
second, the time from the head's GCS being up to "all joined" as a launcher sees it
(status.json polled every 0.2 s, as RunWatcher does), and the launcher's own delay from the
last node registering to that moment. Goals (issue 11): at N = 1024, <= 200 ops/s in every
phase, <= 10 ops per node, delay <= 1 s.

    .venv/bin/python benchmarks/scale.py [--nodes 64 256 1024] [--agent PATH] [--driver-s 10]

--agent runs another node program file in the run directory's `node_agent.pyz` place (a
node_agent.pyz of another checkout, or an old single-file agent: `git show
d903117:launcher/agent.py > old.py`) for before/after figures. Workers start first and wait
--wait-s seconds for the head (the waiting
phase), as they would while a real head starts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import machine, print_table  # noqa: E402

from rayhpc.launcher.backends.rundir import prepare_run_dir  # noqa: E402
from rayhpc.launcher.contract import RunPaths, block_node_name, read_json  # noqa: E402
from rayhpc.launcher.orchestration import resolve_spec  # noqa: E402
from rayhpc.launcher.resolve.config import load_site  # noqa: E402
from rayhpc.launcher.resolve.run_ids import new_run_id  # noqa: E402

SIM_RAY = Path(__file__).resolve().parent / "sim_ray"
BUCKET_S = 0.1
GOAL_OPS_S, GOAL_PER_NODE, GOAL_DELAY_S = 200, 10, 1.0
PHASES = ("waiting", "joining", "driver", "teardown")


def node_ip(index: int) -> str:
    """A loopback address of its own per simulated node (127.0.0.0/8 is all loopback)."""
    return f"127.0.{index // 250 + 1}.{index % 250 + 1}"


class Simulation:
    def __init__(self, nodes: int, work: Path, agent: Path | None, driver_s: float,
                 wait_s: float, join_timeout: int = 900, hang: frozenset[int] = frozenset(),
                 environ: dict | None = None, skewed: frozenset[int] = frozenset(),
                 driver: str | None = None):
        self.nodes = nodes
        self.work = work
        self.wait_s = wait_s
        self.hang = hang  # nodes whose `ray start` never registers
        self.environ = environ or {}  # for every agent, e.g. RAYHPC_SIM_GCS_DELAY_S
        # Nodes that see another Ray version: the package metadata of a Ray 2.59.0 ahead of the
        # stand-in's on their PYTHONPATH (as a site's PYTHONPATH with another Ray would put it).
        self.skewed = skewed
        self.skew_path = work / "skewed"
        if skewed:
            info = self.skew_path / "ray-2.59.0.dist-info"
            info.mkdir(parents=True)
            (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ray\nVersion: 2.59.0\n")
        shared = work / "shared"
        shared.mkdir(exist_ok=True)
        self.spec = resolve_spec(
            load_site("slurm"),
            {"nodes": nodes, "shared": str(shared), "image": "/sim/ray.sif",
             "driver": driver or f"python -c 'import time; time.sleep({driver_s})'",
             "join_timeout": join_timeout, "stop_timeout": 120},
            {}, run_id=new_run_id(), now=time.time())
        self.paths = RunPaths(prepare_run_dir(self.spec))
        if agent is not None:
            shutil.copyfile(agent, self.paths.node_program)
        self.counts = work / "counts"
        self.counts.mkdir()
        self.procs: list[subprocess.Popen] = []
        self.head_proc: subprocess.Popen | None = None
        self.seen_all: float | None = None

    def env(self, index: int, name: str) -> dict:
        hang = {"RAYHPC_SIM_HANG_START": "1"} if index in self.hang else {}
        path = f"{self.skew_path}:{SIM_RAY}" if index in self.skewed else str(SIM_RAY)
        return {**os.environ, **self.environ, **hang, "PYTHONPATH": path,
                "RAYHPC_SIM_COUNT": str(self.counts),
                "RAYHPC_SIM_RUN_DIR": str(self.paths.dir), "RAYHPC_HEAD_HOST": node_ip(0),
                "RAYHPC_NODE_IP": node_ip(index), "RAYHPC_SIM_NODE": name,
                "RAYHPC_NODE_TEMP_DIR": f"/tmp/rs{os.getpid() % 1000}/{index}",
                "HOME": str(self.work / "home")}

    def start(self, index: int, program: Path | None = None, block: str = ""
              ) -> subprocess.Popen:
        """Node ``index``'s agent: the run's node program, or a block's (``program``, with
        ``--block``, as a block's job script starts it)."""
        role = "head" if index == 0 else "worker"
        name = block_node_name(block, f"sim-{index:05d}") if block else f"sim-{index:05d}"
        proc = subprocess.Popen(
            [sys.executable, str(program or self.paths.node_program), "--run-dir",
             str(self.paths.dir), "--role", role, "--node-name", name,
             *(["--block", block] if block else [])],
            env=self.env(index, name), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        self.procs.append(proc)
        return proc

    def watch(self) -> None:
        """The launcher's view: status.json every 0.2 s until it says all joined."""
        while self.seen_all is None:
            status = read_json(self.paths.status) or {}
            if status.get("joined") == self.nodes:
                self.seen_all = time.time()
            elif self.paths.exit_code.exists():
                return
            time.sleep(0.2)

    def bring_up(self) -> tuple[float, float, float]:
        """Workers first, then (after the wait) the head; the three moments."""
        (self.work / "home").mkdir()
        t_spawn = time.time()
        for index in range(1, self.nodes):
            self.start(index)
        t_workers = time.time()
        time.sleep(self.wait_s)
        t_head = time.time()
        self.head_proc = self.start(0)
        threading.Thread(target=self.watch, daemon=True).start()
        return t_spawn, t_workers, t_head

    def wait(self, timeout: float = 1800) -> None:
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            proc.wait(timeout=max(1, deadline - time.monotonic()))

    @property
    def head(self) -> subprocess.Popen:
        return self.head_proc

    def run(self) -> dict:
        moments = self.bring_up()
        self.wait()
        time.sleep(0.3)  # the watcher's last look
        self.cleanup()
        return self.figures(*moments)

    def figures(self, t_spawn: float, t_workers: float, t_head: float) -> dict:
        timing = read_json(self.paths.timing) or {}
        buckets: dict[int, int] = {}
        total = periodic = 0
        for data in self.count_files():
            for second, count in data["per_second"].items():
                buckets[int(second)] = buckets.get(int(second), 0) + count
            if is_block_node(data.get("node", "")):
                continue  # per node: the first job's nodes (late blocks: see late_blocks.py)
            total += sum(data["per_second"].values())
            # Periodic, not one-time: the looks at the stop file (workers every 15 s while
            # they wait, the head once a second), a waiting worker's looks at head.json, the
            # head's status.json (see sim_ray/sitecustomize.py).
            periodic += data["kinds"].get("periodic", 0)
        gcs = read_json(self.counts / "gcs.json") or {"registered": {}, "nodes_calls": []}
        windows = {
            # The second half of the wait: every worker has started (a Python start-up of its
            # own on a few cores takes a while at large N) and waits for the head.
            "waiting": (t_head - self.wait_s / 2, t_head),
            "joining": (timing.get("t_head_up"), timing.get("t_all_joined")),
            "driver": (timing.get("t_driver_start"), timing.get("t_driver_end")),
            "teardown": (timing.get("t_driver_end"), timing.get("t_teardown_done")),
        }
        rates, calls = {}, {}
        for phase, (start, end) in windows.items():
            if not start or not end or end <= start:
                rates[phase] = calls[phase] = None
                continue
            # Whole seconds overlapping the window, weighted by the overlap.
            ops = sum(count * overlap(second, start, end) for second, count in buckets.items())
            rates[phase] = ops / (end - start)
            calls[phase] = sum(1 for t in gcs["nodes_calls"] if start <= t < end) / (end - start)
        first_job = {node_ip(index) for index in range(self.nodes)}  # not late blocks
        last = max((t for ip, t in gcs["registered"].items() if ip in first_job),
                   default=None)
        return {
            "nodes": self.nodes, "exit_code": self.paths.read_exit_code(),
            "joined": timing.get("nodes_joined"), "rates": rates, "nodes_calls": calls,
            "per_node": total / self.nodes, "one_time_per_node": (total - periodic) / self.nodes,
            "join_s": (self.seen_all - timing["t_head_up"]
                       if self.seen_all and timing.get("t_head_up") else None),
            "delay_s": self.seen_all - last if self.seen_all and last else None,
            "spawn_s": t_workers - t_spawn,
        }

    def count_files(self) -> list[dict]:
        """Each process's counts (sim_ray/sitecustomize.py), with its node's name."""
        return [json.loads(path.read_text()) for path in self.counts.glob("[0-9]*.json")]

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        # A stand-in GCS left by an agent that does not stop its node's Ray (the old agent's
        # `ray stop` is a no-op here): SIGTERM lets it write its figures first.
        gcs = f"ray._gcs {node_ip(0)} {self.spec.ports['gcs']}"
        if subprocess.run(["pkill", "-f", gcs], check=False).returncode == 0:
            time.sleep(1)
            subprocess.run(["pkill", "-9", "-f", gcs], check=False)
        shutil.rmtree(f"/tmp/rs{os.getpid() % 1000}", ignore_errors=True)


def is_block_node(name: str) -> bool:
    """A node of a grown block (`b2-sim-01024`), not of the launch's own job."""
    head, _, rest = name.partition("-")
    return bool(rest) and head[:1] == "b" and head[1:].isdigit()


def overlap(second: int, start: float, end: float) -> float:
    """How much of the second [second, second+1) lies in [start, end), as a fraction."""
    return max(0.0, min(second + 1, end) - max(second, start))


def simulate(nodes: int, agent: Path | None = None, driver_s: float = 10,
             wait_s: float = 10, keep: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="rayhpc-scale-") as work:
        sim = Simulation(nodes, Path(work), agent, driver_s, wait_s)
        try:
            return sim.run()
        finally:
            sim.cleanup()
            if keep:
                keep_records(sim.paths, keep / f"{nodes}")


def keep_records(paths: RunPaths, target: Path) -> None:
    """The run's records (timing.json, nodes.json, nodes/) and its timeline.svg, copied."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("timing.json", "nodes.json", "status.json", "timeline.svg"):
        if (paths.dir / name).exists():
            shutil.copy2(paths.dir / name, target / name)
    if paths.nodes.is_dir():
        shutil.copytree(paths.nodes, target / "nodes", dirs_exist_ok=True)
    print(f"records of the {paths.dir.name} run kept in {target}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--agent", type=Path,
                        help="node program file to run (default: this checkout's bundle)")
    parser.add_argument("--driver-s", type=float, default=10, help="seconds the driver runs")
    parser.add_argument("--wait-s", type=float,
                        help="seconds the workers wait for the head before it starts (default: "
                             "10, or 0.2 s per node: their own start-up must be over by half)")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="copy each run's records and timeline.svg to DIR/<N>/")
    parser.add_argument("--late-blocks", type=int, default=0, metavar="B",
                        help="the late-block case: B blocks join the running head of each N "
                             "and leave again (see late_blocks.py)")
    parser.add_argument("--block-nodes", type=int, default=128, help="nodes per late block")
    parser.add_argument("--blocks-at-once", type=int, default=2,
                        help="late blocks per wave (a wave joins, stays up, leaves)")
    parser.add_argument("--hold-s", type=float, default=10,
                        help="seconds a wave of blocks stays up (and the cluster without one)")
    args = parser.parse_args()
    print(f"machine: {machine()}\nagent: {args.agent or 'node_agent.pyz (this checkout)'}")
    if args.late_blocks:
        late_blocks_case(args)
        return
    rows = []
    for nodes in args.nodes:
        result = simulate(nodes, args.agent, args.driver_s, args.wait_s or max(10, nodes * 0.2),
                          args.keep)
        rows.append([nodes, *(result["rates"][p] for p in PHASES), result["one_time_per_node"],
                     result["nodes_calls"]["joining"], result["nodes_calls"]["driver"],
                     result["join_s"], result["delay_s"], result["exit_code"]])
        print(json.dumps(result), flush=True)
    print_table("run-directory metadata ops/s (all nodes), per node, head-side nodes() calls/s",
                ["N", *(f"{p} ops/s" for p in PHASES), "one-time ops/node", "nodes()/s join",
                 "nodes()/s driver", "GCS up->all joined s", "last reg->seen s", "exit"], rows)
    big = [r for r in rows if r[0] >= 1024] or rows[-1:]
    for row in big:
        worst = max(v for v in row[1:5] if v is not None)
        met = worst <= GOAL_OPS_S and row[5] <= GOAL_PER_NODE and (row[9] or 0) <= GOAL_DELAY_S
        print(f"\ngoal at N={row[0]}: <= {GOAL_OPS_S} ops/s in every phase (worst {worst:.0f}), "
              f"<= {GOAL_PER_NODE} one-time ops per node ({row[5]:.1f}), launcher delay <= "
              f"{GOAL_DELAY_S:.0f} s ({row[9] if row[9] is None else round(row[9], 2)}) -> "
              f"{'met' if met else 'NOT met'}")


def late_blocks_case(args: argparse.Namespace) -> None:
    from late_blocks import LateBlocks, report

    for nodes in args.nodes:
        with tempfile.TemporaryDirectory(prefix="rayhpc-scale-") as work:
            case = LateBlocks(nodes, Path(work), args.late_blocks, args.block_nodes,
                              args.blocks_at_once, args.hold_s,
                              args.wait_s or max(10, nodes * 0.2))
            try:
                result = case.go()
            finally:
                case.sim.cleanup()
                if args.keep:
                    keep_records(case.sim.paths, args.keep / f"{nodes}+blocks")
        print(json.dumps(result), flush=True)
        report(result, print_table)


if __name__ == "__main__":
    main()
