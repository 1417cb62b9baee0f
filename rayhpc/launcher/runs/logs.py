"""`rayhpc logs`: the driver's or a Ray job's output, a node's agent log or Ray log file, while
the run lives (from the run directory and the dashboard) or after (from what was harvested)."""

from __future__ import annotations

import codecs
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from rayhpc.common.user_error import UserError
from rayhpc.launcher.contract import (
    NodeRecord,
    RecordError,
    UnsafeFile,
    list_names,
    open_for_reading,
)
from rayhpc.launcher.runs.jobs import (
    SHOW_BYTES,
    ClusterError,
    LogStream,
    follow_job,
    iter_jobs,
    write_output,
)
from rayhpc.launcher.runs.run import Run

READ_BYTES = 1 << 20  # of a file read and printed at a time


def logs(run: Run, write: Callable[[str], None], node: str | None = None,
         file: str | None = None, job: str | None = None, follow: bool = False,
         signals: list[int] | None = None) -> int:
    """The driver's output (or the Ray jobs' on an interactive cluster), a node's agent log,
    or one of a node's Ray log files; while the run lives, ``follow`` keeps printing."""
    if job:
        return _job_logs(run, job, write, follow, signals)
    if node is None:
        if file:
            raise UserError("--file: give the node too (--node NAME)")
        if run.spec.interactive:
            if follow:
                raise UserError("--follow: an interactive cluster runs many jobs; give one "
                                "with --job ID (`rayhpc logs --run ID` lists them)")
            return _all_job_logs(run, write)
        return _file(run, run.paths.driver_log, write, follow, signals)
    nodes = known_nodes(run)
    if node not in nodes:
        raise UserError(f"--node: run {run.run_id} has no node {node!r}; its nodes: "
                        f"{', '.join(nodes) or 'none has started yet'}")
    if not file:
        return _file(run, run.paths.node_log(node), write, follow, signals)
    return _ray_log(run, node, nodes[node], file, write, follow, signals)


def known_nodes(run: Run) -> dict[str, NodeRecord]:
    """Each node's record by name, and the nodes known only by the spec or by what they left
    in the run directory (a run whose head was killed recorded none)."""
    kept = [name.split(".")[0] for name in list_names(run.paths.logs, run.paths.dir)
            if name.endswith((".log", ".tar.gz")) and name != run.paths.containers_log.name]
    return {**{name: NodeRecord() for name in (*run.spec.node_names, *kept)}, **run.nodes()}


def _file(run: Run, path: Path, write, follow: bool, signals) -> int:
    """A file of the run directory; with ``follow``, what is added until the run ends."""
    offset = 0
    signals = signals if signals is not None else []
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while True:
        ended = run.exit_code is not None  # before the last read: nothing is missed
        try:
            with open_for_reading(path, run.paths.dir) as handle:
                handle.seek(offset)
                while chunk := handle.read(READ_BYTES):  # memory bounded by the chunk
                    write(decoder.decode(chunk))
                    offset += len(chunk)
        except FileNotFoundError:
            if not follow:
                raise UserError(f"--run: {path} does not exist (yet); the run is "
                                f"{run.phase()}") from None
        except UnsafeFile as exc:  # a link the containers planted: never followed
            raise RecordError(str(exc)) from None
        if not follow or ended or signals:
            write(decoder.decode(b"", True))
            return 0
        time.sleep(0.3)


def _harvested_job_logs(run: Run) -> dict[str, str]:
    """Job id -> the job's output kept with the head's Ray logs (once the run ended). Output
    the archive's cap cut at the start begins at its first whole line, after a line saying
    how much is missing; output the cap dropped whole is said too."""
    manifest = run.archive_manifest(run.head_node)
    # The head wrote the manifest: an entry not of its shape is not looked at.
    sizes = {entry["file"]: entry for entry in entries(manifest, "kept")}
    cap = run.spec.log_cap
    kept = {}
    for name, data in run.archived(run.head_node).items():
        job = job_of_log(name)
        if not job:
            continue
        entry = sizes.get(name) or {}
        total, part = entry.get("bytes", 0), entry.get("kept_bytes", entry.get("bytes", 0))
        missing = total - part if isinstance(total, int) and isinstance(part, int) else 0
        if missing > 0:
            start = data.find(b"\n") + 1  # the first whole line
            missing += start
            kept[job] = (f"rayhpc: job {job}'s output starts mid-way: its first {missing} of "
                         f"{entry['bytes']} bytes were dropped (the head keeps at most "
                         f"log_cap = {cap} bytes of logs)\n"
                         + data[start:].decode(errors="replace"))
        else:
            kept[job] = data.decode(errors="replace")
    for entry in entries(manifest, "dropped"):
        job = job_of_log(entry["file"])
        if job and job not in kept:
            kept[job] = (f"rayhpc: job {job}'s output ({entry.get('bytes')} bytes) was not "
                         f"kept: {entry.get('why')}\n")
    return kept


def entries(manifest: dict, key: str) -> list[dict]:
    """The manifest's entries under ``key`` that are objects naming a file."""
    found = manifest.get(key)
    return [entry for entry in found if isinstance(entry, dict)
            and isinstance(entry.get("file"), str)] if isinstance(found, list) else []


def job_of_log(name: str) -> str:
    """The job id of a job's output file in a head's archive ("": not one)."""
    if name.startswith("job-driver-") and name.endswith(".log"):
        return name[len("job-driver-"):-len(".log")]
    return ""


def _job_logs(run: Run, job: str, write, follow: bool, signals) -> int:
    if run.up:
        client = run.client()
        if follow:
            result = follow_job(client, job, write, signals)
            return result.exit_code
        status, _ = client.request("GET", f"/api/jobs/{job}", ok=(200, 404))
        if status == 404:
            raise UserError(f"--job: run {run.run_id} has no job {job!r}; `rayhpc logs "
                            f"{run.flags}` lists them")
        write_output(client, job, write)
        return 0
    kept = _harvested_job_logs(run)
    if job not in kept:
        raise UserError(f"--job: no output of job {job!r} in run {run.run_id} (kept: "
                        f"{', '.join(kept) or 'none'})")
    write(kept[job])
    return 0


def _all_job_logs(run: Run, write) -> int:
    if run.up:
        client = run.client()
        jobs = list(iter_jobs(client))
        for info in jobs:
            write(f"== job {info['submission_id']} ({info.get('status')}): "
                  f"{info.get('entrypoint')}\n")
            write_output(client, info["submission_id"], write, info)
        if not jobs:
            write(f"rayhpc: no jobs submitted to run {run.run_id} yet\n")
        return 0
    kept = _harvested_job_logs(run)
    for job, text in kept.items():
        write(f"== job {job}\n")
        write(text)
    if not kept:
        write(f"rayhpc: no job output kept in {run.paths.node_archive(run.head_node)} ("
              f"{run.phase()})\n")
    return 0


def _ray_log(run: Run, node: str, record: NodeRecord, file: str, write, follow: bool,
             signals) -> int:
    kept = run.archived(node)
    if kept or not run.up:
        if file not in kept:
            raise UserError(f"--file: no {file!r} among the logs kept of {node} (there: "
                            f"{', '.join(sorted(kept)[:12]) or 'none'})")
        write(kept[file].decode(errors="replace"))
        return 0
    client = run.client()
    files = client.node_log_files(record.ip or "")
    if file not in files:
        raise UserError(f"--file: {node} has no Ray log {file!r} (there: "
                        f"{', '.join(files[:12])}{' ...' if len(files) > 12 else ''})")
    # Streamed: the file from its start (and, following, what is added) over one connection.
    query = urllib.parse.urlencode({"node_ip": record.ip or "", "filename": file,
                                    "lines": -1})
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    ends_line = True
    if not follow:
        chunks: Iterable[bytes] = client.chunks(f"/api/v0/logs/file?{query}")
    else:
        stream = LogStream(client, f"/api/v0/logs/stream?{query}&interval=0.5").start()
        chunks = _until_stopped(stream, run, signals if signals is not None else [])
    for chunk in chunks:
        if text := decoder.decode(chunk):
            write(text)
            ends_line = text.endswith("\n")
    if not ends_line:
        write("\n")
    return 0


def _until_stopped(stream: LogStream, run: Run, signals: list[int]) -> Iterator[bytes]:
    """What a followed stream brings until a signal, the run's end or the stream's."""
    next_check = 0.0
    while not signals:
        data = stream.take(SHOW_BYTES)
        if data:
            yield data
            continue
        if stream.ended.is_set():
            if stream.problem and _answers(run):
                raise ClusterError(stream.problem)
            return  # a stream cut as its cluster stops is the end of following
        if time.monotonic() >= next_check:
            next_check = time.monotonic() + 2.0
            if not run.up:
                return
        time.sleep(0.1)


def _answers(run: Run) -> bool:
    """Whether the run's cluster is up and its dashboard answers."""
    if not run.up:
        return False
    try:
        run.client().list()
    except ClusterError:
        return False
    return True
