"""Launch Ray clusters in containers: site profiles, config, schedulers, runtimes, node agent."""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SITES_DIR = PACKAGE_DIR / "sites"
AGENT_FILE = PACKAGE_DIR / "agent.py"


def __getattr__(name: str):
    """`from launcher import Cluster` (the Python API), imported only when asked for."""
    if name == "Cluster":
        from launcher.cluster import Cluster

        return Cluster
    raise AttributeError(name)
