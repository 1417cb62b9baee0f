"""Bring-up: launch to all N nodes joined, and to the first task finished, for N = 2..6 nodes
on the local site, three ways side by side on the same image:

  (a) launcher  `invoke launch --site local` (compose, node agents, rendezvous, token auth);
  (b) floor     every container started at once, workers retrying `ray start`, the head
                polling the GCS every 20 ms; no launcher logic at all;
  (c) template  the Ray documentation's Slurm template's waits: head, `sleep 10`, then one
                worker every `sleep 5`, then the driver.

Goals: (a)/(b) <= 1.3 and flat in N; (c)/(a) >= 4 at N = 6.

    .venv/bin/python benchmarks/bringup.py [--nodes 2 3 4 5 6] [--repeat 1] [--image TAG]
"""

from __future__ import annotations

import argparse
import secrets
import threading
import time

from harness import (
    PlainCluster,
    ensure_image,
    launch,
    machine,
    median,
    print_table,
    shared_dir,
    stamp,
)

GCS_PORT = 6379
HEAD_START = f"ray start --head --port={GCS_PORT} --disable-usage-stats"
TEMPLATE_HEAD_WAIT_S = 10  # the template's `sleep 10` after starting the head
TEMPLATE_WORKER_WAIT_S = 5  # and `sleep 5` after each worker


def with_launcher(image: str, nodes: int) -> tuple[float, float]:
    with shared_dir() as shared:
        t0 = time.time()
        result, _, timing = launch(image, shared, nodes, "python first_task.py")
        return timing["t_all_joined"] - t0, stamp(result.stdout, "first_task_at") - t0


def floor(image: str, nodes: int) -> tuple[float, float]:
    with PlainCluster(image, f"rayhpc-bench-floor-{secrets.token_hex(3)}") as cluster:
        worker = (f"until ray start --address=head:{GCS_PORT} --disable-usage-stats; "
                  "do sleep 0.1; done; sleep infinity")
        commands = [("head", f"{HEAD_START} && python /bench/poll_then_task.py {nodes} "
                             f"head:{GCS_PORT}")]
        commands += [(f"worker-{i}", worker) for i in range(1, nodes)]
        t0 = time.time()
        threads = [threading.Thread(target=cluster.start, args=c) for c in commands]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        head = cluster.containers[[c.name for c in cluster.containers].index(
            f"{cluster.name}-head")]
        joined = cluster.wait_for_line(head, "all_joined_at")
        first = cluster.wait_for_line(head, "first_task_at")
        return joined - t0, first - t0


def template(image: str, nodes: int) -> tuple[float, float]:
    with PlainCluster(image, f"rayhpc-bench-template-{secrets.token_hex(3)}") as cluster:
        t0 = time.time()
        head = cluster.start("head", f"{HEAD_START} --block")
        time.sleep(TEMPLATE_HEAD_WAIT_S)
        for i in range(1, nodes):
            cluster.start(f"worker-{i}",
                          f"ray start --address=head:{GCS_PORT} --disable-usage-stats --block")
            time.sleep(TEMPLATE_WORKER_WAIT_S)
        driver_start = time.time()  # where the template runs the driver
        result = head.exec_run(["python", "/bench/first_task.py"])
        return driver_start - t0, stamp(result.output.decode(), "first_task_at") - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, nargs="+", default=[2, 3, 4, 5, 6])
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell (median shown)")
    parser.add_argument("--image", help="image to run (default: the ray recipe's cpu image)")
    args = parser.parse_args()
    image = ensure_image(args.image)
    print(f"machine: {machine()}\nimage: {image}; median of {args.repeat} run(s) per cell")
    methods = {"a": with_launcher, "b": floor, "c": template}
    rows = []
    for nodes in args.nodes:
        ready: dict[str, list[float]] = {m: [] for m in methods}
        first: dict[str, list[float]] = {m: [] for m in methods}
        for _ in range(args.repeat):
            for name, method in methods.items():
                joined, task = method(image, nodes)
                ready[name].append(joined)
                first[name].append(task)
        r = {m: median(v) for m, v in ready.items()}
        f = {m: median(v) for m, v in first.items()}
        rows.append([nodes, r["a"], r["b"], r["c"], r["a"] / r["b"], r["c"] / r["a"],
                     f["a"], f["b"], f["c"]])
        print(f"  N={nodes}: a {r['a']:.1f} s, b {r['b']:.1f} s, c {r['c']:.1f} s", flush=True)
    print_table("bring-up, seconds from launch (ready = all nodes joined; for (c), where the "
                "template starts the driver)",
                ["N", "ready a", "ready b", "ready c", "a/b", "c/a", "1st task a",
                 "1st task b", "1st task c"], rows)
    worst = max(row[4] for row in rows)
    at_max = rows[-1]
    print(f"\ngoal (a)/(b) <= 1.3 for every N: worst {worst:.2f} -> "
          f"{'met' if worst <= 1.3 else 'NOT met'}")
    print(f"goal (c)/(a) >= 4 at N = {at_max[0]}: {at_max[5]:.2f} -> "
          f"{'met' if at_max[5] >= 4 else 'NOT met'}")
    # The floor bounds what any launcher can reach on this machine.
    print(f"for scale, (c)/(b) at N = {at_max[0]}: {at_max[3] / at_max[2]:.2f}")


if __name__ == "__main__":
    main()
