"""Helpers of the real-engine launch tests: run `rayhpc launch`, check what a run leaves."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

from rayhpc.launcher.backends.local.compose import RUN_LABEL
from tests.cli import invoke, invoke_argv

TIMING_FIELDS = ("t_submit", "t_head_up", "t_all_joined", "t_driver_start", "t_driver_end",
                 "t_teardown_done")


def launch_args(image: str, shared: Path, *args: str) -> tuple[str, ...]:
    return ("launch", "--site", "local", "--image", image, "--shared", str(shared), *args)


def launch(image: str, shared: Path, *args: str, env: dict | None = None) -> tuple:
    """`rayhpc launch` on the local site to the end: the result and the run directory."""
    result = invoke(*launch_args(image, shared, *args), timeout=600, env=env)
    return result, run_dir_of(result.stdout, shared)


def run_dir_of(output: str, shared: Path) -> Path | None:
    match = re.search(r"rayhpc: run (\S+): ", output)
    return shared / "runs" / match.group(1) if match else None


class Background:
    """`rayhpc launch` running in the background, its output read line by line."""

    def __init__(self, image: str, shared: Path, *args: str, own_group: bool = False):
        """``own_group``: the leader of its own process group, as a terminal runs it."""
        self.shared = shared
        self.proc = subprocess.Popen(invoke_argv(*launch_args(image, shared, *args)),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=own_group)
        self.lines: list[str] = []

    def wait_for_line(self, line: str | re.Pattern) -> None:
        """Read output until a line that is ``line`` (the driver's cue) or matches it."""
        assert self.proc.stdout is not None
        for got in self.proc.stdout:
            self.lines.append(got)
            if (line.match(got) if isinstance(line, re.Pattern) else got.strip() == line):
                return
        raise AssertionError(f"launch ended before {line!r}:\n{self.output[-3000:]}")

    def finish(self, timeout: float = 300) -> str:
        rest, _ = self.proc.communicate(timeout=timeout)
        self.lines.append(rest)
        return self.output

    def completed(self) -> subprocess.CompletedProcess:
        """The finished launch, as `launch()` returns it (stderr is merged into stdout)."""
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, self.output, "")

    @property
    def output(self) -> str:
        return "".join(self.lines)

    @property
    def run_dir(self) -> Path | None:
        return run_dir_of(self.output, self.shared)


def archived(run_dir: Path, node: str) -> dict[str, bytes]:
    """The files of a node's log archive (logs/<node>.tar.gz), by name."""
    path = run_dir / "logs" / f"{node}.tar.gz"
    if not path.is_file():
        return {}
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def leftovers(api, run_id: str) -> list[str]:
    """Containers, networks and volumes of the run still on the engine."""
    project = f"rayhpc-{run_id}"
    found = [c["Names"][0] for c in api.containers(all=True, filters={"label": RUN_LABEL})
             if c["Labels"][RUN_LABEL] == run_id]
    found += [c["Names"][0] for c in api.containers(
        all=True, filters={"label": f"com.docker.compose.project={project}"})]
    found += [n["Name"] for n in api.networks() if n["Name"].startswith(project)]
    found += [v["Name"] for v in api.volumes(
        filters={"label": f"com.docker.compose.project={project}"}).get("Volumes") or []]
    return found


def assert_clean_run(api, result, run_dir: Path, nodes: int, code: int = 0,
                     lost: str = "", groups: str = "") -> dict:
    """What every finished run must leave: exit code, timing, harvested logs, the timeline,
    nothing running.

    ``lost``: the summary's list of nodes lost during the run ("worker-2"), if any;
    ``groups``: a pattern of its node groups ("head: 1 node, 2 CPUs, 0 GPUs; ..."), if any.
    """
    assert run_dir is not None, result.stdout + result.stderr
    assert result.returncode == code, result.stdout[-3000:] + result.stderr[-3000:]
    assert (run_dir / "exit_code").read_text().strip() == str(code)
    timing = json.loads((run_dir / "timing.json").read_text())
    times = [timing[name] for name in TIMING_FIELDS]
    assert all(isinstance(t, float) for t in times), timing
    assert times == sorted(times), f"timing out of order: {timing}"
    assert timing["nodes_expected"] == timing["nodes_joined"] == nodes
    names = json.loads((run_dir / "spec.json").read_text())["node_names"]
    assert len(names) == nodes and names[0] == "head"
    for node in names:
        assert "raylet.out" in archived(run_dir, node), f"no raylet log of {node}"
    assert "gcs_server.out" in archived(run_dir, "head")
    head = json.loads((run_dir / "head.json").read_text())
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+:\d+", head["address"])
    # Yours alone; as root, root's and the containers' private group's (docs/security.md).
    token = (run_dir / "auth_token").stat()
    assert oct(token.st_mode & 0o777) == ("0o640" if os.geteuid() == 0 else "0o600")
    if os.geteuid() == 0:
        assert (token.st_uid, token.st_gid) == (0, run_dir.stat().st_gid)
    # The head drew the bring-up: a row for every node, the joins counted.
    timeline = (run_dir / "timeline.svg").read_text()
    assert f"{nodes}/{nodes} nodes joined" in timeline
    assert all(f">{node}</text>" in timeline for node in names) or nodes > 40
    assert leftovers(api, run_dir.name) == []
    summary = result.stdout.strip().splitlines()[-1]
    lost_part = rf" \(lost: {lost}\)" if lost else ""
    groups_part = rf" \({groups}\)" if groups else ""
    assert re.match(rf"rayhpc: run {run_dir.name}: {nodes}/{nodes} nodes{groups_part}{lost_part}, "
                    rf"bring-up "
                    rf"[\d.]+ s, driver [\d.]+ s, teardown [\d.]+ s, exit code {code}$",
                    summary), summary
    return timing
