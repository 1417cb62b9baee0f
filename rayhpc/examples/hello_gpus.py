"""Hello from every GPU: one Ray task per GPU of the cluster, all at once, each reporting the
device it was given; what a user checks first on a new GPU machine.

    python examples/hello_gpus.py --ray-address=HOST:PORT

Every task asks Ray for one GPU and waits until all have started, so they hold their GPUs at
the same time. Each reports the variable that selects its device for the GPU's runtime:
CUDA_VISIBLE_DEVICES (NVIDIA), HIP_VISIBLE_DEVICES (AMD; an index into ROCR_VISIBLE_DEVICES
where the scheduler set that), ZE_AFFINITY_MASK (Intel). It exits 1 when a task saw no device,
several, or one another task on its node saw too: tasks would share or miss GPUs.
"""

import argparse
import os
import socket
import time

import ray

DEVICE_VARIABLES = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ZE_AFFINITY_MASK")


@ray.remote
class Barrier:
    """Counts the tasks that started; they go on once all did."""

    def __init__(self) -> None:
        self.started = 0

    def arrive(self) -> int:
        self.started += 1
        return self.started

    def count(self) -> int:
        return self.started


def device_of(environ: dict) -> tuple[str, str]:
    """(the variable that selects this task's device, the physical device it names)."""
    for name in DEVICE_VARIABLES:
        value = environ.get(name)
        if value is None:
            continue
        ids = [word for word in value.split(",") if word]
        if len(ids) != 1:
            return name, f"{len(ids)} devices ({value!r})"
        rocr = [word for word in environ.get("ROCR_VISIBLE_DEVICES", "").split(",") if word]
        if name == "HIP_VISIBLE_DEVICES" and rocr:
            # HIP's ids count the devices ROCR_VISIBLE_DEVICES left visible, in its order.
            index = int(ids[0])
            return name, rocr[index] if index < len(rocr) else f"index {index} of {rocr}"
        return name, ids[0]
    return "", "no device variable set"


@ray.remote(num_gpus=1, num_cpus=0)
def report(barrier, total: int, timeout_s: float) -> tuple[str, str, str, list]:
    ray.get(barrier.arrive.remote())
    deadline = time.monotonic() + timeout_s
    while ray.get(barrier.count.remote()) < total and time.monotonic() < deadline:
        time.sleep(0.1)
    name, device = device_of(dict(os.environ))
    return socket.gethostname(), name, device, [str(i) for i in ray.get_gpu_ids()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS", "auto"))
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for every task to hold its GPU")
    args = parser.parse_args()
    ray.init(address=args.ray_address)
    total = int(ray.cluster_resources().get("GPU", 0))
    nodes = [n for n in ray.nodes() if n["Alive"]]
    print(f"{total} GPUs on {len(nodes)} nodes")
    if not total:
        print("no GPU in the cluster: nothing to check")
        return 1
    barrier = Barrier.options(num_cpus=0).remote()
    results = ray.get([report.remote(barrier, total, args.timeout) for _ in range(total)])
    seen: dict[str, list[str]] = {}
    problems = []
    for host, name, device, ray_ids in sorted(results):
        print(f"{host}: {name or '-'}={device} (Ray's GPU ids {ray_ids})")
        if not name or not device.isdigit():
            problems.append(f"{host}: a task saw {device}")
        elif device in seen.setdefault(host, []):
            problems.append(f"{host}: device {device} seen by two tasks")
        seen.setdefault(host, []).append(device)
    for problem in problems:
        print(f"FAILED: {problem}")
    if problems:
        return 1
    variables = sorted({name for _, name, _, _ in results})
    print(f"hello from {total} GPUs on {len(seen)} nodes: each task its own device "
          f"({', '.join(variables)})")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
