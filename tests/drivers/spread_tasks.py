"""Test driver: short tasks spread over every node; Ray retries those of a node that dies.

Prints "ready" once tasks run (the test's cue to kill a node), then "done N tasks".
"""

import socket
import time

import ray

TASKS = 24


@ray.remote(max_retries=5, scheduling_strategy="SPREAD")
def work(_: int) -> str:
    time.sleep(2)
    return socket.gethostname()


ray.init()
refs = [work.remote(i) for i in range(TASKS)]
ray.wait(refs, num_returns=3)
print("ready", flush=True)
print(f"done {len(ray.get(refs))} tasks", flush=True)
