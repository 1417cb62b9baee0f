"""A driver that survives its allocation's end (`rayhpc launch --restarts N`): it works in
steps, each a Ray task, and after every step keeps its state in one checkpoint file in the
shared directory; started again (RAYHPC_RESUME=1), it goes on from the last step kept.

    python examples/resume_steps.py [--steps N] [--step-seconds S] [--ray-address=HOST:PORT]

Exactly once: a step counts only when its result and its number are written together, in one
atomic replace of the checkpoint; a step cut short by the walltime is done again by the next
attempt, never counted twice. The result is the same in one attempt or in three: the sum of
k*k over the steps, printed with the attempt that did each step.
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import ray


@ray.remote
def step_of_work(step: int, seconds: float) -> int:
    time.sleep(seconds)  # the work a real step does (a training epoch, a shard of inference)
    return step * step


def load(checkpoint: Path) -> dict:
    """The state the last attempt kept, or a fresh one."""
    if os.environ.get("RAYHPC_RESUME") == "1" and checkpoint.exists():
        return json.loads(checkpoint.read_text())
    return {"next_step": 0, "total": 0, "done_by": []}


def keep(checkpoint: Path, state: dict) -> None:
    """Replace the checkpoint in one step: a reader (the next attempt) sees the old state or
    the new one, never half of one (fsync first: the shared file system may be NFS)."""
    with tempfile.NamedTemporaryFile("w", dir=checkpoint.parent, delete=False) as handle:
        json.dump(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, checkpoint)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS", "auto"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--step-seconds", type=float, default=1.0)
    args = parser.parse_args()
    attempt = int(os.environ.get("RAYHPC_ATTEMPT", "1"))
    directory = Path(os.environ.get("RAYHPC_CHECKPOINT_DIR", "checkpoints/resume_steps"))
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint = directory / "resume_steps.json"
    state = load(checkpoint)
    if state["next_step"]:
        print(f"attempt {attempt}: resuming at step {state['next_step']} of {args.steps}",
              flush=True)
    ray.init(address=args.ray_address)
    while state["next_step"] < args.steps:
        step = state["next_step"]
        result = ray.get(step_of_work.remote(step, args.step_seconds))
        state = {"next_step": step + 1, "total": state["total"] + result,
                 "done_by": [*state["done_by"], attempt]}
        keep(checkpoint, state)
        print(f"step {step + 1}/{args.steps} done (attempt {attempt})", flush=True)
    expected = sum(k * k for k in range(args.steps))
    per_attempt = {a: state["done_by"].count(a) for a in sorted(set(state["done_by"]))}
    print(f"result: {state['total']} (expected {expected}); steps per attempt: "
          + ", ".join(f"attempt {a}: {n}" for a, n in per_attempt.items()), flush=True)
    ray.shutdown()
    raise SystemExit(0 if state["total"] == expected and len(state["done_by"]) == args.steps
                     else 1)


if __name__ == "__main__":
    main()
