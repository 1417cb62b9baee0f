"""Ray jobs on a running cluster, through the dashboard's REST API (the Ray Jobs API), with the
run's token: no Ray on this machine. `rayhpc submit` and `Cluster.submit` use it.

  POST /api/jobs/                  submit: {"entrypoint", "runtime_env", "metadata"}
  GET  /api/jobs/{id}              status, driver_exit_code, message
  GET  /api/v0/logs/stream?submission_id=ID&lines=-1&node_id=N
                                   the job's output from its start and then as it is
                                   written: bytes, one connection (the state API's log
                                   endpoint. Ray's own `ray job logs --follow` uses the
                                   jobs API's websocket /api/jobs/{id}/logs/tail, which
                                   sends text read line by line in text mode, and so
                                   breaks on output that is not UTF-8: Ray 2.60,
                                   dashboard/modules/job/utils.py, file_tail_iterator)
  GET  /api/v0/logs/file?submission_id=ID&lines=N
                                   its last N lines (-1: all), bytes
  POST /api/jobs/{id}/stop         stop it
  GET|PUT /api/packages/gcs/{name} a working directory sent along (zip), as `ray job submit`
  GET  /api/v0/logs/{file|stream}?node_ip=IP&filename=F&lines=-1
                                   a node's Ray log file (`rayhpc logs --node N --file F`)

Every request carries `Authorization: Bearer <token>` (Ray 2.52+ token authentication; without
it the dashboard answers 401, with a wrong one 403).
"""

from __future__ import annotations

import codecs
import hashlib
import http.client
import io
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rayhpc.common.user_error import UserError
from rayhpc.launcher.chunks import ChunkQueue

POLL_S = 0.5
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# Ray's own limit for a working directory sent through the GCS is 500 MiB; keep well below it.
UPLOAD_MAX_BYTES = 100 * 1024 * 1024
UPLOAD_EXCLUDES = (".git", "__pycache__", ".venv")
CHUNK_BYTES = 1 << 16  # read from the dashboard at a time
SHOW_BYTES = 1 << 20  # of a job's output printed per step of the follow loop
STREAM_INTERVAL_S = 0.2  # how often Ray's log agent looks for more while following
QUIET_S = 1.0  # after the job ended: no more output for this long, then check the end
END_WAIT_S = 30.0  # after the job ended: the longest wait for the stream to bring the rest
TAIL_LINES = 20  # the end of the output compared with what was shown
TAIL_BYTES = 1 << 16  # at most this much of that end


class ClusterError(Exception):
    """The cluster did not answer as it should (not bad input): one line, exit 1."""


class _Refused(Exception):
    """An HTTP error answer: its code and text, and the ClusterError it means."""

    def __init__(self, code: int, text: str, error: ClusterError):
        super().__init__(str(error))
        self.code, self.text, self.error = code, text, error


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
        try:
            with self._open(method, path, body, data) as response:
                return response.status, response.read()
        except _Refused as refused:
            if refused.code in ok:
                return refused.code, refused.text.encode()
            raise refused.error from None

    def chunks(self, path: str, timeout: float | None = None) -> Iterator[bytes]:
        """A GET's answer as it comes, in chunks (memory bounded whatever its size);
        ``timeout`` None: it may be quiet for as long as the job is."""
        try:
            with self._open("GET", path, timeout=timeout) as response:
                while chunk := response.read1(CHUNK_BYTES):
                    yield chunk
        except _Refused as refused:
            raise refused.error from None
        except (OSError, http.client.HTTPException) as exc:  # the connection broke mid-answer
            # (a chunked answer cut short is http.client.IncompleteRead, not an OSError)
            raise ClusterError(f"GET {path.split('?')[0]} at {self.url}: {exc}") from None

    def _open(self, method: str, path: str, body: dict | None = None, data: bytes | None = None,
              timeout: float | None | bool = False):
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            return urllib.request.urlopen(req, timeout=self.timeout if timeout is False
                                          else timeout)
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace").strip()
            if exc.code in (401, 403):
                error = ClusterError(f"the dashboard at {self.url} refused the token (HTTP "
                                     f"{exc.code}: {text[:200]})")
            else:
                error = ClusterError(f"{method} {path.split('?')[0]} at {self.url}: HTTP "
                                     f"{exc.code}: "
                                     f"{text.splitlines()[-1][:300] if text else exc.reason}")
            raise _Refused(exc.code, text, error) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClusterError(f"cannot reach the dashboard at {self.url} ({reason}); is the "
                               "cluster still up? (`rayhpc status`)") from None

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

    def log_query(self, job_id: str, info: dict, **options: object) -> str:
        """The state API's query for a job's output: the job, and a node (the API asks for
        one, though the job's own driver node is what it reads)."""
        where = {"node_id": info["driver_node_id"]} if info.get("driver_node_id") else \
            {"node_ip": self.head_ip}
        return urllib.parse.urlencode({"submission_id": job_id, **where, **options})

    def output(self, job_id: str, info: dict | None = None) -> Iterator[bytes]:
        """The job's whole output so far, as written (bytes), in chunks."""
        info = info if info is not None else self.info(job_id)
        return self.chunks(f"/api/v0/logs/file?{self.log_query(job_id, info, lines=-1)}")

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


class LogStream(ChunkQueue):
    """One of the state API's log streams (a file from its start, then what is added, as
    bytes, over one connection) read in a thread and queued for the console: memory bounded
    whatever the file's size (the thread waits while the queue is full)."""

    def __init__(self, client: JobsClient, path: str):
        super().__init__()
        self.client, self.path = client, path
        self.received_at = time.monotonic()  # when a chunk last came
        self.ended = threading.Event()  # the stream ended (the connection closed or failed)
        self.problem = ""  # why it failed

    def start(self) -> LogStream:
        threading.Thread(target=self._follow, daemon=True).start()
        return self

    def _follow(self) -> None:
        try:
            for chunk in self.client.chunks(self.path, timeout=None):
                self.received_at = time.monotonic()
                self.put(chunk)
        except ClusterError as exc:
            self.problem = str(exc)
        finally:
            self.ended.set()



class JobOutput:
    """A job's output as it is written: its driver's log file followed through a `LogStream`
    once the driver runs."""

    def __init__(self, client: JobsClient, job_id: str):
        self.client, self.job_id = client, job_id
        self.shown = 0  # bytes taken for the console
        self._last = bytearray()  # the last TAIL_BYTES of them
        self.stream: LogStream | None = None

    @property
    def problem(self) -> str:
        return self.stream.problem if self.stream is not None else ""

    def start(self, info: dict) -> None:
        """Once the job's driver runs (its log file exists from then on)."""
        if self.stream is None and (info.get("driver_node_id")
                                    or info.get("status") in ("RUNNING", *TERMINAL)):
            query = self.client.log_query(self.job_id, info, lines=-1,
                                          interval=STREAM_INTERVAL_S)
            self.stream = LogStream(self.client, f"/api/v0/logs/stream?{query}").start()

    def take(self, limit: int = SHOW_BYTES) -> bytes:
        out = self.stream.take(limit) if self.stream is not None else b""
        self.shown += len(out)
        self._last += out
        del self._last[:max(0, len(self._last) - TAIL_BYTES)]
        return out

    def waiting(self) -> bool:
        return self.stream is not None and self.stream.waiting()

    def finish(self, info: dict, show: Callable[[bytes], None]) -> None:
        """The job ended: show the rest. The stream stays open (it follows the file), so the
        end is when it has been quiet a while and what was shown ends as the file does; where
        that is not so within END_WAIT_S, the rest comes from the whole file, past what was
        shown (more traffic, once)."""
        deadline = time.monotonic() + END_WAIT_S
        stream = self.stream
        while stream is not None and not stream.ended.is_set() \
                and time.monotonic() < deadline:
            data = self.take()
            if data:
                show(data)
            elif time.monotonic() - stream.received_at >= QUIET_S:
                if self._complete(info):
                    return
                stream.received_at = time.monotonic()  # look again after another quiet spell
            else:
                time.sleep(0.05)
        while data := self.take():
            show(data)
        skip = self.shown
        for chunk in self.client.output(self.job_id, info):
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            show(chunk[skip:])
            skip = 0

    def _complete(self, info: dict) -> bool:
        """Whether what was shown ends with the job's last lines."""
        query = self.client.log_query(self.job_id, info, lines=TAIL_LINES)
        end = bytearray()
        for chunk in self.client.chunks(f"/api/v0/logs/file?{query}"):
            end += chunk
            del end[:max(0, len(end) - TAIL_BYTES)]
        return len(end) <= len(self._last) and self._last.endswith(end)


def follow_job(client: JobsClient, job_id: str, write: Callable[[str], None],
               signals: list[int] | None = None) -> JobResult:
    """Print the job's output as it comes until it ends; its result. A first signal (noted in
    ``signals`` by the caller's handler) stops the job and keeps following; a second one
    leaves it running and returns at once. Output that is not UTF-8 is shown with
    replacement characters."""
    handled, info, next_info = 0, {}, 0.0
    signals = signals if signals is not None else []
    output = JobOutput(client, job_id)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    ends_line = [True]

    def show(data: bytes, final: bool = False) -> None:
        text = decoder.decode(data, final)
        if text:
            write(text)
            ends_line[0] = text.endswith("\n")

    while True:
        if len(signals) > handled:
            handled = len(signals)
            if handled > 1:
                return JobResult(job_id, "FOLLOWING STOPPED", 128 + signals[0],
                                 "left running")
            write(f"rayhpc: {signal.Signals(signals[0]).name}: stopping job {job_id}\n")
            client.stop(job_id)
        if time.monotonic() >= next_info:
            next_info = time.monotonic() + POLL_S
            info = client.info(job_id)
            output.start(info)
        show(output.take())
        if info.get("status") in TERMINAL:
            try:
                output.finish(info, show)
            except ClusterError as exc:  # the result still comes from the job's status
                # (a job that failed before its driver ran has no output: its message says)
                if output.shown or isinstance(info.get("driver_exit_code"), int):
                    write(f"{'' if ends_line[0] else chr(10)}rayhpc: warning: the output of "
                          f"job {job_id} cannot be read here ({output.problem or exc}); its "
                          "result still comes\n")
                    ends_line[0] = True
            show(b"", final=True)
            if not ends_line[0]:
                write("\n")
            code = 128 + signals[0] if signals else exit_code_of(info)
            # Why it failed, where its driver's exit code does not say (e.g. its runtime env);
            # Ray's message repeats the logs after its first line: keep that line.
            message = "" if isinstance(info.get("driver_exit_code"), int) else \
                (info.get("message") or "").strip().split("\n")[0]
            return JobResult(job_id, info["status"], code, message.rstrip(":, "))
        if not output.waiting():
            time.sleep(POLL_S / 5)


def write_output(client: JobsClient, job_id: str, write: Callable[[str], None],
                 info: dict | None = None) -> None:
    """A job's whole output so far, streamed (with replacement characters where it is not
    UTF-8)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for chunk in client.output(job_id, info):
        if text := decoder.decode(chunk):
            write(text)
    if text := decoder.decode(b"", True):
        write(text)


def iter_jobs(client: JobsClient) -> Iterator[dict]:
    """The cluster's submitted jobs, oldest first."""
    yield from sorted(client.list(), key=lambda job: job.get("start_time") or 0)
