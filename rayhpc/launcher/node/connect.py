"""connect.txt of an interactive cluster: how to reach it, as shell lines."""

from __future__ import annotations

from rayhpc.launcher.contract import DASHBOARD_LOCAL_PORT, LaunchSpec

ENDPOINT_ENV = "RAYHPC_ENDPOINT"  # the endpoint's URL, for `. connect.txt; curl $RAYHPC_ENDPOINT`


def connect_text(spec: LaunchSpec, head_ip: str, token_path: str,
                 endpoint: list[str] | None = None) -> str:
    """connect.txt: comments and `export` lines, so that `. connect.txt` works in a shell."""
    url = spec.dashboard_url(head_ip)
    lines = [
        f"# rayhpc run {spec.run_id}: {spec.nodes} nodes up; stop it with "
        f"`rayhpc down --run {spec.run_id}`",
        "# Python (Ray and Python as in the image), with the RAY_AUTH_* lines below exported:",
        f"#   ray.init(\"{spec.client_address(head_ip)}\")   (inside a Ray job: ray.init())",
        f"# Jobs: `rayhpc submit --run {spec.run_id} -- CMD`, or `ray job submit -- CMD` "
        "with these lines:",
        f"export RAY_ADDRESS={url}",
        "export RAY_AUTH_MODE=token",
        f"export RAY_AUTH_TOKEN_PATH={token_path}",
        f"# dashboard: {url} (it asks for the token: the content of {token_path})",
    ]
    if not spec.published.get("dashboard"):
        login = spec.login or "<you>@<login node>"
        lines.append(f"# from your laptop: ssh -N -L {DASHBOARD_LOCAL_PORT}:{url.split('//')[1]} "
                     f"{login}   then open http://localhost:{DASHBOARD_LOCAL_PORT}")
    return "\n".join([*lines, *(endpoint or [])]) + "\n"


def endpoint_lines(spec: LaunchSpec, head_ip: str, head_node: str) -> list[str]:
    """How to reach the run's HTTP endpoint (docs/serving.md): only the way the user chose
    (--serve-bind) works. RAYHPC_ENDPOINT only where it works from where connect.txt is read
    (this host on the local site, the login node where it listens on the cluster network):
    on the head's loopback, the same URL on the login node would reach the login node."""
    port = spec.endpoint_port
    what = f"Ray Serve application {spec.serve}" if spec.serve else "the driver's service"
    url = spec.endpoint_url(head_ip)
    if spec.published.get("serve"):
        return [f"# endpoint: {url}/ ({what}; on this host's 127.0.0.1 only)",
                f"export {ENDPOINT_ENV}={url}"]
    login = spec.login or "<you>@<login node>"
    if url is not None:
        return [f"# endpoint: {url}/ ({what}; on the head's cluster address: the login node "
                "reaches it)",
                f"export {ENDPOINT_ENV}={url}",
                f"#   from your laptop: ssh -N -L {port}:{head_ip}:{port} {login}   then "
                f"curl http://localhost:{port}/"]
    return [f"# endpoint: http://127.0.0.1:{port}/ on the head node {head_node} ({what}; its "
            "loopback only: reach it through SSH to that node)",
            f"#   from your laptop: ssh -N -L {port}:127.0.0.1:{port} -J {login} {head_node}   "
            f"then curl http://localhost:{port}/"]
