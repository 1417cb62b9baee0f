"""The pre-build resolver check: would pip install the added packages together with the base's
Ray? Asked of pip itself (`pip install --dry-run`) in a throw-away container of the base image,
before the image build starts, so that a conflict is one line naming the packages instead of a
failed build step after minutes.

``parse_pip_failure`` (pure) reads pip's own messages; ``check_resolvable`` runs pip.
"""

from __future__ import annotations

import contextlib
import re
import shlex
from dataclasses import dataclass

from rayhpc.common.user_error import UserError
from rayhpc.containers.secrets import (
    FETCH_SECRETS,
    FORGET_SECRETS,
    SECRETS_ARG,
    BuildSecrets,
    serve,
)

# pip's messages (src/pip/_internal/resolution/resolvelib/factory.py, get_installation_error):
#   ERROR: Cannot install a==1 and b<2 because these package versions have conflicting
#   dependencies.                                               (logged as critical)
#   The conflict is caused by:
#       The user requested b<2
#       a 1 depends on b>=2                                    (logged as info: not with -q)
#   ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/...
# and for a requirement no release satisfies (same file, _report_single_requirement_conflict):
#   ERROR: Could not find a version that satisfies the requirement x==9 (from versions: ...)
#   ERROR: No matching distribution found for x==9
_CANNOT_INSTALL_RE = re.compile(
    r"Cannot install (?P<what>.+?) because these package versions have conflicting dependencies")
_NOT_FOUND_RE = re.compile(r"No matching distribution found for (?P<what>\S+)")
_NO_VERSION_RE = re.compile(
    r"Could not find a version that satisfies the requirement (?P<what>\S+)")
_CAUSED_BY = "The conflict is caused by:"
_INCONSISTENT = "The following requirements are inconsistent:"


@dataclass(frozen=True)
class PipFailure:
    kind: str                      # "conflict" or "not-found"
    packages: tuple[str, ...]      # the requirements pip names, as it wrote them
    causes: tuple[str, ...] = ()   # pip's "The conflict is caused by:" lines


def parse_pip_failure(output: str) -> PipFailure | None:
    """What pip's output says went wrong when it could not resolve; None when it says neither
    a conflict nor a missing release (e.g. a network error: the build will say it)."""
    causes = _indented_after(output, (_CAUSED_BY, _INCONSISTENT))
    match = _CANNOT_INSTALL_RE.search(output)
    if match:
        return PipFailure("conflict", _split_joined(match.group("what")), causes)
    if causes or "ResolutionImpossible" in output:
        requested = tuple(line.removeprefix("The user requested ").strip() for line in causes
                          if line.startswith("The user requested "))
        return PipFailure("conflict", requested, causes)
    missing = [m.group("what") for m in _NOT_FOUND_RE.finditer(output)] or [
        m.group("what") for m in _NO_VERSION_RE.finditer(output)]
    if missing:
        return PipFailure("not-found", tuple(dict.fromkeys(missing)))
    return None


def _split_joined(text: str) -> tuple[str, ...]:
    """pip's text_join: 'a', 'a and b', 'a, b and c'."""
    head, _, last = text.rpartition(" and ")
    parts = [p.strip() for p in head.split(", ")] if head else []
    return tuple(p for p in (*parts, last.strip()) if p)


def _indented_after(output: str, headings: tuple[str, ...]) -> tuple[str, ...]:
    lines = output.splitlines()
    for index, line in enumerate(lines):
        if line.strip().removeprefix("ERROR: ") in headings:
            found = []
            for following in lines[index + 1:]:
                if not following.strip():
                    if found:
                        break
                    continue
                if not following.startswith((" ", "\t")):
                    break
                found.append(following.strip())
            return tuple(found)
    return ()


def describe(failure: PipFailure, ray_version: str, where: str) -> str:
    """One line for the user: which of the added packages, what pip said, how to go on."""
    ours = f"ray=={ray_version}"
    named = [p for p in failure.packages if p != ours] or list(failure.packages)
    if failure.kind == "not-found":
        return (f"{where}: pip finds no release of {', '.join(named)} for this image (Python "
                "and platform of the base); fix the name or version, or check the index "
                "(--pip-index-url)")
    because = f" (pip: {'; '.join(failure.causes)})" if failure.causes else ""
    return (f"{where}: {', '.join(named) or 'the added packages'} cannot be installed with the "
            f"base's Ray {ray_version}{because}; loosen or drop the version of "
            f"{', '.join(named) or 'the package'} so that it allows Ray {ray_version}'s "
            "requirements, or build a recipe on another Ray")


def dry_run_command(ray_version: str, requirements: tuple[str, ...]) -> list[str]:
    """The shell command run in the base image: the build's secrets first (as a build step
    gets them), then pip's dry run. Not --quiet: pip logs 'The conflict is caused by' at info
    level, which -q drops."""
    pip = ["python", "-m", "pip", "install", "--dry-run", "--no-cache-dir",
           "--disable-pip-version-check", "--progress-bar", "off", f"ray=={ray_version}",
           *requirements]
    script = f"{FETCH_SECRETS}; {shlex.join(pip)} 2>&1; status=$?; {FORGET_SECRETS}; exit $status"
    return ["sh", "-c", script]


def check_resolvable(api, image: str, ray_version: str, requirements: tuple[str, ...],
                     secrets: BuildSecrets | None, where: str, timeout_s: float = 600
                     ) -> str:
    """UserError naming the conflicting package(s) when pip in ``image`` cannot install
    ``requirements`` together with ``ray==ray_version``. Other failures (no network) are left
    to the build, which says them in its own words: returned as a note ("" when pip could)."""
    import docker.errors  # executing only: rendering and parsing need no docker-py
    import requests.exceptions

    output, status = "", 0
    with serve(secrets) if secrets else contextlib.nullcontext() as channel:
        kwargs: dict = {}
        environment = {}
        if channel:
            # As in a build: host networking reaches the host's abstract socket.
            environment[SECRETS_ARG] = channel
            kwargs["host_config"] = api.create_host_config(network_mode="host")
        container = None
        try:
            container = api.create_container(image, command=dry_run_command(
                ray_version, requirements), environment=environment, **kwargs)
            api.start(container)
            status = api.wait(container, timeout=timeout_s)["StatusCode"]
            output = api.logs(container).decode(errors="replace")
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise UserError(f"{where}: the resolver check could not run in {image}: "
                            f"{' '.join(str(exc).split())[:300]}") from None
        finally:
            if container is not None:
                with contextlib.suppress(docker.errors.APIError):
                    api.remove_container(container, force=True)
    if status == 0:
        return ""
    failure = parse_pip_failure(output)
    if failure is not None:
        raise UserError(describe(failure, ray_version, where))
    last = [line for line in output.splitlines() if line.strip()][-1:] or [f"exit {status}"]
    return f"the resolver check was inconclusive ({last[0].strip()[:200]}); building anyway"
