"""The head agent under load: ONE real head agent (the node program, against the stand-in for
Ray in sim_ray/, as scale.py runs it) and N-1 worker agents played by this one process (asyncio)
over the real control protocol: connect from an address of their own, the token hello, then
what a worker sends in the order it sends it (`waiting`, `starting` with its address, its
`ray start` registering at the stand-in GCS, `joined`), and at the head's "stop" its final
record, then the close. The protocol has no heartbeat (liveness is the connection itself), so
nothing is sent while the driver runs.

What it measures, for each N, side by side in one table:
- accept latency: a peer's connect() to the head's answer to its hello (the head's address),
  every peer at once (the worst case: a whole allocation starting in the same second);
- message round trip with N peers connected: late peers (the nodes of a block joining a
  running cluster) connect one at a time while the driver runs, hello to answer;
- the time from the first connect until the head counts all N joined (its timing.json), and
  until a launcher polling status.json sees it;
- the stop's fan-out (driver end to every peer told) and the last final record to the head's
  teardown done;
- the head's CPU seconds per phase and peak RSS (from /proc), its run-directory operations
  (counted by sim_ray/sitecustomize.py), status.json rewrites and sizes.

    .venv/bin/python benchmarks/head_load.py [--nodes 1024 10000] [--driver-s 10]
        [--connect-rate R] [--agent PATH]

--agent runs another node program file as the head for before/after figures: one built
without a spec inside, so that it reads this run's spec.json (in the other checkout:
`python -c "from rayhpc.launcher.backends import bundle; open('old.pyz', 'wb').write(
bundle.node_program(''))"`). This process needs about N + 100 open files (its soft limit is
raised to the hard one; the head raises its own, and starts here with a soft limit of 1024 to
show it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import machine, print_table  # noqa: E402
from scale import Simulation, node_ip, overlap  # noqa: E402

from rayhpc.launcher.contract import read_json  # noqa: E402
from rayhpc.launcher.node.channel import backoff, secret_of  # noqa: E402

HEAD_UP_TIMEOUT_S = 60
LATE_PEERS = 50  # joining one at a time while the driver runs
GCS_SLOTS = 64  # `ray start`s registering at once (a real one takes seconds; not all at once)
SAMPLE_S = 0.1  # how often the head's /proc figures are read
# The final records come over this long after "stop" (real workers spread theirs over
# harvest_spread_s: 14 s at 1,024 nodes, 60 s at 10,000; here a harsher burst), which also
# keeps this one process free to note when each "stop" arrives.
FINAL_SPREAD_S = 5.0
STALL_S = 120  # the run is given up when no peer gets further for this long
GOAL_GROWTH = 1.5  # the head's CPU per node and round trip may grow this much from small N
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Peer:
    """One simulated worker agent and what it saw, in epoch seconds."""
    name: str
    ip: str
    t_connect: float = 0.0  # connect() started (the last try)
    t_hello: float = 0.0  # hello sent
    t_head: float = 0.0  # the head's address received
    t_joined: float = 0.0  # `joined` sent
    t_stop: float = 0.0  # "stop" received
    t_final: float = 0.0  # final record sent
    retries: int = 0
    head: dict | None = None
    heard: asyncio.Event = field(default_factory=asyncio.Event)
    told_stop: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class PeerProtocol(asyncio.Protocol):
    """A worker's end of the control connection: JSON lines both ways."""

    def __init__(self, peer: Peer, secret: str):
        self.peer = peer
        self.secret = secret
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def send(self, **message: object) -> None:
        assert self.transport is not None
        self.transport.write((json.dumps(message) + "\n").encode())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send(node=self.peer.name, secret=self.secret, group="")
        self.peer.t_hello = time.time()
        self.send(state="waiting")  # as a worker does at once, before it knows the head

    def data_received(self, data: bytes) -> None:
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        for line in lines:
            message = json.loads(line)
            if "head" in message and not self.peer.heard.is_set():
                self.peer.t_head = time.time()
                self.peer.head = message["head"]
                self.peer.heard.set()
            if "stop" in message and not self.peer.told_stop.is_set():
                self.peer.t_stop = time.time()
                self.peer.told_stop.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.peer.closed.set()
        self.peer.heard.set()
        self.peer.told_stop.set()


class Peers:
    """N-1 worker agents (and the late ones) in one event loop."""

    def __init__(self, head_ip: str, port: int, token: str, nodes: int,
                 final_spread_s: float = FINAL_SPREAD_S):
        self.head_ip, self.port, self.nodes = head_ip, port, nodes
        self.final_spread_s = final_spread_s
        self.secret = secret_of(token)
        self.gcs_slots = asyncio.Semaphore(GCS_SLOTS)

    async def connect(self, peer: Peer) -> PeerProtocol:
        """Probe the head's port as a worker does: connect, backoff on refusal. No timeout of
        our own: a SYN the head's full backlog dropped is sent again by the kernel (1 s, 3 s,
        ...), which is what a worker's timed-out connect and retry amount to; one event loop
        opening thousands at once must not cancel those it has not got round to."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            peer.t_connect = time.time()
            try:
                _, protocol = await loop.create_connection(
                    lambda: PeerProtocol(peer, self.secret), self.head_ip, self.port,
                    local_addr=(peer.ip, 0))
                return protocol
            except OSError:
                peer.retries += 1
                await asyncio.sleep(backoff(attempt))
                attempt += 1

    async def register(self, peer: Peer, address: str) -> None:
        """The stand-in's `ray start`: the node registers at the GCS (Ray's count confirms)."""
        host, port = address.rsplit(":", 1)
        async with self.gcs_slots:
            reader, writer = await asyncio.open_connection(host, int(port),
                                                           local_addr=(peer.ip, 0))
            writer.write((json.dumps({"op": "register", "ip": peer.ip}) + "\n").encode())
            await writer.drain()
            await reader.readline()
            writer.close()

    async def play(self, peer: Peer, joined: asyncio.Event | None = None,
                   delay: float = 0.0) -> None:
        await asyncio.sleep(delay)
        protocol = await self.connect(peer)
        await peer.heard.wait()
        if peer.head is None:
            return  # the head closed on us
        protocol.send(state="starting", ip=peer.ip)
        await self.register(peer, peer.head["address"])
        protocol.send(state="joined", ip=peer.ip)
        peer.t_joined = time.time()
        if joined is not None:
            joined.set()
        await peer.told_stop.wait()
        await asyncio.sleep(random.uniform(0, self.final_spread_s))
        if peer.closed.is_set():
            return
        record = {"node": peer.name, "state": "stopped", "ip": peer.ip, "hostname": peer.name,
                  "pid": os.getpid(), "time": time.time(),
                  "logs": {"archive": f"{peer.name}.tar.gz", "files_kept": 5,
                           "bytes_kept": 6100, "files_dropped": 0, "bytes_dropped": 0}}
        protocol.send(state="stopped", reason="the head said stop", final=record)
        peer.t_final = time.time()
        assert protocol.transport is not None
        protocol.transport.close()


class HeadWatch:
    """The head's process from /proc: CPU seconds and RSS every SAMPLE_S; status.json as a
    launcher polls it (every 0.2 s, parsed only when it changed)."""

    def __init__(self, pid: int, status: Path, nodes: int):
        self.pid, self.status, self.nodes = pid, status, nodes
        self.samples: list[tuple[float, float, int]] = []  # (time, cpu s, rss KiB)
        self.peak_kib = 0
        self.seen_all: float | None = None
        self.done = False
        threading.Thread(target=self._sample, daemon=True).start()

    def read(self) -> tuple[float, int] | None:
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
        vm = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if "VmHWM" in vm:
            self.peak_kib = max(self.peak_kib, int(vm["VmHWM"].split()[0]))
        rss = int(vm["VmRSS"].split()[0]) if "VmRSS" in vm else 0
        return cpu, rss

    def _sample(self) -> None:
        mtime, next_status = 0.0, 0.0
        while not self.done:
            now = time.time()
            figures = self.read()
            if figures is not None and (figures[1] or not self.samples):
                self.samples.append((now, *figures))
            if self.seen_all is None and now >= next_status:
                next_status = now + 0.2
                try:
                    changed = self.status.stat().st_mtime
                except OSError:
                    changed = mtime
                if changed != mtime:
                    mtime = changed
                    if (read_json(self.status) or {}).get("joined") == self.nodes:
                        self.seen_all = time.time()
            time.sleep(SAMPLE_S)

    def at(self, moment: float | None) -> tuple[float, int] | None:
        """CPU seconds and RSS at the last sample before ``moment``."""
        if moment is None:
            return None
        before = [s for s in self.samples if s[0] <= moment]
        return (before[-1][1], before[-1][2]) if before else None


def open_files_limit(pid: int) -> int | None:
    """A process's soft limit on open files, from /proc."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return None


def raise_own_fd_limit(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < needed:
        try:  # root may raise the hard limit (up to fs.nr_open)
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return needed
        except (ValueError, OSError):
            raise SystemExit(f"error: {needed} open files needed, the hard limit is {hard}: "
                             f"raise it (ulimit -Hn {needed} as root, or limits.conf)") from None
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def head_soft_limit() -> None:
    """The head starts with the common default soft limit: it must raise its own."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))


class HeadLoad(Simulation):
    """scale.py's run directory and stand-in for Ray; one real head, the workers played."""

    def start_head(self) -> subprocess.Popen:
        (self.work / "home").mkdir(exist_ok=True)
        self.out = open(self.work / "head.out", "wb")  # noqa: SIM115 (closed in cleanup)
        proc = subprocess.Popen(
            [sys.executable, str(self.paths.node_program), "--run-dir", str(self.paths.dir),
             "--role", "head", "--node-name", "sim-00000"],
            env=self.env(0, "sim-00000"), stdout=self.out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=head_soft_limit)
        self.procs.append(proc)
        return proc

    def head_output(self, last: int = 20) -> str:
        return "\n".join((self.work / "head.out").read_text(errors="replace").splitlines()[-last:])

    async def drive(self, proc: subprocess.Popen, watch: HeadWatch) -> dict:
        deadline = time.monotonic() + HEAD_UP_TIMEOUT_S
        while not self.paths.head.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the head did not come up:\n{self.head_output()}")
            await asyncio.sleep(0.05)
        self.head_nofile = open_files_limit(proc.pid)
        peers = Peers(node_ip(0), self.spec.ports["agent"],
                      self.paths.auth_token.read_text().strip(), self.nodes, self.final_spread_s)
        crowd = [Peer(f"sim-{i:05d}", node_ip(i)) for i in range(1, self.nodes)]
        t_storm = time.time()
        pace = 1 / self.connect_rate if self.connect_rate else 0.0
        tasks = [asyncio.ensure_future(peers.play(peer, delay=i * pace))
                 for i, peer in enumerate(crowd)]
        # Late peers, one at a time, once the driver runs (every node joined).
        progress, since = (), time.monotonic()
        while watch.seen_all is None:
            if proc.poll() is not None:
                raise RuntimeError(f"the head ended early:\n{self.head_output()}")
            now = (sum(1 for p in crowd if p.t_head), sum(1 for p in crowd if p.t_joined))
            if now != progress:
                progress, since = now, time.monotonic()
            elif time.monotonic() - since > STALL_S:
                raise RuntimeError(f"no progress for {STALL_S} s: {now[0]} peers have the "
                                   f"head's address, {now[1]} joined; the head says:\n"
                                   f"{self.head_output()}")
            await asyncio.sleep(0.5)
        t_late = time.time()
        late = []
        for index in range(LATE_PEERS):
            peer = Peer(f"late-{index:03d}", node_ip(self.nodes + index))
            joined = asyncio.Event()
            late.append(peer)
            tasks.append(asyncio.ensure_future(peers.play(peer, joined)))
            await joined.wait()
        t_late_done = time.time()
        await asyncio.gather(*tasks)
        return {"t_storm": t_storm, "crowd": crowd, "late": late,
                "late_window": (t_late, t_late_done)}

    connect_rate = 0.0  # the peers' first connects per second (0: all at once)
    final_spread_s = FINAL_SPREAD_S

    def measure(self, driver_s: float) -> dict:
        cpu0 = time.process_time()
        proc = self.start_head()
        t_start = time.time()
        watch = HeadWatch(proc.pid, self.paths.status, self.nodes)
        try:
            seen = asyncio.run(self.drive(proc, watch))
        finally:
            # The head's last CPU figure: from its zombie, before it is reaped.
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
            final = watch.read()
            watch.done = True
            proc.wait()
        peers_cpu = time.process_time() - cpu0
        return self.figures_of(seen, watch, final, t_start, peers_cpu, driver_s)

    def figures_of(self, seen: dict, watch: HeadWatch, final: tuple[float, int] | None,
                   t_start: float, peers_cpu: float, driver_s: float) -> dict:
        timing = read_json(self.paths.timing) or {}
        crowd, late = seen["crowd"], seen["late"]
        t_storm = seen["t_storm"]
        t_all, t_d0 = timing.get("t_all_joined"), timing.get("t_driver_start")
        t_d1, t_done = timing.get("t_driver_end"), timing.get("t_teardown_done")
        cpu_end = final[0] if final else watch.samples[-1][1]

        def cpu(a: float | None, b: float | None) -> float | None:
            """CPU seconds between two moments (None: the head's end)."""
            start = (0.0, 0) if a == t_start else watch.at(a)
            end = (cpu_end, 0) if b is None else watch.at(b)
            return end[0] - start[0] if start and end else None

        def ms(values: list[float]) -> dict:
            values = sorted(v * 1000 for v in values)
            if not values:
                return {"p50": None, "p99": None, "max": None}
            return {"p50": statistics.median(values),
                    "p99": values[min(len(values) - 1, int(len(values) * 0.99))],
                    "max": values[-1]}

        rss_before, rss_joined = watch.at(t_storm), watch.at(t_all)
        counts = self.head_counts()
        windows = {"start": (t_start, t_storm), "joining": (t_storm, t_all),
                   "driver": (t_d0, t_d1), "teardown": (t_d1, t_done)}
        rates = {}
        for phase, (a, b) in windows.items():
            rates[phase] = (sum(n * overlap(s, a, b) for s, n in counts["per_second"].items())
                            / (b - a)) if a and b and b > a else None
        status = self.paths.status
        told = [p.t_stop for p in crowd if p.t_stop]
        return {
            "nodes": self.nodes, "exit_code": self.paths.read_exit_code(),
            "head_nofile": getattr(self, "head_nofile", None),
            "joined": timing.get("nodes_joined"),
            "retries": sum(p.retries for p in crowd),
            "accept_ms": ms([p.t_head - p.t_connect for p in crowd if p.t_head]),
            "hello_rtt_ms": ms([p.t_head - p.t_hello for p in crowd if p.t_head]),
            "late_rtt_ms": ms([p.t_head - p.t_hello for p in late if p.t_head]),
            "late_accept_ms": ms([p.t_head - p.t_connect for p in late if p.t_head]),
            "all_joined_s": t_all - t_storm if t_all else None,
            "last_joined_to_counted_s": (t_all - max(p.t_joined for p in crowd)
                                         if t_all else None),
            "launcher_sees_s": watch.seen_all - t_all if watch.seen_all and t_all else None,
            "messages_per_s": (4 * len(crowd) / (t_all - t_storm)) if t_all else None,
            "stop_ms": ms([t - t_d1 for t in told] if t_d1 else []),
            "stop_fanout_ms": (max(told) - min(told)) * 1000 if told else None,
            "last_final_to_done_s": (t_done - max(p.t_final for p in crowd)
                                     if t_done and all(p.t_final for p in crowd) else None),
            "cpu_s": {"start": cpu(t_start, t_storm), "joining": cpu(t_storm, t_all),
                      "driver": cpu(t_d0, t_d1), "teardown": cpu(t_d1, None) if t_d1 else None,
                      "total": cpu_end},
            "driver_s": (t_d1 - t_d0) if t_d0 and t_d1 else None,
            "rss_mib": {"before": rss_before[1] / 1024 if rss_before else None,
                        "joined": rss_joined[1] / 1024 if rss_joined else None,
                        "peak": watch.peak_kib / 1024},
            "rss_kib_per_peer": ((rss_joined[1] - rss_before[1]) / len(crowd)
                                 if rss_before and rss_joined else None),
            "rundir_ops": counts["total"], "rundir_ops_s": rates,
            "status_writes": counts["files"].get("open /status.json", 0),
            "status_kib": status.stat().st_size / 1024 if status.exists() else None,
            "nodes_json_kib": (self.paths.nodes_file.stat().st_size / 1024
                               if self.paths.nodes_file.exists() else None),
            "records": len(read_json(self.paths.nodes_file) or {}),
            "status_mib_written": (counts["files"].get("open /status.json", 0)
                                   * status.stat().st_size / 2**20 if status.exists() else None),
            "head_log_lines": len(self.paths.node_log("sim-00000").read_text().splitlines())
            if self.paths.node_log("sim-00000").exists() else None,
            "peers_cpu_s": peers_cpu,
        }

    def head_counts(self) -> dict:
        """The head agent's run-directory operations (sim_ray/sitecustomize.py's file of the
        head's process; the stand-in GCS and CLI's are not the agent's)."""
        mine = self.counts / f"{self.procs[-1].pid}.json"
        data = json.loads(mine.read_text()) if mine.exists() else {"per_second": {}, "files": {}}
        per_second = {int(s): n for s, n in data["per_second"].items()}
        return {"per_second": per_second, "total": sum(per_second.values()),
                "files": data.get("files", {})}

    def cleanup(self) -> None:
        super().cleanup()
        if getattr(self, "out", None) is not None:
            self.out.close()


def measure(nodes: int, driver_s: float = 10, agent: Path | None = None,
            connect_rate: float = 0.0, final_spread_s: float = FINAL_SPREAD_S) -> dict:
    raise_own_fd_limit(nodes + LATE_PEERS + GCS_SLOTS + 200)
    with tempfile.TemporaryDirectory(prefix="rayhpc-headload-") as work:
        load = HeadLoad(nodes, Path(work), agent, driver_s, wait_s=0)
        load.connect_rate, load.final_spread_s = connect_rate, final_spread_s
        try:
            return load.measure(driver_s)
        finally:
            load.cleanup()


def rows_of(results: list[dict]) -> list[list[object]]:
    """One row per figure, one column per N, and the ratio of the last N to the first."""
    def get(result: dict, path: str) -> object:
        value: object = result
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        return value

    figures = [
        ("peers (one process) + head", "nodes"), ("exit code", "exit_code"),
        ("head's open-files soft limit (started at 1024)", "head_nofile"),
        ("head counted joined", "joined"), ("connect retries", "retries"),
        ("accept: connect -> head's answer p50 ms", "accept_ms.p50"),
        ("accept p99 ms", "accept_ms.p99"), ("accept max ms", "accept_ms.max"),
        ("hello -> answer, join storm p50 ms", "hello_rtt_ms.p50"),
        ("hello -> answer, join storm p99 ms", "hello_rtt_ms.p99"),
        ("round trip, N connected (late peers) p50 ms", "late_rtt_ms.p50"),
        ("round trip, N connected p99 ms", "late_rtt_ms.p99"),
        ("round trip, N connected max ms", "late_rtt_ms.max"),
        ("first connect -> head counts all joined s", "all_joined_s"),
        ("last `joined` sent -> head counts it s", "last_joined_to_counted_s"),
        ("head's count -> launcher sees it s", "launcher_sees_s"),
        ("control messages handled per s (joining)", "messages_per_s"),
        ("driver end -> peer told stop p50 ms", "stop_ms.p50"),
        ("driver end -> peer told stop max ms", "stop_ms.max"),
        ("stop fan-out, first to last peer ms", "stop_fanout_ms"),
        ("last final record -> teardown done s", "last_final_to_done_s"),
        ("head CPU s: start", "cpu_s.start"), ("head CPU s: joining", "cpu_s.joining"),
        ("head CPU s: driver (idle, N connected)", "cpu_s.driver"),
        ("  driver phase length s", "driver_s"),
        ("head CPU s: teardown", "cpu_s.teardown"), ("head CPU s: total", "cpu_s.total"),
        ("head RSS MiB before the peers", "rss_mib.before"),
        ("head RSS MiB, all joined", "rss_mib.joined"), ("head peak RSS MiB", "rss_mib.peak"),
        ("head RSS KiB per peer", "rss_kib_per_peer"),
        ("head run-dir ops, total", "rundir_ops"),
        ("head run-dir ops/s joining", "rundir_ops_s.joining"),
        ("head run-dir ops/s driver", "rundir_ops_s.driver"),
        ("head run-dir ops/s teardown", "rundir_ops_s.teardown"),
        ("status.json rewrites", "status_writes"), ("status.json KiB", "status_kib"),
        ("status.json MiB written (at most)", "status_mib_written"),
        ("nodes.json KiB", "nodes_json_kib"), ("nodes.json records", "records"),
        ("head agent log lines", "head_log_lines"),
        ("peer simulator's own CPU s", "peers_cpu_s"),
    ]
    rows = []
    for label, path in figures:
        values = [get(r, path) for r in results]
        first, last = values[0], values[-1]
        ratio = (last / first if len(values) > 1 and isinstance(first, (int, float))
                 and isinstance(last, (int, float)) and first else None)
        rows.append([label, *values, ratio])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1024, 10000])
    parser.add_argument("--driver-s", type=float, default=10,
                        help="seconds the driver runs (the idle phase; late peers join in it)")
    parser.add_argument("--connect-rate", type=float, default=0.0,
                        help="the peers' first connects per second (default 0: all at once, "
                             "the worst case; srun starts a large job's tasks over seconds)")
    parser.add_argument("--agent", type=Path,
                        help="node program file to run as the head (default: this checkout's)")
    args = parser.parse_args()
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the start"
          f"\nhead: {args.agent or 'node_agent.pyz (this checkout)'}"
          f"\nfirst connects: {f'{args.connect_rate:g}/s' if args.connect_rate else 'all at once'}")
    results = []
    for nodes in args.nodes:
        results.append(measure(nodes, args.driver_s, args.agent, args.connect_rate))
        print(json.dumps(results[-1]), flush=True)
    print_table("one real head agent, N-1 simulated workers on its protocol",
                ["figure", *(f"N={r['nodes']}" for r in results), "last/first"],
                rows_of(results))
    if len(results) > 1:
        print(goal_line(results[0], results[-1]))


def goal_line(small: dict, big: dict) -> str:
    """The head's work per node and its round trip with N connected do not grow with N."""
    per_node = [r["cpu_s"]["total"] / r["nodes"] for r in (small, big)]
    rtt = [r["late_rtt_ms"]["p50"] for r in (small, big)]
    whole = all(r["exit_code"] == 0 and r["joined"] == r["nodes"] for r in (small, big))
    met = whole and per_node[1] <= GOAL_GROWTH * per_node[0] and rtt[1] <= GOAL_GROWTH * rtt[0]
    return (f"\ngoal from N={small['nodes']} to N={big['nodes']}: every node counted, exit 0 "
            f"({'yes' if whole else 'NO'}); head CPU per node {per_node[0] * 1000:.2f} -> "
            f"{per_node[1] * 1000:.2f} ms and round trip with N connected {rtt[0]:.2f} -> "
            f"{rtt[1]:.2f} ms, each <= {GOAL_GROWTH}x -> {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
