"""Run `invoke` from this checkout as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests import PROJECT_ROOT


def invoke_argv(*args: str) -> list[str]:
    """The command line of `invoke ARGS` from this checkout."""
    return [sys.executable, "-m", "invoke", "-r", str(PROJECT_ROOT), *args]


def invoke(*args: str, cwd: Path | None = None, timeout: float = 900,
           env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `invoke ARGS` as a user would, from this checkout."""
    return subprocess.run(invoke_argv(*args),
                          cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
