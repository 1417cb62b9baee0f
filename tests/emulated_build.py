"""The arm64 stand-in built under qemu-user emulation (tests/test_platform_engine.py), started
in the background when the test session starts (tests/conftest.py): its minutes of emulation,
on one core, overlap the rest of the suite instead of adding to it. CI only
(RAYHPC_TEST_EMULATION=1), as root on a machine whose kernel takes binfmt_misc registrations."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import tempfile
from dataclasses import dataclass

from rayhpc.containers.emulation import BINFMT_DIR, EMULATION_PACKAGES, emulation_problem
from tests.cli import invoke_argv

ARM64 = "linux/arm64"
SKIP_REASON = ("the arm64 build under emulation runs in CI only (RAYHPC_TEST_EMULATION=1, "
               "root, ~5 minutes of one core)")


@dataclass
class Build:
    """The background `rayhpc base --platform linux/arm64`, or why it could not start."""
    process: subprocess.Popen | None = None
    log: str = ""  # its output's file
    problem: str = ""

    def wait(self, timeout: float = 2400) -> tuple[int, str]:
        """Its exit code and output, once it ended."""
        assert self.process is not None, self.problem
        code = self.process.wait(timeout=timeout)
        with open(self.log, errors="replace") as output:
            return code, output.read()


def wanted() -> str:
    """"" when this session builds it; else why not (the test's skip reason)."""
    if os.environ.get("RAYHPC_TEST_EMULATION") != "1":
        return SKIP_REASON
    if platform.machine() != "x86_64":
        return f"an x86_64 host emulates arm64 here; this one is {platform.machine()}"
    return ""


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def _mount_binfmt_misc() -> None:
    """binfmt_misc's file system at its place, where the kernel has it (no systemd here)."""
    for argv in (("modprobe", "binfmt_misc"),
                 ("mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR))):
        if (BINFMT_DIR / "register").exists():
            return
        with contextlib.suppress(OSError):  # no modprobe: the module may be built in
            _run(*argv)


def register_emulation() -> str:
    """qemu-user for aarch64 registered with binfmt_misc (Debian's packages give its handler
    the F flag, so it serves containers too), installed where missing; "" or the problem."""
    if not emulation_problem(ARM64):
        return ""
    if os.geteuid() != 0:
        return f"{emulation_problem(ARM64)} (and not root to install it)"
    # Mounted first, so that the packages' own scripts (update-binfmts --import) register it.
    _mount_binfmt_misc()
    for argv in (("apt-get", "update", "-q"),
                 ("apt-get", "install", "-y", "-q", "--no-install-recommends",
                  *EMULATION_PACKAGES)):
        result = _run(*argv)
        if result.returncode != 0:
            return f"{' '.join(argv)}: {result.stdout[-1500:]}{result.stderr[-1500:]}"
    _mount_binfmt_misc()
    enabled = _run("update-binfmts", "--enable", "qemu-aarch64")
    problem = emulation_problem(ARM64)
    return f"{problem}; update-binfmts: {enabled.stdout}{enabled.stderr}" if problem else ""


def start() -> Build:
    """Register the emulation and start the build in the background."""
    problem = register_emulation()
    if problem:
        return Build(problem=f"emulation: {problem}")
    descriptor, log = tempfile.mkstemp(prefix="rayhpc-arm64-", suffix=".log")
    with os.fdopen(descriptor, "w") as output:  # the child keeps its own copy
        process = subprocess.Popen(invoke_argv("base", "--platform", ARM64), stdout=output,
                                   stderr=subprocess.STDOUT)
    return Build(process=process, log=log)
