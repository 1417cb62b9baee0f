"""The docs' fenced blocks, and how the docs test runs them (tests/test_docs_run.py).

Every fenced block of README.md and docs/*.md has a marker on the line just before it:

  <!-- docs-test: run -->            run here: its `$ ` lines are commands, the lines after each
                                     the output it must print; a block with no `$ ` line is a
                                     list of commands, each of which must succeed
  <!-- docs-test: run in checkout --> the same, from the checkout instead of a fresh directory
  <!-- docs-test: output of the block above -->  what the last command of the block before
                                     printed (a sample shown apart from its command)
  <!-- docs-test: skip: REASON -->   not runnable here, and why (a real HPC site, a GPU, ...)

Output samples are compared line by line: each sample line must match a line of what the
command printed, in order (lines in between are allowed: Ray's INFO lines, which the pages
leave out, say so). In a sample line, run ids, job ids, numbers that differ between runs and
machines (times, ports, sizes, CPU counts) and /tmp/... paths stand for any such value, and
`...` for anything; a line that is only `...` stands for any lines. A Python block is run as
a script. The run ids and job ids a sample's commands name are those its output
printed: the test maps each to the one this run printed and uses it in the commands after.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

MARKER = re.compile(r"<!-- docs-test: (run(?: in checkout)?|output of the block above|"
                    r"skip: (?P<why>.+?)) -->")
FENCE = re.compile(r"^```(\S*)\s*$")
# What a sample line may say in place of the value this run printed.
RUN_ID = r"\d{8}-\d{6}-[0-9a-f]{4}"
JOB_ID = r"raysubmit_[A-Za-z0-9]+"
# Numbers that differ from run to run and machine to machine: times, ports and pids (4 digits
# or more), decimals, counts of CPUs, bytes and seconds. Other numbers (exit codes, node
# counts) must be as the sample says.
VALUES = re.compile(rf"(?P<run>{RUN_ID})|(?P<job>{JOB_ID})|(?P<tmp>/tmp/[^\s/`'\"]+)|"
                    r"(?P<etc>\.\.\.)|(?P<num>\d+:\d\d:\d\d|\d+\.\d+|\d{4,}|"
                    r"\d+(?= (?:CPUs|GPUs|GiB|MiB|KiB|bytes|s\b)))")


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    lines: list[str]
    marker: str = ""  # "run", "run in checkout", "skip: ..." ("" : none)

    @property
    def where(self) -> str:
        return f"{self.page.name}:{self.line}"

    @property
    def runs(self) -> bool:
        return not self.marker.startswith("skip")


@dataclass
class Step:
    """One command of a block and the output its sample shows."""
    command: str
    sample: list[str] = field(default_factory=list)


def blocks_of(page: Path) -> list[Block]:
    found, lines = [], page.read_text().splitlines()
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        marker = MARKER.search(lines[index - 1]) if index else None
        found.append(Block(page, index + 1, fence.group(1), lines[index + 1:end],
                           marker.group(1) if marker else ""))
        index = end + 1
    return found


def steps_of(block: Block) -> list[Step]:
    """The block's commands, each with its sample output ("\\" continues a command); a Python
    block is one command, the block as a script."""
    if block.language == "python":
        return [Step("python - <<'DOCS_TEST_EOF'\n" + "\n".join(block.lines) +
                     "\nDOCS_TEST_EOF")]
    steps: list[Step] = []
    prompted = any(line.startswith("$ ") for line in block.lines)
    pending = ""
    for line in block.lines:
        if prompted and not line.startswith("$ ") and not pending:
            if steps:
                steps[-1].sample.append(line)
            continue
        text = line[2:] if prompted and not pending else line
        if not prompted and (not text.strip() or text.lstrip().startswith("#")):
            continue
        if text.rstrip().endswith("\\"):
            pending += text.rstrip()[:-1] + " "
            continue
        steps.append(Step(pending + text))
        pending = ""
    return steps


def sample_pattern(line: str) -> re.Pattern:
    """A sample line as a pattern of what this run may print in its place."""
    parts, last = [], 0
    for match in VALUES.finditer(line):
        parts.append(re.escape(line[last:match.start()]))
        kind = match.lastgroup
        parts.append({"run": f"({RUN_ID})", "job": f"({JOB_ID})", "tmp": r"/\S*?",
                      "etc": ".*", "num": r"[\d:.]+"}[kind])
        last = match.end()
    parts.append(re.escape(line[last:]))
    return re.compile("".join(parts).rstrip() + r"\s*")


def match_sample(sample: list[str], output: list[str]) -> tuple[str, dict[str, str]]:
    """Whether ``output`` shows every sample line in order: "" and the ids the sample named
    mapped to this run's, or what did not match."""
    ids: dict[str, str] = {}
    at = 0
    for line in sample:
        if not line.strip() or line.strip() == "...":
            continue
        pattern = sample_pattern(line)
        for index in range(at, len(output)):
            got = pattern.fullmatch(output[index])
            if got:
                named = re.findall(rf"{RUN_ID}|{JOB_ID}", line)
                ids.update(zip(named, got.groups()))
                at = index + 1
                break
        else:
            return f"sample line not printed (in order): {line!r}", ids
    return "", ids


def pages(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]
