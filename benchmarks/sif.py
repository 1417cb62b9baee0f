"""SIF conversion: `invoke convert` (docker save, then apptainer build, atomic rename, digest
record) against a raw `apptainer build` of the same docker-archive, side by side. Without
Apptainer on the host both run apptainer in the same converter container, as `invoke convert`
does. Goal: invoke convert <= 1.2x of the raw build.

    .venv/bin/python benchmarks/sif.py [--image TAG] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import docker
from harness import ensure_image, invoke, machine, median, print_table

from rayhpc.containers.images import ensure_recipe_image
from rayhpc.containers.sif import CONVERTER_RECIPE, CONVERTER_UID, CONVERTER_VARIANT, host_runtime

GOAL = 1.2


def with_invoke(image: str, out: Path) -> float:
    started = time.monotonic()
    result = invoke("convert", "--image", image, "--out", str(out), "--force")
    if result.returncode != 0:
        raise SystemExit(f"invoke convert failed:\n{result.stdout[-2000:]}{result.stderr}")
    return time.monotonic() - started


def save(client: docker.DockerClient, image: str, archive: Path) -> float:
    started = time.monotonic()
    with open(archive, "wb") as out:
        for chunk in client.images.get(image).save(named=True):
            out.write(chunk)
    archive.chmod(0o644)
    return time.monotonic() - started


def raw_build(client: docker.DockerClient, work: Path) -> float:
    """`apptainer build` of work/image.tar, on the host if it has Apptainer, else in the
    converter container."""
    command = ["apptainer", "build", "--force", "image.sif", "docker-archive://image.tar"]
    started = time.monotonic()
    runtime = host_runtime()
    if runtime:
        subprocess.run([runtime, *command[1:]], cwd=work, check=True, capture_output=True)
    else:
        converter = ensure_recipe_image(CONVERTER_RECIPE, CONVERTER_VARIANT)
        client.containers.run(converter, command, user=str(CONVERTER_UID), remove=True,
                              environment={"HOME": "/tmp"}, working_dir="/work",
                              volumes={str(work): {"bind": "/work", "mode": "rw"}})
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", help="image to convert (default: the ray recipe's cpu image)")
    parser.add_argument("--repeat", type=int, default=1, help="runs each way (median shown)")
    args = parser.parse_args()
    image = ensure_image(args.image)
    client = docker.from_env()
    where = "host apptainer" if host_runtime() else "converter container"
    print(f"machine: {machine()}\nimage: {image}; apptainer in the {where}; median of "
          f"{args.repeat} run(s) each way")
    ours, saves, raws = [], [], []
    work = Path(tempfile.mkdtemp(prefix="rayhpc-bench-sif-"))
    try:
        work.chmod(0o755)
        if os.geteuid() == 0:
            os.chown(work, CONVERTER_UID, -1)
        for _ in range(args.repeat):
            ours.append(with_invoke(image, work / "ours.sif"))
            saves.append(save(client, image, work / "image.tar"))
            raws.append(raw_build(client, work))
            (work / "image.tar").unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ours_s, save_s, raw_s = median(ours), median(saves), median(raws)
    print_table("SIF conversion, seconds", ["way", "seconds", "of raw build"], [
        ["invoke convert (save + build)", ours_s, ours_s / raw_s],
        ["raw apptainer build of the archive", raw_s, 1.0],
        ["(docker save alone, for scale)", save_s, save_s / raw_s]])
    print(f"\ngoal invoke convert <= {GOAL}x of the raw build: {ours_s / raw_s:.2f}x -> "
          f"{'met' if ours_s / raw_s <= GOAL else 'NOT met'}")


if __name__ == "__main__":
    main()
