"""The docs run as written: every fenced block of README.md and docs/ is run here (its commands
in one shell, from a fresh directory, with `rayhpc` on PATH, on the local site and as dry runs
for HPC sites) and what it prints compared with the page's sample, or is marked as not
runnable here with the reason (see tests/docs_blocks.py for the markers and the comparison)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from rayhpc.containers.recipe import DEFAULT_RECIPE, load_recipe
from tests import PROJECT_ROOT
from tests.docs_blocks import Block, blocks_of, match_sample, pages, steps_of

RUNNABLE = [block for page in pages(PROJECT_ROOT) for block in blocks_of(page) if block.runs]
STEP_TIMEOUT_S = 600


class Shell:
    """One bash for a page's blocks: each command's output (stdout and stderr, as a
    terminal shows them) and exit status; `$?`, variables and `cd` carry over."""

    def __init__(self, cwd: Path, env: dict[str, str]):
        self.proc = subprocess.Popen(["bash", "--norc", "--noprofile"], cwd=cwd, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, errors="replace")

    def run(self, command: str) -> tuple[int, list[str]]:
        end = f"@@docs-test {uuid.uuid4().hex}@@"
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{command}\n__rc=$?; echo; echo \"{end} $__rc\"; "
                              "(exit $__rc)\n")
        self.proc.stdin.flush()
        lines = []
        for line in self.proc.stdout:
            if line.startswith(end):
                if lines and lines[-1] == "":
                    lines.pop()  # the echo that ends a last line without a newline
                return int(line.split()[-1]), lines
            lines.append(line.rstrip("\n"))
        raise AssertionError(f"the shell ended during {command!r}: {lines[-20:]}")

    def close(self) -> None:
        self.proc.kill()


def page_env(bin_dir: Path, home: Path) -> dict[str, str]:
    """`rayhpc` and `python` of this checkout's venv first on PATH; a home of the test's own
    (a page may write a shell's startup file); no RAYHPC_* setting of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAYHPC_")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", HOME=str(home))
    return env


def tmp_paths(command: str, base: Path) -> str:
    """A /tmp/NAME the page names (a shared dir of its sample) made under this test's own
    directory, as the containers' user can use it."""
    def moved(match: re.Match) -> str:
        path = base / match.group(1)
        if not path.exists():
            path.mkdir(mode=0o755)
            if os.geteuid() == 0:
                os.chown(path, 1000, 100)
        return str(path)
    return re.sub(r"/tmp/([\w.-]+)", moved, command)


@pytest.mark.docker
@pytest.mark.parametrize("page", sorted({b.page for b in RUNNABLE}), ids=lambda p: p.name)
def test_the_pages_commands_run_and_print_their_samples(docker_api, built_image, page):
    image, _ = built_image
    # The pages' launches without --image use the default image: this session's build of the
    # same recipe on the same base, tagged so where it is missing (not built twice).
    default = load_recipe(DEFAULT_RECIPE).image_tag("cpu")
    if not docker_api.images(name=default):
        docker_api.tag(image, *default.rsplit(":", 1))
    # Where the containers' user can reach it (pytest's own tmp dirs are root's only), as a
    # cluster's file system is; a home of its own beside it.
    work = Path(tempfile.mkdtemp(prefix=f"rayhpc-docs-{page.stem}-"))
    work.chmod(0o755)
    if os.geteuid() == 0:
        os.chown(work, 1000, 100)
    home = Path(tempfile.mkdtemp(prefix="rayhpc-docs-home-"))
    env = page_env(Path(sys.executable).parent, home)
    shells = {False: Shell(work, env), True: Shell(PROJECT_ROOT, env)}
    ids: dict[str, str] = {}
    last: list[str] = []
    try:
        for block in (b for b in RUNNABLE if b.page == page):
            run_block(block, shells[block.marker == "run in checkout"], work, ids, last)
    finally:
        for shell in shells.values():
            shell.close()
        subprocess.run([sys.executable, "-m", "invoke", "-r", str(PROJECT_ROOT), "down"],
                       capture_output=True, timeout=300)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


def run_block(block: Block, shell: Shell, work: Path, ids: dict[str, str],
              last: list[str]) -> None:
    """Run the block's commands (``last``: the output of the one before, kept for a block
    that shows it)."""
    if block.marker == "output of the block above":
        problem, found = match_sample(block.lines, last)
        assert not problem, f"{block.where}: {problem}\n" + "\n".join(last[-40:])
        ids.update(found)
        return
    for step in steps_of(block):
        command = tmp_paths(step.command, work)
        for named, ours in ids.items():
            command = command.replace(named, ours)
        code, output = shell.run(command)
        last[:] = output
        shown = "\n".join(output[-40:])
        if not step.sample:
            assert code == 0, f"{block.where}: `{command}` exited {code}:\n{shown}"
            continue
        problem, found = match_sample(step.sample, output)
        assert not problem, f"{block.where}: `{command}` (exit {code}): {problem}\n{shown}"
        ids.update(found)
