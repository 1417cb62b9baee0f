"""`rayhpc status`'s line for a run's HTTP endpoint (docs/serving.md): where it is and whether
it answers, probed from here where the user's choice lets this host reach it (one request per
`status`), else as the head's own probe last saw it."""

from __future__ import annotations

import ipaddress
import time

from rayhpc.launcher.contract import LaunchedRun, health_path, http_status


def reachable_url(run: LaunchedRun) -> str | None:
    """The endpoint's URL from this host (`LaunchSpec.endpoint_url`), with the head's address
    from head.json only where that is an address; None where it listens on the head's
    loopback, or head.json gives none."""
    spec, head = run.spec, run.head
    if spec.published.get("serve"):
        return spec.endpoint_url("")
    if head is None:
        return None
    try:  # head.json is the containers' writing: only an address goes into a request
        ip = ipaddress.ip_address(head.ip)
    except ValueError:
        return None
    return spec.endpoint_url(str(ip))


def endpoint_line(run: LaunchedRun) -> str:
    """`  endpoint URL: answers (HTTP 200)`, or why not; "" for a run without one."""
    spec = run.spec
    if not spec.has_endpoint:
        return ""
    url = reachable_url(run)
    if url is None and spec.serve_bind == "network" and run.head is None:
        return f"  endpoint on the head's cluster address, port {spec.endpoint_port}: not up yet"
    if url is not None:
        code = http_status(url + health_path(spec))
        state = f"answers (HTTP {code})" if code is not None else "not answering"
        return f"  endpoint {url}/: {state}"
    answered = run.status.endpoint_answered
    node = run.head.node if run.head else "the head"
    seen = (f"answered the head's probe at {time.strftime('%H:%M:%S', time.localtime(answered))}"
            if answered and 0 < answered < 1e11 else "not answering yet (the head's probe)")
    where = "its loopback" if spec.serve_bind == "loopback" else "an address head.json " \
        "does not give"
    return (f"  endpoint port {spec.endpoint_port} on {node} ({where}: `rayhpc status` "
            f"cannot reach it from here): {seen}")
