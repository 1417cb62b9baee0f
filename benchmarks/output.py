"""A driver that writes a lot: the launcher's memory, the bytes stored, and the console.

One local launch (1 node) whose driver writes ``--mb`` MB of 100-byte lines, followed to the end
with its console read by this script (every line counted, nothing kept), which stops reading for
``--pause-s`` at the first line (a terminal on hold: Ctrl-S, a stalled SSH connection) and then
reads at ``--console-mbps`` (0: as fast as it comes): the launcher falls behind, and must not
hold the backlog in memory. Printed per checkout:
the launcher's peak RSS (the largest process of its tree: `wait4`'s ru_maxrss, at least this
script's own size when it started the launcher, which Linux carries across fork and exec; and
its own VmHWM, sampled while its output is read), wall time,
driver lines that reached the console, and what the run directory stores (driver.log,
logs/containers.log). With ``--before DIR`` (a checkout of an older revision, e.g. `git worktree
add /tmp/before <rev>`), the same launch runs from there too, side by side.
Then the same for `invoke submit` of a job writing ``--job-mb`` MB onto an interactive cluster
(it used to fetch the job's whole log every 0.5 s).
Goal: peak RSS does not grow with the output (<= 2x that of a 1 MB driver, and under 200 MB);
the driver's output stored once; every line on the console.

    .venv/bin/python benchmarks/output.py [--mb 300] [--job-mb 50] [--pause-s 20]
        [--console-mbps 0] [--before DIR] [--image TAG]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from harness import ROOT, ensure_image, machine, print_table, shared_dir

LINE = 100  # bytes per driver line, newline included
RSS_GOAL_MB = 200
DRIVER = ("python -c 'import sys\nw = sys.stdout.buffer.write\nfor i in range({n}): "
          "w(b\"%09d \" % i + b\"x\" * 89 + b\"\\n\")'")


def one(checkout: Path, image: str, mb: int, console_mbps: float) -> list[object]:
    """Launch from ``checkout``; its row of the table."""
    lines = mb * 10**6 // LINE
    with shared_dir() as shared:
        # Its rayhpc, not this one's (`python -m` puts the working directory first on sys.path).
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "invoke", "-r", str(checkout), "launch", "--site", "local",
             "--image", image, "--shared", str(shared), "--nodes", "1",
             "--driver", DRIVER.format(n=lines)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=checkout)
        seen, in_order, run_id = read_console(proc, started, console_mbps)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        run_dir = shared / "runs" / run_id
        stored = {name: (run_dir / name).stat().st_size if (run_dir / name).exists() else 0
                  for name in ("driver.log", "logs/containers.log")}
        return [str(checkout), proc.returncode, usage.ru_maxrss / 1024, proc.hwm, wall,
                f"{seen}/{lines}{'' if in_order else ' (out of order)'}",
                stored["driver.log"] / 1e6, stored["logs/containers.log"] / 1e6]


def high_water_mb(pid: int) -> float:
    """The process's own peak RSS so far (VmHWM), MB; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


PAUSE_S = [0.0]  # the console stops reading this long at the driver's first line (--pause-s)


def read_console(proc: subprocess.Popen, started: float, console_mbps: float
                 ) -> tuple[int, bool, str]:
    """Numbered lines seen on a command's console, whether in order, and the run id said."""
    seen, run_id, last, read = 0, "", -1, 0
    proc.hwm = 0.0  # the launcher process's own peak, sampled as its output is read
    in_order = True
    assert proc.stdout is not None
    for raw in proc.stdout:
        read += len(raw)
        if seen % 2000 == 0:
            proc.hwm = max(proc.hwm, high_water_mb(proc.pid))
        ahead = read / (console_mbps * 1e6) - (time.monotonic() - started) if console_mbps \
            else 0.0
        if ahead > 0:
            time.sleep(ahead)
        if len(raw) == LINE and raw[9:10] == b" ":
            if seen == 0 and PAUSE_S[0]:  # a terminal on hold (Ctrl-S, a stalled SSH)
                time.sleep(PAUSE_S[0])
                started -= PAUSE_S[0]
            number = int(raw[:9])
            in_order = in_order and number == last + 1
            last = number
            seen += 1
        elif not run_id and (match := re.match(rb"rayhpc: run (\S+): ", raw)):
            run_id = match.group(1).decode()
        elif raw.startswith((b"rayhpc: warning", b"rayhpc: error")):
            print(f"  ({proc.args[proc.args.index('-r') + 1]}) {raw.decode().strip()}")
    return seen, in_order, run_id


def submit_rows(checkouts: list[Path], image: str, mb: int, console_mbps: float
                ) -> list[list[object]]:
    """`invoke submit` of a job writing ``mb`` MB, from each checkout, onto one interactive
    cluster launched from this one."""
    lines = mb * 10**6 // LINE
    job = DRIVER.format(n=lines)[len("python -c '"):-1]
    rows = []
    with shared_dir() as shared:
        up = subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), "launch",
                             "--site", "local", "--image", image, "--shared", str(shared),
                             "--nodes", "1", "--detach"], capture_output=True, text=True)
        run_id = re.search(r"rayhpc: run (\S+): ", up.stdout).group(1)
        try:
            for checkout in checkouts:
                started = time.monotonic()
                proc = subprocess.Popen(
                    [sys.executable, "-m", "invoke", "-r", str(checkout), "submit", "--run",
                     run_id, "--shared", str(shared), "--", "python", "-c", job],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                    env={**os.environ, "PYTHONPATH": str(checkout)}, cwd=checkout)
                seen, in_order, _ = read_console(proc, started, console_mbps)
                _, status, usage = os.wait4(proc.pid, 0)
                rows.append([str(checkout), mb, os.waitstatus_to_exitcode(status),
                             usage.ru_maxrss / 1024, proc.hwm, time.monotonic() - started,
                             f"{seen}/{lines}{'' if in_order else ' (out of order)'}"])
        finally:
            subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), "down", "--run",
                            run_id, "--shared", str(shared)], capture_output=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=300, help="MB the driver writes")
    parser.add_argument("--console-mbps", type=float, default=0,
                        help="how fast the console takes the output (MB/s; 0: unlimited)")
    parser.add_argument("--pause-s", type=float, default=20,
                        help="the console stops reading this long at the first line")
    parser.add_argument("--job-mb", type=int, default=50, help="MB the submitted job writes")
    parser.add_argument("--before", type=Path, help="an older checkout to compare with")
    parser.add_argument("--image", help="image to run (default: the ray recipe's cpu image)")
    args = parser.parse_args()
    image = ensure_image(args.image)
    PAUSE_S[0] = args.pause_s
    print(f"machine: {machine()}\nimage: {image}; a 1-node launch, driver writing {args.mb} MB "
          f"and 1 MB; the console stops reading for {args.pause_s} s at the first line, then "
          f"reads at {args.console_mbps or 'unlimited'} MB/s")
    rows = []
    for checkout in [c for c in (args.before, ROOT) if c]:
        for mb in (1, args.mb):
            rows.append([str(checkout), mb,
                         *one(checkout.resolve(), image, mb, args.console_mbps)[1:]])
    print_table("driver output: launcher memory, wall time, console, run directory",
                ["checkout", "MB", "exit", "peak RSS MB", "VmHWM MB", "wall s",
                 "lines on console", "driver.log MB", "containers.log MB"], rows)
    checkouts = [c.resolve() for c in (args.before, ROOT) if c]
    print_table(f"invoke submit of a job writing {args.job_mb} MB",
                ["checkout", "MB", "exit", "peak RSS MB", "VmHWM MB", "wall s",
                 "lines on console"],
                submit_rows(checkouts, image, args.job_mb, args.console_mbps))
    for checkout in {row[0] for row in rows}:
        small, big = [row for row in rows if row[0] == checkout]
        ratio = big[3] / small[3]
        print(f"{checkout}: peak RSS {big[3]:.0f} MB at {args.mb} MB vs {small[3]:.0f} MB at "
              f"1 MB ({ratio:.2f}x; goal <= 2x and <= {RSS_GOAL_MB} MB: "
              f"{'met' if ratio <= 2 and big[3] <= RSS_GOAL_MB else 'NOT met'})")


if __name__ == "__main__":
    main()
