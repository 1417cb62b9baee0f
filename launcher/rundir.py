"""The run directory <shared>/runs/<run-id>/: created here, filled in by the node agents."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

from containers import PROJECT_ROOT
from containers.errors import UserError
from launcher import AGENT_FILE
from launcher.agent import read_json, write_json
from launcher.spec import LaunchSpec

EXAMPLES_DIR = PROJECT_ROOT / "examples"


def check_shared(shared: Path) -> Path:
    """The shared directory as an absolute path, created if missing, and writable."""
    shared = shared.expanduser().resolve()
    try:
        shared.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--shared: cannot create {shared}: {exc.strerror}") from None
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
        needed = 0o5 if path == shared else 0o1  # list the shared dir; traverse its parents
        if bits & needed != needed:
            raise UserError(f"--shared: {shared} cannot be reached by the containers' user "
                            f"(uid {uid}): {path} is mode {oct(st.st_mode & 0o777)}; "
                            "choose a directory others can enter (chmod o+rx) or run as "
                            "a non-root user")


def stage_examples(shared: Path) -> None:
    """Copy the bundled examples into the shared dir (once), so `--driver "python
    examples/actors.py"` works from any shared dir. Atomic: launches started together never see
    a half-copied directory."""
    target = shared / "examples"
    if target.exists():
        return
    staging = Path(tempfile.mkdtemp(prefix=".examples-", dir=shared))
    shutil.copytree(EXAMPLES_DIR, staging, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    staging.chmod(0o755)
    try:
        staging.rename(target)
    except OSError:  # another launch staged them first
        shutil.rmtree(staging, ignore_errors=True)


def busy_gcs_ports(shared: Path) -> set[int]:
    """GCS ports of the runs in this shared dir that have not finished (no exit_code yet)."""
    ports = set()
    for spec_file in (shared / "runs").glob("*/spec.json"):
        spec = read_json(spec_file)
        if spec and not (spec_file.parent / "exit_code").exists():
            ports.add(spec.get("ports", {}).get("gcs"))
    return ports


def prepare_run_dir(spec: LaunchSpec, owner: tuple[int, int] | None = None) -> Path:
    """Create the run directory with spec.json, the agent and a per-run Ray auth token (0600).

    ``owner``: uid/gid the containers run as, when it is not ours (we are root).
    """
    run_dir = spec.run_dir
    try:
        run_dir.mkdir(parents=True)
    except FileExistsError:
        raise UserError(f"run directory {run_dir} exists already; launch again") from None
    for sub in ("nodes", "logs"):
        (run_dir / sub).mkdir()
    shutil.copyfile(AGENT_FILE, run_dir / "node_agent.py")
    token = os.open(run_dir / "auth_token", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(token, "w") as handle:
        handle.write(secrets.token_hex(32))
    write_json(run_dir / "spec.json", spec.to_json())
    if owner is not None:
        for path in [run_dir, *run_dir.rglob("*")]:
            os.chown(path, *owner)
    return run_dir


def remove_run_dir(run_dir: Path) -> None:
    """Undo prepare_run_dir when nothing ran (so a failed start leaves nothing half-written)."""
    shutil.rmtree(run_dir, ignore_errors=True)
