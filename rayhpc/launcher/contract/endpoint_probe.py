"""The run's HTTP endpoint as both sides probe it (`--serve`, `--serve-port`; docs/serving.md):
the head while it starts, the launcher in `rayhpc status`. Standard library only."""

from __future__ import annotations

import urllib.error
import urllib.request

from rayhpc.launcher.contract.launch_spec import LaunchSpec

PROBE_TIMEOUT_S = 2.0


def health_path(spec: LaunchSpec) -> str:
    """What a probe asks: Serve's proxy health route (200 once the proxy runs), else the
    service's root (any HTTP answer counts: the service is there)."""
    return "/-/healthz" if spec.serve else "/"


def http_status(url: str, timeout: float = PROBE_TIMEOUT_S) -> int | None:
    """The HTTP status ``url`` answers with (an error status is an answer too); None when
    nothing answers. No proxy: the endpoint is the cluster's own address (or this host's)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None
