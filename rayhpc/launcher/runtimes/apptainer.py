"""Apptainer (and Singularity, its former name): `apptainer exec` of a SIF.

Apptainer passes the host environment into the container by default (no --cleanenv here), so
the launcher's rank variables and the site's environment reach the agent without flags.
"""

from __future__ import annotations

import json
import shutil
import subprocess

from rayhpc.containers.platforms import PLATFORM_LABEL
from rayhpc.launcher.runtimes.runtime_interface import ExecRequest, Runtime

# The image's versions, as our images label them (containers/recipe.py `oci_labels`; a SIF
# converted from a Docker image keeps its labels, a def file from a recipe writes them in
# %labels).
VERSION_LABELS = {"ray": "org.rayhpc.ray-version", "python": "org.rayhpc.python-version"}

# --nv: NVIDIA; --rocm: AMD ("The --rocm flag is required to support AMD GPUs inside the
# container", OLCF olcf/olcf_containers_examples frontier/.../gpu_aware_mpi_example/submit.sbatch).
# Intel: no flag; Apptainer binds the host's /dev by default and ALCF's Aurora container docs
# run `apptainer exec` without a GPU flag (argonne-lcf/user-guides docs/aurora/containers/).
GPU_FLAGS = {"nvidia": ["--nv"], "amd": ["--rocm"], "intel": []}


class Apptainer(Runtime):
    name = "apptainer"
    program = "apptainer"
    image_kind = "sif"
    image_hint = ("give the SIF path (`rayhpc build --sif` or `rayhpc convert` makes one), on a "
                  "file system every node sees")
    gpus = tuple(GPU_FLAGS)
    bind_flag = "--bind {path}"
    workdir_flag = "--pwd {path}"
    env_flag = "--env {key}={value}"

    def exec_command(self, request: ExecRequest) -> list[str]:
        # Never the user's own home: rayproject/ray keeps its Python under /home/ray, which a
        # user whose home is /home/ray would hide. --home gives a writable node-local HOME
        # instead (Ray writes ~/.ray; Apptainer refuses HOME through --env).
        # No --pid: Ray finds its raylet through the process table.
        argv = [self.program, "exec", *self.options,
                *(["--home", request.home] if request.home else ["--no-home"])]
        argv += GPU_FLAGS.get(request.gpu, [])
        return [*argv, *self.mapped(request), request.image, *request.command]

    def inspect_command(self, image: str) -> list[str]:
        # `apptainer inspect` "--labels: show the labels for the image (default)", "--json:
        # print structured json instead of sections" (Apptainer CLI reference, "apptainer
        # inspect", https://apptainer.org/docs/user/latest/cli/apptainer_inspect.html). The
        # JSON is {"data": {"attributes": {"labels": {...}}}, "type": "container"}
        # (spython's inspect reads it so: singularityhub/singularity-cli
        # spython/main/inspect.py).
        return [self.program, "inspect", "--labels", "--json", image]

    def image_versions(self, image: str) -> dict[str, str] | None:
        return versions_from_inspect(self._inspect(image))

    def image_platform(self, image: str) -> str | None:
        platform = (labels_from_inspect(self._inspect(image)) or {}).get(PLATFORM_LABEL)
        return platform if isinstance(platform, str) and platform else None

    def _inspect(self, image: str) -> str:
        """`inspect --labels --json` output ("" where it cannot run or fails)."""
        if not shutil.which(self.program):
            return ""
        try:
            result = subprocess.run(self.inspect_command(image), capture_output=True,
                                    text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return result.stdout if result.returncode == 0 else ""


def labels_from_inspect(output: str) -> dict | None:
    """The labels in `inspect --labels --json` output (None: not JSON). Older Singularity
    prints the labels alone, at the top level."""
    try:
        data = json.loads(output)
    except ValueError:
        return None
    labels = data
    if isinstance(labels, dict) and "data" in labels:
        for key in ("data", "attributes", "labels"):
            labels = labels.get(key) if isinstance(labels, dict) else None
    return labels if isinstance(labels, dict) else None


def versions_from_inspect(output: str) -> dict[str, str] | None:
    """{"ray": ..., "python": ...} from `inspect --labels --json` output (None: not JSON, or a
    version label is missing)."""
    labels = labels_from_inspect(output)
    if labels is None:
        return None
    versions = {key: labels.get(label) for key, label in VERSION_LABELS.items()}
    if not all(isinstance(value, str) and value for value in versions.values()):
        return None
    return versions


class Singularity(Apptainer):
    name = "singularity"
    program = "singularity"
