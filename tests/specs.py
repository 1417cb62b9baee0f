"""Launch specs for tests, made the way `rayhpc launch` makes them (`resolve_spec`)."""

from __future__ import annotations

import time

from rayhpc.launcher.contract import HeadRecord, LaunchSpec
from rayhpc.launcher.orchestration import resolve_spec
from rayhpc.launcher.resolve.config import load_site

RUN_ID = "20260101-000000-abcd"


def make_spec(site: str = "local", run_id: str = RUN_ID, environ: dict | None = None,
              **cli: object) -> LaunchSpec:
    """The spec of `rayhpc launch --site SITE --KEY VALUE ...` with a fixed run id."""
    return resolve_spec(load_site(site), cli, environ or {}, run_id=run_id, now=1.0)


def head_record(ip: str = "10.0.0.1", node: str = "head", up_since: float = 0.0) -> HeadRecord:
    """A head.json record as the head writes it (its ports: Ray's usual ones)."""
    return HeadRecord(address=f"{ip}:6379", ip=ip, node=node, gcs_port=6379, agent_port=6380,
                      dashboard_port=8265, client_port=10001, time=up_since or time.time())
