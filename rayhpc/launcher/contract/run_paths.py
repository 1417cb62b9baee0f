"""The run directory, <shared>/runs/<run-id>/: every file's path and its one writer
(`RunPaths`), and the naming of grown blocks and their nodes. Standard library only."""

from __future__ import annotations

import re
from pathlib import Path

from rayhpc.launcher.contract.untrusted_files import (
    create_exclusive,
    exists,
    list_names,
    read_text_quietly,
)

FINAL_STATES = ("stopped", "lost-head", "failed")  # a node's state once its agent ended
NODE_PROGRAM = "node_agent.pyz"  # the node program as delivered: one file that Python runs
LEFT = "left"  # the head's word for a node of a block it released (drained, then stopped)

# Blocks: worker-only jobs (or compose projects) that join a running cluster (`rayhpc grow`).
# The launch's own job is block 1; grown blocks are b2, b3, ... and their nodes are named
# `<block>-<node>` (b2-worker-1 locally, b2-<host> on a batch site): unique across blocks.
FIRST_GROWN_BLOCK = 2


# Ray's drain deadline for a released block's nodes, and how long the head waits for them to
# go idle before stopping them (their tasks then fail over as on a lost node: Ray retries them).
DRAIN_MAX_S = 30


def drain_window(stop_grace: int) -> int:
    """How long a released block's nodes may finish their work: half the walltime grace (the
    rest is for stopping Ray and keeping the logs), at most DRAIN_MAX_S."""
    return max(0, min(DRAIN_MAX_S, stop_grace // 2))


def block_name(number: int) -> str:
    return f"b{number}"


def block_node_name(block: str, node: str) -> str:
    """A block's node's name: its block before its own (host) name."""
    return f"{block}-{node}"


class RunPaths:
    """Every file of a run directory, and who writes it.

    launcher (`rayhpc launch`, before any node starts; never changed after):
      spec.json, node_agent.pyz (the node program), auth_token (0600), compose.yaml (local) or
      job.sh and job_id (batch; job.out is the scheduler's; a PBS job that submits itself
      again for the run's next attempt writes the new job's id)
    head agent:
      head.json (address, once), status.json (join progress, lost nodes, notes; at most once a
      second), driver.log, connect.txt (interactive clusters: how to connect, once every node
      joined), timing.json, timeline.svg (the bring-up picture, from timing.json and
      nodes.json; `rayhpc report` rewrites it), error, exit_code (last: the run is over)
    each node's agent, once, at its end:
      logs/<node>.log (its agent's lines, opened once and appended to as it goes)
      logs/<node>.tar.gz (Ray's logs, capped; MANIFEST.json inside says what was kept and
      dropped); its final record goes to the head over the network, and the head
      writes every node's in nodes.json; a node that cannot tell the head (it never reached it,
      or the head is gone) writes its own, nodes/<node>.json
    stop (a request, written once with O_EXCL by whoever asks first; the text says who):
      the job script (walltime warning or its own walltime timer, scancel --batch), the
      launcher, or the head at teardown
    blocks/ (`rayhpc grow`; see `Block`): per grown block B, written by the launcher:
      B.json (its record: once at submission, again when its job id is known or it is
      released), B.pyz (the node program with the block's spec), B.sh and B.out (batch: its
      job script and the scheduler's output) or B.yaml (local: its compose file);
      B.stop (a request to release the block, O_EXCL like stop: `rayhpc shrink` or the
      block's own job script at its walltime warning; `rayhpc down` writes none, the head's
      teardown stops every node). The head lists blocks/
      once a second (one directory read whatever the block count), drains a released
      block's nodes and stops them; it counts every block's nodes in status.json.
    restarting (the head, before exit_code, when the run starts again: `--restarts`; the
      text says why) and attempts/<n>/ (the job script or the local launcher, as each attempt
      starts: `started`; the files of attempt n once n + 1 starts: `contract.attempts`)
    change.lock and autoscale.lock (host side: `runs.run_lock`): grow, shrink and down hold
      the first while they change the run, an autoscale loop the second for its life
    the job script, only when no agent can start (the container runtime is not on PATH after
      the site's setup): error, then exit_code
    the local launcher, only where no agent can any more:
      logs/containers.log (the containers' own output); logs/<node>.tar.gz of a node whose
      agent wrote none (Ray's logs copied out of its stopped container); and error,
      exit_code and timing.json when the head's container exited before writing them.
    """

    def __init__(self, run_dir: Path | str):
        self.dir = Path(run_dir)
        self.spec = self.dir / "spec.json"
        self.node_program = self.dir / NODE_PROGRAM
        self.auth_token = self.dir / "auth_token"
        self.compose_file = self.dir / "compose.yaml"
        self.job_script = self.dir / "job.sh"
        self.job_id = self.dir / "job_id"
        self.job_output = self.dir / "job.out"
        self.head = self.dir / "head.json"
        self.status = self.dir / "status.json"
        self.driver_log = self.dir / "driver.log"
        self.connect = self.dir / "connect.txt"
        self.timing = self.dir / "timing.json"
        self.timeline = self.dir / "timeline.svg"
        self.error = self.dir / "error"
        self.exit_code = self.dir / "exit_code"
        self.stop = self.dir / "stop"
        self.nodes = self.dir / "nodes"
        self.nodes_file = self.dir / "nodes.json"
        self.logs = self.dir / "logs"
        self.containers_log = self.logs / "containers.log"
        self.blocks = self.dir / "blocks"
        self.attempts = self.dir / "attempts"
        self.restarting = self.dir / "restarting"
        self.change_lock = self.dir / "change.lock"
        self.autoscale_lock = self.dir / "autoscale.lock"

    def attempt_dir(self, attempt: int) -> Path:
        """attempts/<n>/: where an attempt's files go once the next one starts."""
        return self.attempts / str(attempt)

    def attempt_files(self) -> list[Path]:
        """The files (and directories) of one attempt, the current one's at the top."""
        return [self.head, self.status, self.driver_log, self.connect, self.timing,
                self.timeline, self.error, self.exit_code, self.stop, self.restarting,
                self.nodes_file, self.nodes, self.logs]

    def node_record(self, node: str) -> Path:
        return self.nodes / f"{node}.json"

    def node_archive(self, node: str) -> Path:
        return self.logs / f"{node}.tar.gz"

    def node_log(self, node: str) -> Path:
        """A node's agent log, appended to as it goes (one open per node)."""
        return self.logs / f"{node}.log"

    def agent_command(self, *args: str, program: Path | None = None) -> list[str]:
        """How a container starts the node program: `python node_agent.pyz --run-dir DIR
        [ARGS]` (the node program's own flags: see `launcher.node.main`); ``program``: another
        build of it (a block's, with the block's spec inside)."""
        return ["python", str(program or self.node_program), "--run-dir", str(self.dir), *args]

    def block_file(self, block: str, suffix: str) -> Path:
        """A grown block's file: blocks/<block>.<suffix> (json, pyz, sh, out, yaml, stop)."""
        return self.blocks / f"{block}.{suffix}"

    def request_block_stop(self, block: str, who: str) -> bool:
        """Ask the head to release a block (its stop file, made once); True if this call made
        it."""
        return create_exclusive(self.block_file(block, "stop"), (who + "\n").encode(),
                                self.dir)

    def released_blocks(self) -> set[str]:
        """The blocks asked to leave (their stop files): one read of blocks/, whatever the
        number of blocks."""
        return {name[:-len(".stop")] for name in list_names(self.blocks, self.dir)
                if name.endswith(".stop")}

    def request_stop(self, who: str) -> bool:
        """Create the stop file unless it exists; True if this call made it."""
        return create_exclusive(self.stop, (who + "\n").encode(), self.dir)

    def exists(self, path: Path) -> bool:
        """Whether a file (or directory) of the run directory is there, no link followed."""
        return exists(path, self.dir)

    def read_stop_request(self) -> str:
        """Who asked the run to stop ("" : nobody yet), from the stop file's first line."""
        return self.first_line(self.stop, 200)

    def read_restarting(self) -> str:
        """Why the current attempt ended and which follows ("" : the run does not go on)."""
        return self.first_line(self.restarting)

    def first_line(self, path: Path, most: int = 300) -> str:
        """A small text file's first line, printable characters only, at most ``most`` of
        them ("" : missing): the containers write these files, the terminal shows them."""
        text = read_text_quietly(path, self.dir, limit=4096).splitlines()
        return "".join(c for c in (text or [""])[0][:most] if c.isprintable()).strip()

    def read_exit_code(self) -> int | None:
        """The run's exit code (None: not written, or not a shell's exit status, or the
        attempt that wrote it is followed by another: `restarting`)."""
        if self.exists(self.restarting):
            return None
        text = read_text_quietly(self.exit_code, self.dir).strip()
        return int(text) if re.fullmatch(r"-?[0-9]{1,4}", text) else None

    def read_error(self) -> str:
        return read_text_quietly(self.error, self.dir).strip()
