"""Ray jobs on a running cluster, through the dashboard's REST API (the Ray Jobs API), with the
run's token: no Ray on this machine. `invoke submit` and `Cluster.submit` use it.

  POST /api/jobs/                  submit: {"entrypoint", "runtime_env", "metadata"}
  GET  /api/jobs/{id}              status, driver_exit_code, message
  GET  /api/jobs/{id}/logs         {"logs": the driver's whole output so far}
  POST /api/jobs/{id}/stop         stop it
  GET|PUT /api/packages/gcs/{name} a working directory sent along (zip), as `ray job submit`
  GET  /api/v0/logs/file?...       a node's Ray log file (`invoke logs --node N --file F`)

Every request carries `Authorization: Bearer <token>` (Ray 2.52+ token authentication; without
it the dashboard answers 401, with a wrong one 403).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rayhpc.containers.errors import UserError

POLL_S = 0.5
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# Ray's own limit for a working directory sent through the GCS is 500 MiB; keep well below it.
UPLOAD_MAX_BYTES = 100 * 1024 * 1024
UPLOAD_EXCLUDES = (".git", "__pycache__", ".venv")
LOG_LINES_ALL = 10_000_000  # the log API returns the last N lines (1000 unless asked)


class ClusterError(Exception):
    """The cluster did not answer as it should (not bad input): one line, exit 1."""


@dataclass
class JobResult:
    job_id: str
    status: str
    exit_code: int
    message: str = ""


def exit_code_of(info: dict) -> int:
    """A finished job's exit code: its driver's, else 0 for success, 143 stopped, 1 failed."""
    code = info.get("driver_exit_code")
    if isinstance(code, int):
        return 128 - code if code < 0 else code
    return {"SUCCEEDED": 0, "STOPPED": 143}.get(info.get("status", ""), 1)


class JobsClient:
    """The dashboard of one cluster, with its token."""

    def __init__(self, url: str, token: str, timeout: float = 30, head_ip: str = ""):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.head_ip = head_ip  # where the jobs' drivers run (their log files are there)

    def request(self, method: str, path: str, body: dict | None = None,
                data: bytes | None = None, ok: tuple[int, ...] = (200,)) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace").strip()
            if exc.code in ok:
                return exc.code, text.encode()
            if exc.code in (401, 403):
                raise ClusterError(f"the dashboard at {self.url} refused the token (HTTP "
                                   f"{exc.code}: {text[:200]})") from None
            raise ClusterError(f"{method} {path} at {self.url}: HTTP {exc.code}: "
                               f"{text.splitlines()[-1][:300] if text else exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClusterError(f"cannot reach the dashboard at {self.url} ({reason}); is the "
                               "cluster still up? (`invoke status`)") from None

    def json(self, method: str, path: str, body: dict | None = None) -> dict | list:
        return json.loads(self.request(method, path, body)[1] or b"null")

    # -- jobs

    def submit(self, entrypoint: str, runtime_env: dict, metadata: dict) -> str:
        answer = self.json("POST", "/api/jobs/", {"entrypoint": entrypoint,
                                                  "runtime_env": runtime_env,
                                                  "metadata": metadata})
        return answer["submission_id"]

    def info(self, job_id: str) -> dict:
        return self.json("GET", f"/api/jobs/{urllib.parse.quote(job_id)}")

    def logs(self, job_id: str) -> str:
        """The job's output so far. Ray's job-logs endpoint fails (HTTP 500) on output that is
        not UTF-8: then the driver's log file itself, read as bytes, with replacement
        characters where it is not UTF-8."""
        try:
            return self.json("GET", f"/api/jobs/{urllib.parse.quote(job_id)}/logs")["logs"]
        except ClusterError as exc:
            if not self.head_ip or "HTTP 5" not in str(exc):
                raise
            return self.node_log(self.head_ip, f"job-driver-{job_id}.log")

    def stop(self, job_id: str) -> None:
        self.request("POST", f"/api/jobs/{urllib.parse.quote(job_id)}/stop")

    def list(self) -> list[dict]:
        return [job for job in self.json("GET", "/api/jobs/") if job.get("submission_id")]

    # -- a working directory sent along

    def upload_dir(self, directory: Path) -> str:
        """Zip ``directory`` (as `ray job submit --working-dir` does) unless the cluster has it
        already; the gcs:// URI for the runtime_env."""
        data = zip_dir(directory)
        name = f"_ray_pkg_{hashlib.sha1(data).hexdigest()[:16]}.zip"
        status, _ = self.request("GET", f"/api/packages/gcs/{name}", ok=(200, 404))
        if status == 404:
            self.request("PUT", f"/api/packages/gcs/{name}", data=data)
        return f"gcs://{name}"

    # -- a node's Ray log files

    def node_log(self, node_ip: str, filename: str) -> str:
        query = urllib.parse.urlencode({"node_ip": node_ip, "filename": filename,
                                        "lines": LOG_LINES_ALL})
        return self.request("GET", f"/api/v0/logs/file?{query}")[1].decode(errors="replace")

    def node_log_files(self, node_ip: str) -> list[str]:
        query = urllib.parse.urlencode({"node_ip": node_ip})
        answer = self.json("GET", f"/api/v0/logs?{query}")
        groups = (answer.get("data") or {}).get("result") or {}
        return sorted({name for names in groups.values() for name in names
                       if not name.endswith("/")})


def zip_dir(directory: Path) -> bytes:
    """The directory's files, paths relative to it, without version control and caches."""
    buffer = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for root, dirs, files in os.walk(directory):
            dirs[:] = sorted(d for d in dirs if d not in UPLOAD_EXCLUDES)
            for name in sorted(files):
                path = Path(root, name)
                if not path.is_file():
                    continue
                total += path.stat().st_size
                if total > UPLOAD_MAX_BYTES:
                    raise UserError(f"--working-dir: {directory} holds more than "
                                    f"{UPLOAD_MAX_BYTES // 2**20} MiB to send; put it in the "
                                    "shared directory (the nodes read it there, nothing is sent)")
                archive.write(path, path.relative_to(directory).as_posix())
    return buffer.getvalue()


def follow_job(client: JobsClient, job_id: str, write: Callable[[str], None],
               signals: list[int] | None = None) -> JobResult:
    """Print the job's output as it comes until it ends; its result. A first signal (noted in
    ``signals`` by the caller's handler) stops the job and keeps following; a second one
    leaves it running and returns at once."""
    printed, handled, info = 0, 0, {}
    unreadable: list[str] = []  # why its output could not be read (said once)
    signals = signals if signals is not None else []
    while True:
        if len(signals) > handled:
            handled = len(signals)
            if handled > 1:
                return JobResult(job_id, "FOLLOWING STOPPED", 128 + signals[0],
                                 "left running")
            write(f"rayhpc: {signal.Signals(signals[0]).name}: stopping job {job_id}\n")
            client.stop(job_id)
        info = client.info(job_id)
        logs = _output(client, job_id, write, unreadable)
        if len(logs) > printed:
            write(logs[printed:])
            printed = len(logs)
        if info.get("status") in TERMINAL:
            # the last lines written before the end
            logs = _output(client, job_id, write, unreadable)
            if len(logs) > printed:
                write(logs[printed:])
            if logs and not logs.endswith("\n"):
                write("\n")
            code = 128 + signals[0] if signals else exit_code_of(info)
            # Why it failed, where its driver's exit code does not say (e.g. its runtime env);
            # Ray's message repeats the logs after its first line: keep that line.
            message = "" if isinstance(info.get("driver_exit_code"), int) else \
                (info.get("message") or "").strip().split("\n")[0]
            return JobResult(job_id, info["status"], code, message.rstrip(":, "))
        time.sleep(POLL_S)


def _output(client: JobsClient, job_id: str, write: Callable[[str], None],
            unreadable: list[str]) -> str:
    """The job's output so far; "" where it cannot be read (said once): the job's result comes
    from its status, never from whether its output could be fetched."""
    try:
        return client.logs(job_id)
    except ClusterError as exc:
        if not unreadable:
            unreadable.append(str(exc))
            write(f"rayhpc: warning: the output of job {job_id} cannot be read here ({exc}); "
                  "its result still comes\n")
        return ""


def iter_jobs(client: JobsClient) -> Iterator[dict]:
    """The cluster's submitted jobs, oldest first."""
    yield from sorted(client.list(), key=lambda job: job.get("start_time") or 0)
