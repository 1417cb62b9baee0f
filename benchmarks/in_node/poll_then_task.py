"""The floor's head: poll the GCS as tightly as possible until N nodes are alive, then run the
first task. Prints all_joined_at= and first_task_at= (epoch seconds).

    python poll_then_task.py N HOST:PORT
"""

import sys
import time

import ray

nodes, address = int(sys.argv[1]), sys.argv[2]
while True:
    try:
        ray.init(address=address, log_to_driver=False)
        break
    except Exception:  # noqa: BLE001 (the GCS is not up yet: try again at once)
        time.sleep(0.02)
while len([n for n in ray.nodes() if n["Alive"]]) < nodes:
    time.sleep(0.02)
print(f"all_joined_at={time.time():.3f}", flush=True)


@ray.remote
def first() -> int:
    return 1


ray.get(first.remote())
print(f"first_task_at={time.time():.3f}", flush=True)
