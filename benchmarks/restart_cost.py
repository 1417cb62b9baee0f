"""What a restart (`--restarts`) costs on the shared file system, next to what a new launch
costs there: every file-system call on the run directory, counted with strace, side by side.

- launch: `rayhpc launch`'s own writes before any node starts (the run directory made as
  `prepare_run_dir` makes it, the job script written), in a process of its own;
- restart: the job script's rotation as attempt 2 starts (its rendered lines, in bash), over a
  run directory that an attempt of N nodes left (a log and a log archive per node, nodes.json,
  the head's records).

Nodes do the same in both (each attempt's agents are a launch's), so the goal is on what a
restart adds: the rotation's calls the same at N = 1024 as at N = 1 (nothing per node, once
per attempt, on one node); the launcher's own calls are printed beside them for scale (the
nodes' own, at least one per node, come on top of both).

    .venv/bin/python benchmarks/restart_cost.py [--nodes 1 64 1024]

No engine: bash, strace and this checkout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rayhpc.launcher.backends.batch.jobscript import attempt_lines, script_files  # noqa: E402
from rayhpc.launcher.contract import RunPaths, begin_attempt  # noqa: E402
from rayhpc.launcher.schedulers import SCHEDULERS  # noqa: E402
from tests.specs import make_spec  # noqa: E402

# `name(dirfd, "path"` or `name("path"`: a call's first path and the descriptor it is from.
FILE_CALL = re.compile(r'^(?:\[pid +\d+\] )?\d*\s*(\w+)\((?:(\d+|AT_FDCWD), )?"([^"]*)"')
LAUNCH = """
import sys
from pathlib import Path
from rayhpc.launcher.backends.rundir import prepare_run_dir
from rayhpc.launcher.backends.batch.jobscript import render_job_script
from rayhpc.launcher.contract import RunPaths, atomic_write, LaunchSpec
from rayhpc.launcher.resolve.config import load_site
import json
spec = LaunchSpec.from_json(json.loads(Path(sys.argv[1]).read_text()))
paths = RunPaths(prepare_run_dir(spec))
atomic_write(paths.job_script, render_job_script(spec, load_site("slurm")), mode=0o755,
             root=paths.dir)
"""


def counted(argv: list[str], under: Path, env: dict | None = None) -> int:
    """File-system calls of ``argv`` (and its children) on paths under ``under``, or on names
    relative to a descriptor it opened (the *at calls of a directory opened first)."""
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as trace:
        subprocess.run(["strace", "-f", "-qq", "-e", "trace=%file", "-o", trace.name, *argv],
                       text=True, check=True, capture_output=True, env=env)
        calls = 0
        for line in trace:
            match = FILE_CALL.match(line)
            path = match.group(3) if match else ""  # "": a descriptor's own fstat
            if path.startswith(str(under)) or (path and match.group(2) not in (None, "AT_FDCWD")
                                                and not path.startswith("/")):
                calls += 1
        return calls


def attempt_left(paths: RunPaths, nodes: int) -> None:
    """The files an attempt of ``nodes`` nodes leaves at the top of its run directory."""
    for path in (paths.head, paths.status, paths.driver_log, paths.timing, paths.timeline,
                 paths.exit_code, paths.stop, paths.restarting, paths.nodes_file):
        path.write_text("{}\n")
    for index in range(nodes):
        (paths.logs / f"node{index}.log").write_text("log\n")
        (paths.logs / f"node{index}.tar.gz").write_bytes(b"\0" * 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 64, 1024])
    args = parser.parse_args()
    rows = []
    for nodes in args.nodes:
        with tempfile.TemporaryDirectory() as scratch:
            shared = Path(scratch) / "shared"
            spec = dataclasses.replace(make_spec("slurm", image="/x.sif", nodes=nodes,
                                                 restarts=1), shared=shared)
            spec_file = Path(scratch) / "spec.json"
            spec_file.write_text(json.dumps(spec.to_json()))
            launch = counted([sys.executable, "-c", LAUNCH, str(spec_file)], shared,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
            paths = RunPaths(spec.run_dir)
            begin_attempt(paths)  # attempt 1, as its job script claimed it
            attempt_left(paths, nodes)
            script = "\n".join(attempt_lines(spec, SCHEDULERS["slurm"], script_files(spec)))
            restart = counted(["bash", "-c", script], shared,
                              env={**os.environ, "RAYHPC_RUN_DIR": str(paths.dir),
                                   "SLURM_JOB_ID": "1"})
            rows.append((nodes, launch, restart))
            assert paths.attempt_dir(1).joinpath("logs", "node0.log").exists()
    print(f"{'N':>6}  {'launch':>7}  {'restart':>8}  {'restart/launch':>15}")
    for nodes, launch, restart in rows:
        print(f"{nodes:>6}  {launch:>7}  {restart:>8}  {restart / launch:>15.2f}")
    flat = len({restart for _, _, restart in rows}) == 1
    print(f"goal: the rotation's calls flat in N (nothing per node): "
          f"{'met' if flat else 'NOT met'}")


if __name__ == "__main__":
    main()
