"""Bring-up on the Slurm test bed (tests/testbed/: a controller and two compute nodes in
containers, Slurm, Apptainer), from `sbatch` to the driver starting and to its first task:

  (a) launcher  `invoke launch --site tests/testbed/site.yaml --wait` (sbatch, srun, node agents
                in Apptainer, rendezvous through the run directory);
  (c) template  the Ray docs' Slurm template as an sbatch script on the same SIF: head,
                `sleep 10`, then each worker and `sleep 5`, then the driver.

The test bed has two compute nodes, so N = 2 only; bringup.py covers N = 2..6 on the local site.

    .venv/bin/python benchmarks/slurm_bringup.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import docker
from harness import IN_NODE, ROOT, machine, median, print_table, stamp

from rayhpc.containers.images import ensure_recipe_image
from rayhpc.containers.sif import convert_image
from tests.testbed.harness import RECIPE, SlurmTestbed

SITE = ROOT / "tests/testbed/site.yaml"
TEMPLATE = """#!/bin/bash
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --output={shared}/template-%j.out
# The Ray documentation's Slurm template, its waits as written, on the launcher's SIF.
nodes=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))
head=${{nodes[0]}}
head_ip=$(srun --nodes=1 --ntasks=1 -w "$head" hostname -i)
run="apptainer exec --no-home --bind {shared} {shared}/ray.sif"
srun --nodes=1 --ntasks=1 -w "$head" $run ray start --head --node-ip-address="$head_ip" \\
    --port=6379 --disable-usage-stats --block &
sleep 10
for ((i = 1; i < ${{#nodes[@]}}; i++)); do
    srun --nodes=1 --ntasks=1 -w "${{nodes[$i]}}" $run ray start --address="$head_ip:6379" \\
        --disable-usage-stats --block &
    sleep 5
done
echo "driver_start_at=$(date +%s.%N)"
RAY_ADDRESS="$head_ip:6379" $run python -u {shared}/first_task.py
for node in "${{nodes[@]}}"; do
    srun --overlap --nodes=1 --ntasks=1 -w "$node" $run ray stop --force >/dev/null 2>&1
done
"""


def with_launcher(bed: SlurmTestbed) -> tuple[float, float]:
    t0 = time.time()
    result = bed.exec("controller", "python3", "-m", "invoke", "-r", str(ROOT), "launch",
                      "--site", str(SITE), "--shared", str(bed.shared), "--image",
                      f"{bed.shared}/ray.sif", "--wait", "--driver", "python first_task.py",
                      user="ray", workdir=str(bed.shared))
    if result.returncode != 0:
        raise SystemExit(f"launch failed:\n{result.stdout[-3000:]}{result.stderr[-2000:]}")
    run_dir = Path(re.search(r"run dir (\S+)", result.stdout).group(1))
    timing = (run_dir / "timing.json").read_text()
    driver_start = float(re.search(r'"t_driver_start": ([\d.]+)', timing).group(1))
    return driver_start - t0, stamp(result.stdout, "first_task_at") - t0


def template(bed: SlurmTestbed) -> tuple[float, float]:
    script = bed.shared / "template.sh"
    script.write_text(TEMPLATE.format(shared=bed.shared))
    t0 = time.time()
    submitted = bed.exec("controller", "sbatch", "--parsable", "--wait", str(script),
                         user="ray", workdir=str(bed.shared))
    job = submitted.stdout.strip().split(";")[0]
    output = (bed.shared / f"template-{job}.out").read_text()
    if submitted.returncode != 0 or "first_task_at=" not in output:
        raise SystemExit(f"template job failed:\n{submitted.stderr}\n{output[-3000:]}")
    return stamp(output, "driver_start_at") - t0, stamp(output, "first_task_at") - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs each way (median shown)")
    args = parser.parse_args()
    api = docker.APIClient()
    node_image = ensure_recipe_image(RECIPE, "default")
    sif = convert_image(ensure_recipe_image())
    shared = Path(tempfile.mkdtemp(prefix="rayhpc-bench-slurm-"))
    shared.chmod(0o777)  # the cluster's user (ray, uid 1000) writes here
    shutil.copyfile(sif, shared / "ray.sif")
    (shared / "ray.sif").chmod(0o644)
    shutil.copy(IN_NODE / "first_task.py", shared / "first_task.py")
    bed = SlurmTestbed(api, node_image, shared, ROOT)
    print(f"machine: {machine()}\nSlurm test bed, 2 compute nodes; SIF {sif}; median of "
          f"{args.repeat} run(s) each way")
    launcher, tpl = [], []
    try:
        bed.start()
        for _ in range(args.repeat):
            launcher.append(with_launcher(bed))
            tpl.append(template(bed))
    finally:
        bed.stop()
        subprocess.run(["rm", "-rf", str(shared)], check=False)
    a = [median([r[i] for r in launcher]) for i in (0, 1)]
    c = [median([r[i] for r in tpl]) for i in (0, 1)]
    print_table("bring-up on Slurm, seconds from sbatch", ["way", "driver starts",
                                                           "first task done"],
                [["(a) invoke launch", a[0], a[1]], ["(c) Ray docs template", c[0], c[1]],
                 ["(c)/(a)", c[0] / a[0], c[1] / a[1]]])


if __name__ == "__main__":
    main()
