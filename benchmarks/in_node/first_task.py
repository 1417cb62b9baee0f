"""Run on the head as the driver: connect, finish one task, print when (epoch seconds)."""

import time

import ray


@ray.remote
def first() -> int:
    return 1


ray.init()
ray.get(first.remote())
print(f"first_task_at={time.time():.3f}", flush=True)
