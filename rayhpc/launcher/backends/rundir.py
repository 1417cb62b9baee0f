"""The run directory <shared>/runs/<run-id>/: created here (with the node program, the spec and
the token), filled in by the node agents."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from pathlib import Path

from rayhpc import EXAMPLES_DIR
from rayhpc.common.user_error import UserError
from rayhpc.launcher.backends.bundle import node_program
from rayhpc.launcher.contract import LaunchSpec, RunPaths, atomic_write, json_text, read_spec


def check_shared(shared: Path, owner: tuple[int, int] | None = None) -> Path:
    """The shared directory as an absolute path, created if missing, and writable.

    ``owner``: uid/gid the containers run as, when it is not ours (we are root): a directory
    made here becomes theirs, so that drivers can write their results in it.
    """
    shared = shared.expanduser().resolve()
    missing = [p for p in [shared, *shared.parents] if not p.exists()]
    try:
        shared.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--shared: cannot create {shared}: {exc.strerror}") from None
    if owner is not None:
        for path in missing:
            os.chown(path, *owner)
    if not shared.is_dir() or not os.access(shared, os.W_OK | os.X_OK):
        raise UserError(f"--shared: {shared} is not a writable directory; give one you can "
                        "write to (every node must see it at the same path)")
    return shared
def check_reachable(shared: Path, uid: int, gid: int) -> None:
    """Fail unless uid:gid (who the containers run as) can reach the shared directory."""
    for path in [*reversed(shared.parents), shared]:
        st = path.stat()
        if st.st_uid == uid:
            bits = st.st_mode >> 6
        elif st.st_gid == gid:
            bits = st.st_mode >> 3
        else:
            bits = st.st_mode
        if path != shared and bits & 0o1 != 0o1:  # traverse the parents
            raise UserError(f"--shared: {shared} cannot be reached by the containers' user "
                            f"(uid {uid}): {path} is mode {oct(st.st_mode & 0o777)}; "
                            "choose a directory others can enter (chmod o+rx) or run as "
                            "a non-root user")
        if path == shared and bits & 0o7 != 0o7:  # drivers run in it and write their results
            raise UserError(f"--shared: {shared} is not writable by the containers' user "
                            f"(uid {uid}; it is owned by uid {st.st_uid}, mode "
                            f"{oct(st.st_mode & 0o777)}); `chown {uid} {shared}`, or give a "
                            "new directory (rayhpc makes it theirs)")


def add_missing(source: Path, target: Path) -> None:
    """Copy the files of ``source`` that ``target`` lacks (each whole: a temp name, then
    renamed); what is there already is left alone."""
    for path in source.rglob("*"):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        dest = target / path.relative_to(source)
        if dest.exists():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(dest, path.read_bytes(), mode=0o644)


def stage_examples(shared: Path) -> bool:
    """Copy the bundled examples into the shared dir (once), so `--driver "python
    examples/actors.py"` works from any shared dir. Atomic: launches started together never see
    a half-copied directory. A shared dir staged by an older version gets the examples it
    lacks (the user's own edits of the others are kept). True: this call made <shared>/examples."""
    target = shared / "examples"
    if target.is_dir():
        with contextlib.suppress(OSError):  # best effort: not ours to write, say
            add_missing(EXAMPLES_DIR, target)
        return False
    if target.exists():
        return False
    staging = Path(tempfile.mkdtemp(prefix=".examples-", dir=shared))
    shutil.copytree(EXAMPLES_DIR, staging, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    staging.chmod(0o755)
    try:
        staging.rename(target)
    except OSError:  # another launch staged them first
        shutil.rmtree(staging, ignore_errors=True)
        return False
    return True


def busy_gcs_ports(shared: Path) -> set[int]:
    """GCS ports of the runs in this shared dir that have not finished (no exit_code yet)."""
    ports = set()
    for run_dir in (shared / "runs").glob("*/"):
        paths = RunPaths(run_dir)
        spec = read_spec(paths, strict=False)
        if spec and not paths.exists(paths.exit_code):
            ports.add(spec.ports["gcs"])
    return ports


# Where we are root: the run directory's modes for root and the containers' private group
# (setgid: what the containers make there stays in the group).
PRIVATE_MODES = {"dir": 0o2770, "token": 0o640, "file": 0o640}


def prepare_run_dir(spec: LaunchSpec, owner: tuple[int, int] | None = None) -> Path:
    """Create the run directory with spec.json, the node program and a per-run Ray auth token
    (0600).

    ``owner``: uid/gid the containers run as, when it is not ours (we are root).
    """
    paths = RunPaths(spec.run_dir)
    runs = paths.dir.parent
    if runs.exists() and not runs.is_dir():
        raise UserError(f"--shared: {runs} is a file, not the directory of runs; move it away")
    made_runs = not runs.exists()
    try:
        paths.dir.mkdir(parents=True)
    except FileExistsError:
        raise UserError(f"run directory {paths.dir} exists already; launch again") from None
    for sub in (paths.nodes, paths.logs):
        sub.mkdir()
    spec_text = json_text(spec.to_json())
    paths.node_program.write_bytes(node_program(spec_text))
    token = os.open(paths.auth_token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(token, "w") as handle:
        handle.write(secrets.token_hex(32))
    atomic_write(paths.spec, spec_text)
    if owner is not None:
        # Root's, and the containers' private group's: not the containers' uid's, which is
        # somebody's account on a shared machine (see `local.container_user`).
        for path in [*([runs] if made_runs else []), paths.dir, *paths.dir.rglob("*")]:
            os.chown(path, -1, owner[1])
            os.chmod(path, PRIVATE_MODES["dir" if path.is_dir() else
                                         "token" if path == paths.auth_token else "file"])
        if made_runs:
            runs.chmod(0o751)  # others may reach their own runs, not list them
    return paths.dir


def remove_run_dir(run_dir: Path) -> None:
    """Undo prepare_run_dir when nothing ran (so a failed start leaves nothing half-written)."""
    shutil.rmtree(run_dir, ignore_errors=True)
