"""Check the driver command before anything starts: a missing script fails here, not in a node."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from rayhpc.common.user_error import UserError

_PYTHON_RE = re.compile(r"^python(\d(\.\d+)?)?$")
_OPTIONS_WITH_VALUE = {"-W", "-X"}


def driver_script(command: str, flag: str = "--driver") -> str | None:
    """The file the driver command runs, if it names one (python SCRIPT ..., ./SCRIPT ...)."""
    try:
        words = shlex.split(command.replace("{address}", "ADDRESS"))
    except ValueError as exc:
        raise UserError(f"{flag}: cannot parse {command!r}: {exc}") from None
    if not words:
        raise UserError(f"{flag}: empty command; give the command to run, e.g. "
                        "\"python my_driver.py --ray-address={address}\"")
    program = words[0]
    if _PYTHON_RE.match(Path(program).name):
        skip_next = False
        for word in words[1:]:
            if skip_next:
                skip_next = False
            elif word in ("-m", "-c", "-"):
                return None  # a module or inline code: nothing to check
            elif word in _OPTIONS_WITH_VALUE:
                skip_next = True
            elif not word.startswith("-"):
                return word
        return None
    return program if "/" in program else None


def check_driver(command: str, shared: Path) -> None:
    """Fail when the driver names a script that is not in the shared directory."""
    check_script(command, shared, shared, "--driver", "the driver", "fix --driver")


def link_out_of(path: Path, visible: Path) -> Path | None:
    """Where ``path`` leads when it is a link (or under one) out of ``visible``, the shared
    directory the nodes see; None otherwise. The containers mount the shared directory only:
    a link out of it leads nowhere there."""
    real = path.resolve()
    if real != path.absolute() and visible.resolve() not in real.parents:
        return real
    return None


def check_script(command: str, directory: Path, visible: Path | None, flag: str, runner: str,
                 fix: str) -> None:
    """Fail when ``command`` names a script (as `driver_script` finds it) that is not in
    ``directory``, where ``runner`` runs it on the head node, or that is a link out of
    ``visible``, the shared directory the nodes see (None: any link will do, the directory
    is sent along). ``flag`` and ``fix`` are for the message."""
    script = driver_script(command, flag)
    if script is None:
        return
    path = Path(script) if Path(script).is_absolute() else directory / script
    place = "the shared directory" if directory == visible else "the working directory"
    if not path.is_file():
        raise UserError(f"{flag}: {script} not found in {place} {directory} ({runner} runs "
                        f"there, on the head node): put the script there or {fix}")
    real = link_out_of(path, visible) if visible is not None else None
    if real is not None:
        raise UserError(f"{flag}: {script} is a link to {real}, outside the shared directory "
                        f"{visible} that the nodes see; copy the script into it")
