"""The docs against the code, where they can drift apart: the tasks and flags of the CLI page
and `rayhpc --help`, the sites page and `rayhpc sites`, the run directory's files and RunPaths,
and the sample outputs the code writes (connect.txt, the summary line, the resources line),
rendered here and compared in shape (numbers, run ids and paths aside)."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import json
import re
from pathlib import Path

import pytest

from rayhpc.cli import program
from rayhpc.launcher.backends.watch import summary
from rayhpc.launcher.contract import RunPaths
from rayhpc.launcher.node.connect import connect_text
from rayhpc.launcher.node.report import resources_line
from tests import PROJECT_ROOT
from tests.specs import make_spec

DOCS = PROJECT_ROOT / "docs"
PAGES = {path.name: path.read_text() for path in [*sorted(DOCS.glob("*.md")),
                                                    PROJECT_ROOT / "README.md"]}
TOPICS = ("install.md", "cli.md", "interactive.md", "groups.md", "sites.md", "images.md",
          "internals.md", "troubleshooting.md", "developing.md")


def rayhpc(*args: str) -> str:
    """What `rayhpc ARGS` prints (the console script's Program, run here)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        program.run(["rayhpc", *args], exit=False)
    return out.getvalue()


def section(page: str, heading: str) -> str:
    """The text under a `## heading` of a docs page, to the next heading of its level."""
    text = PAGES[page]
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"docs/{page} has no section '## {heading}'"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    """The cells of a markdown table's body rows."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not re.match(r"^\|[-| ]+\|$", line):
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip("|"))])
    return rows[1:]  # the header row aside


def ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


# -- the command line

def help_tasks() -> list[str]:
    listing = rayhpc("--list")
    return re.findall(r"^  ([a-z][\w-]*)\s", listing, re.M)


def help_flags(task: str) -> set[str]:
    options = rayhpc("--help", task).split("Options:", 1)[-1]
    return set(re.findall(r"^  (?:-\w[ ,]\s*)?(--?[\w-]+)", options, re.M)) | \
        {flag for flag in re.findall(r"^  (-\w)[ =]", options, re.M)}


def documented_flags() -> dict[str, set[str]]:
    return {ticked(task)[0]: set(ticked(flags))
            for task, flags in table_rows(section("cli.md", "Every task and its flags"))}


def test_every_task_on_the_cli_page_is_in_the_help_and_the_other_way_round():
    documented, listed = set(documented_flags()), set(help_tasks())
    assert listed, "rayhpc --list listed no task"
    assert not listed - documented, \
        f"tasks in `rayhpc --list` missing from docs/cli.md's table: {sorted(listed - documented)}"
    assert not documented - listed, \
        f"tasks in docs/cli.md that `rayhpc --list` lacks: {sorted(documented - listed)}"


def test_every_flag_on_the_cli_page_is_in_the_help_and_the_other_way_round():
    for task, flags in documented_flags().items():
        if task not in help_tasks():
            continue  # named by the test above
        helped = help_flags(task)
        assert not helped - flags, f"flags of `rayhpc {task}` missing from docs/cli.md: " \
                                   f"{sorted(helped - flags)}"
        assert not flags - helped, f"flags in docs/cli.md that `rayhpc {task}` lacks: " \
                                   f"{sorted(flags - helped)}"


def code_in(text: str) -> list[str]:
    """The inline code spans, and the lines of fenced blocks that are not comments."""
    spans, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif fenced:
            if not line.lstrip().startswith("#"):
                spans.append(line)
        else:
            spans.extend(re.findall(r"`([^`]+)`", line))
    return spans


def commands_in_docs() -> list[tuple[str, str, str]]:
    """(page, task, the command's words) of every `invoke TASK ...`/`rayhpc TASK ...` in the
    docs' code, up to a standalone `--` (what follows is the job's own command line) or a
    comment."""
    found = []
    for page, text in PAGES.items():
        for code in code_in(text):
            for match in re.finditer(r"(?:^|[\s$(])(?:invoke|rayhpc) ([a-z][\w-]*)([^|;#]*)",
                                     code):
                found.append((page, match.group(1), match.group(2).split(" -- ")[0]))
    return found


def test_every_task_and_flag_used_in_the_docs_exists():
    tasks = set(help_tasks())
    for page, task, rest in commands_in_docs():
        if task == "import":
            continue  # `from rayhpc import Cluster`
        assert task in tasks, f"{page}: `{task}` is not a task (`rayhpc --list`): ...{rest}"
        # A quoted word is a flag's value (a --driver's own command line), not rayhpc's flags.
        words = re.sub(r"\"[^\"]*\"|'[^']*'", "VALUE", rest)
        unknown = {flag for flag in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", words)
                   if flag not in help_flags(task)}
        assert not unknown, f"{page}: `{task}` has no {', '.join(sorted(unknown))}: {rest}"


def test_every_topic_has_its_page_and_the_readme_links_each():
    readme = PAGES["README.md"]
    for page in TOPICS:
        assert page in PAGES, f"docs/{page} is missing"
        assert f"(docs/{page})" in readme, f"README.md does not link docs/{page}"
    assert len(readme.splitlines()) <= 200


def test_links_between_pages_point_at_pages_and_headings_that_exist():
    def anchors(text: str) -> set[str]:
        return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", text, re.M)}

    for page, text in PAGES.items():
        base = PROJECT_ROOT if page == "README.md" else DOCS
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]+))?\)", text):
            if target.startswith("http"):
                continue
            path = (base / target) if target else (base / page)
            assert path.exists(), f"{page}: a link to {target}, which does not exist"
            if anchor:
                assert anchor in anchors(path.read_text()), f"{page}: no heading #{anchor} in " \
                                                            f"{path.name}"


# -- the sites

def listed_sites() -> dict[str, list[str]]:
    """`rayhpc sites`: each site's scheduler, launcher, runtime, description and docs lines."""
    sites: dict[str, list[str]] = {}
    name = ""
    for line in rayhpc("sites").splitlines()[1:]:
        if line.startswith(" "):
            sites[name].append(line.strip().removeprefix("docs: "))
        else:
            name, *fields = line.split(None, 4)
            sites[name] = fields
    return sites


def test_every_site_on_the_sites_page_is_listed_with_the_same_sources():
    rows = table_rows(section("sites.md", "Every profile and the documentation it follows"))
    documented = {ticked(row[0])[0]: row[1:] for row in rows}
    listed = listed_sites()
    missing, unknown = set(listed) - set(documented), set(documented) - set(listed)
    assert not missing, f"sites in `rayhpc sites` missing from docs/sites.md: {sorted(missing)}"
    assert not unknown, f"sites in docs/sites.md that `rayhpc sites` lacks: {sorted(unknown)}"
    for name, (scheduler, launcher, runtime, description, sources) in documented.items():
        fields = listed[name]
        assert [scheduler, launcher, runtime, description] == fields[:4], name
        docs = [] if sources == "-" else sources.replace("\\|", "|").split("<br>")
        assert docs == fields[4:], f"docs/sites.md: {name}'s sources differ from `rayhpc " \
                                   f"sites --site {name}`"


def test_the_sites_in_the_hpc_table_exist():
    listed = listed_sites()
    for row in table_rows(PAGES["sites.md"].split("\n## ", 1)[0]):
        assert ticked(row[0])[0] in listed, row[0]


# -- the run directory

def contract_files() -> set[str]:
    """Every file RunPaths names, relative to the run directory (<node> for a node's)."""
    paths = RunPaths("/run")
    named = {str(p.relative_to(paths.dir)) for p in vars(paths).values()
             if isinstance(p, Path) and p != paths.dir}
    for name, member in vars(RunPaths).items():
        if inspect.isfunction(member) and list(inspect.signature(member).parameters) == \
                ["self", "node"]:
            named.add(str(getattr(paths, name)("<node>").relative_to(paths.dir)))
    folders = {n for n in named if any(other.startswith(n + "/") for other in named)}
    return named - folders


def test_the_run_directory_table_names_every_file_of_the_contract_and_no_other():
    rows = table_rows(section("internals.md", "The run directory"))
    documented = {name.rstrip("/") for row in rows for name in ticked(row[0])}
    named = contract_files()
    assert not named - documented, \
        f"run-directory files missing from docs/internals.md: {sorted(named - documented)}"
    assert not documented - named, \
        f"files in docs/internals.md that RunPaths does not name: {sorted(documented - named)}"


def test_run_directory_paths_mentioned_anywhere_are_files_of_the_contract():
    named = contract_files() | {"logs", "nodes"}
    for page, text in PAGES.items():
        for path in re.findall(r"`<run(?:-dir)?>/([\w./<>-]+)`", text):
            assert path.rstrip("/") in named, f"{page}: <run>/{path} is not a run-directory " \
                                              "file (RunPaths)"


# -- sample outputs the code writes

def shape(text: str) -> str:
    """Numbers, run ids, addresses and paths made alike."""
    text = re.sub(r"\d{8}-\d{6}-[0-9a-f]{4}", "RUN", text)
    text = re.sub(r"(?:\.\.\.|\$\w+)?(?:/[\w.$-]+)+/?", "PATH", text)
    return re.sub(r"\d+(?:\.\d+)*", "N", text)


def sample_lines(pattern: str) -> list[tuple[str, str]]:
    return [(page, line) for page, text in PAGES.items() for line in text.splitlines()
            if re.match(pattern, line)]


def test_the_resources_lines_shown_are_the_ones_the_head_writes():
    lines = sample_lines(r"rayhpc: (group \S+: )?\d+ nodes?( of \S+)?: [\d.]+ CPUs")
    assert lines, "no resources line in the docs"
    for page, line in lines:
        match = re.match(r"rayhpc: (?:group (\S+): )?(\d+) nodes?(?: of (\S+))?: "
                         r"([\d.]+) CPUs, ([\d.]+) GPUs(?: \(([^)]*)\))?, [^,]+ memory, "
                         r"[^,]+ object store((?:, \S+ [\d.]+)*)$", line)
        assert match, f"{page}: not the shape of a resources line: {line}"
        group, nodes, image, cpus, gpus, kind, custom = match.groups()
        total = {"nodes": int(nodes), "image": image or "", "cpus": float(cpus),
                 "gpus": float(gpus), "gpu_kind": kind or "", "memory": 70018026702,
                 "object_store": 5153960754,
                 "custom": {k: float(v) for k, v in re.findall(r", (\S+) ([\d.]+)", custom)}}
        rendered = "rayhpc: " + resources_line(group or "", total)
        assert shape(rendered) == shape(line), f"{page}:\n{line}\n{rendered}"


def test_the_summary_lines_shown_are_the_ones_the_launcher_prints(tmp_path):
    lines = sample_lines(r"rayhpc: run \S+: \d+/\d+ nodes")
    assert lines, "no summary line in the docs"
    for index, (page, line) in enumerate(lines):
        ran = re.search(r", (driver|up) ", line)
        assert ran, f"{page}: not the shape of a summary line: {line}"
        run_dir = tmp_path / "runs" / f"20260101-000000-{index:04x}"
        run_dir.mkdir(parents=True)
        spec = make_spec("local", shared=str(tmp_path), nodes=3)
        (run_dir / "spec.json").write_text(json.dumps(
            {**spec.to_json(), "driver": None if ran.group(1) == "up" else "python x.py"}))
        lost_names = (re.search(r" \(lost: ([^)]*)\)", line) or [None, None])[1]
        # A grown block's counts, as the head records them (`node.block_keeper.block_counts`).
        blocks = {name: {"nodes": [f"{name}-w{i}" for i in range(int(joined))],
                         "left": int(left), "lost": int(lost or 0)}
                  for name, joined, left, lost in re.findall(
                      r"block (b\d+): (\d+) joined, (\d+) left(?:, (\d+) lost)?", line)}
        (run_dir / "timing.json").write_text(json.dumps(
            {"nodes_joined": 3, "nodes_expected": 3, "t_submit": 1.0, "t_all_joined": 11.2,
             "t_driver_start": 11.3, "t_driver_end": 14.1, "t_teardown_done": 16.9,
             "blocks": blocks, "nodes_lost": lost_names.split(", ") if lost_names else []}))
        rendered = summary(run_dir, 0)
        documented = line.split("; logs in ")[0]  # `down` and a failure add where the logs are
        assert shape(rendered) == shape(documented), f"{page}:\n{documented}\n{rendered}"


def test_the_connect_txt_shown_is_the_one_the_head_writes():
    blocks = []
    for page, text in PAGES.items():
        for match in re.finditer(r"^# rayhpc run .*\n(?:(?:# |export ).*\n)+", text, re.M):
            blocks.append((page, match.group(0)))
    assert blocks, "no connect.txt in the docs"
    for page, block in blocks:
        token = re.search(r"^export RAY_AUTH_TOKEN_PATH=(\S+)$", block, re.M).group(1)
        ip = re.search(r"ray://([\d.]+):", block).group(1)
        laptop = re.search(r"(\S+@\S+)   then open", block)
        if laptop:  # a batch site: the tunnel through the login node
            spec = dataclasses.replace(make_spec("slurm", image="/x.sif"), login=laptop.group(1))
        else:  # the local site: the dashboard and Ray Client published on 127.0.0.1
            spec = dataclasses.replace(make_spec("local"),
                                       published={"dashboard": 50519, "client": 50233})
        rendered = connect_text(spec, ip, token)
        assert shape(rendered) == shape(block), f"{page}:\n{block}\n{rendered}"


@pytest.mark.parametrize("name", ["timeline-local-3.svg"])
def test_the_timeline_picture_in_the_docs_is_the_golden_one(name):
    golden = PROJECT_ROOT / "tests/golden/timeline" / name.removeprefix("timeline-")
    assert (DOCS / name).read_text() == golden.read_text()


# -- the layout in docs/developing.md against the tree

def layout_block(text: str) -> str:
    """The fenced block under developing.md's `## Layout`."""
    section = text.split("\n## Layout\n", 1)[1]
    return section.split("```", 2)[1]


def layout_problems(block: str, root: Path) -> list[str]:
    """Modules of rayhpc/ the layout leaves out (each file name is unique in the package, so
    its name is enough), and file names it lists that are nowhere in the checkout."""
    modules = {p.name for p in (root / "rayhpc").rglob("*.py") if p.name != "__init__.py"}
    named = set(re.findall(r"\b[\w]+\.py\b", block))
    present = {p.name for p in root.rglob("*.py") if ".venv" not in p.parts}
    return ([f"not in the layout: {name}" for name in sorted(modules - named)]
            + [f"in the layout, not in the tree: {name}" for name in sorted(named - present)])


def test_the_layout_names_every_module_and_only_modules_that_exist():
    assert layout_problems(layout_block((DOCS / "developing.md").read_text()),
                           PROJECT_ROOT) == []


def test_the_layout_rule_finds_a_missing_and_a_stale_module(tmp_path):
    (tmp_path / "rayhpc" / "launcher").mkdir(parents=True)
    for name in ("rayhpc/__init__.py", "rayhpc/cli.py", "rayhpc/launcher/new_room.py"):
        (tmp_path / name).write_text("")
    assert layout_problems("cli.py  the tasks\ngone.py  removed\n", tmp_path) == [
        "not in the layout: new_room.py", "in the layout, not in the tree: gone.py"]
