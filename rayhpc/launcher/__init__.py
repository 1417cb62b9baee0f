"""Launch Ray clusters in containers on HPC batch systems and on this machine.

  orchestration.py  `rayhpc launch`: resolve the spec, ready the run, run it on the site's backend
  cluster.py     the Python API (`from rayhpc import Cluster`)
  contract/      what the launcher and the node program share (run directory records, spec, env)
  resolve/       site profiles, settings, node groups, queues, driver, run ids and ports (pure)
  backends/      how a launch runs: local (docker compose) or batch (a job script)
  schedulers/    one module per batch scheduler, and their registry
  runtimes/      one module per container runtime (Apptainer, Singularity, Shifter, ...)
  runs/          runs already launched: status, down, submit, logs
  node/          the node program, run in every container (standard library and Ray only)
  sites/         the site profiles (YAML)
"""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SITES_DIR = PACKAGE_DIR / "sites"

