"""rayhpc: run Ray on HPC batch allocations inside containers (Docker, Apptainer).

  containers/   image recipes, Dockerfile rendering, builds, SIF conversion
  launcher/     launch and manage Ray clusters on a site (local compose or a batch scheduler)
  recipes/      the bundled image recipes (YAML)
  examples/     the bundled example drivers, staged into every shared dir
"""

from pathlib import Path

__version__ = "0.1.0"

PACKAGE_DIR = Path(__file__).resolve().parent
RECIPES_DIR = PACKAGE_DIR / "recipes"
EXAMPLES_DIR = PACKAGE_DIR / "examples"


def __getattr__(name: str):
    """`from rayhpc import Cluster` (the Python API), imported only when asked for."""
    if name == "Cluster":
        from rayhpc.launcher.cluster import Cluster

        return Cluster
    raise AttributeError(name)
