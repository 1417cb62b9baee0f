"""An interactive cluster from Python (runs on your machine, not in a node): launch it, run Ray
jobs on it one after another and two at once, read their output, and stop it. The `with` block
stops the cluster however it ends.

    .venv/bin/python rayhpc/examples/interactive_cluster.py [--site local] [--nodes 3]
        [--shared DIR] [--image TAG]

(in a checkout; where rayhpc is installed, `python -m rayhpc.examples.interactive_cluster`,
or this file from the copy every launch puts in <shared>/examples/).

Where this Python has Ray of the image's version (and the same Python major.minor), it also
connects as a driver through Ray Client (`ray.init(cluster.client_address)`).
"""

import argparse
import os
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
if (CHECKOUT / "rayhpc" / "__init__.py").is_file():  # run from a checkout: its package
    sys.path.insert(0, str(CHECKOUT))

from rayhpc import Cluster  # noqa: E402

HELLO = "python examples/hello_nodes.py"  # the shared dir is the jobs' working dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--site", default="local")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--shared")
    parser.add_argument("--image")
    args = parser.parse_args()
    settings = {key: value for key, value in vars(args).items()
                if key != "site" and value is not None}
    with Cluster.launch(site=args.site, **settings) as cluster:
        print(f"cluster {cluster.run_id} up; dashboard {cluster.dashboard_url}")
        # One job after another: the exit code comes back.
        first = cluster.submit(HELLO)
        # Two at once: submit without waiting, then wait for each.
        jobs = [cluster.submit(HELLO, wait=False),
                cluster.submit("python -c 'import sys; sys.exit(3)'", wait=False)]
        codes = [cluster.wait(job) for job in jobs]
        print(f"exit codes: {first} (one after another), {codes} (two at once)")
        os.environ.update(cluster.env)  # the token: Ray reads it when it is imported
        try:
            import ray
        except ImportError:
            print("no Ray in this Python: skipping the Ray Client driver")
        else:
            ray.init(cluster.client_address)
            print(f"Ray Client driver sees {len(ray.nodes())} nodes")
            ray.shutdown()
    return 0 if first == 0 and codes == [0, 3] else 1


if __name__ == "__main__":
    sys.exit(main())
