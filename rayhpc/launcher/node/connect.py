"""connect.txt of an interactive cluster: how to reach it, as shell lines."""

from __future__ import annotations

from rayhpc.launcher.contract import DASHBOARD_LOCAL_PORT, LaunchSpec


def connect_text(spec: LaunchSpec, head_ip: str, token_path: str) -> str:
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
    return "\n".join(lines) + "\n"
