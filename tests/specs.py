"""Launch specs for tests, made the way `rayhpc launch` makes them (`resolve_spec`)."""

from __future__ import annotations

from rayhpc.launcher.contract import LaunchSpec
from rayhpc.launcher.launch import resolve_spec
from rayhpc.launcher.resolve.config import load_site

RUN_ID = "20260101-000000-abcd"


def make_spec(site: str = "local", run_id: str = RUN_ID, environ: dict | None = None,
              **cli: object) -> LaunchSpec:
    """The spec of `rayhpc launch --site SITE --KEY VALUE ...` with a fixed run id."""
    return resolve_spec(load_site(site), cli, environ or {}, run_id=run_id, now=1.0)
