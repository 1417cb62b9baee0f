"""The shape of the code, checked: no import circle (imports for type checking and through
package __init__ files count), the node program apart from the launcher (standard library and
Ray only, delivered as one file), and one contract both sides agree on."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from rayhpc.launcher.backends.bundle import node_program
from rayhpc.launcher.backends.rundir import prepare_run_dir
from rayhpc.launcher.contract import LaunchSpec, NodeGroup, RunPaths, read_spec
from rayhpc.launcher.schedulers import SCHEDULERS
from tests import PROJECT_ROOT
from tests.specs import make_spec

PACKAGES = ("rayhpc",)
NODE = "rayhpc.launcher.node"
CONTRACT = "rayhpc.launcher.contract"
# The modules the node program shares with the launcher (in node_agent.pyz beside it): the
# contract package, and the timeline the head draws (standard library only, like the node
# program).
SHARED = (CONTRACT, "rayhpc.launcher.timeline")


def is_shared(name: str) -> bool:
    return name in SHARED or name.startswith(CONTRACT + ".")
# Where a project module may be imported inside a function: each defers docker-py (or the
# whole launcher, for `from rayhpc import Cluster`), which a login node must not pay for.
# And the node program's entry, which imports it only once its importer is in place.
DEFERRED_IMPORTS = {"rayhpc": {"rayhpc.launcher.cluster"},
                    "rayhpc.cli": {"rayhpc.containers.images", "rayhpc.containers.sif",
                              "rayhpc.containers.apptainer_def"},
                    "rayhpc.launcher.node.bundle_main": {"rayhpc.launcher.node.main"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, ast.Module]:
    paths = [p for package in PACKAGES for p in (PROJECT_ROOT / package).rglob("*.py")]
    paths.append(PROJECT_ROOT / "tasks.py")
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in paths}


MODULES = project_modules()


def imports(tree: ast.Module, only_top: bool,
            modules: dict[str, ast.Module] | None = None) -> list[tuple[str, bool]]:
    """(module imported, whether at the module's top level), those under `if TYPE_CHECKING:`
    too (a type is a dependency: a circle through one is a circle in the design).
    ``from package import name`` counts as the submodule when there is one."""
    modules = MODULES if modules is None else modules
    found = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                   ast.ClassDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, top) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                for alias in child.names:
                    sub = f"{child.module}.{alias.name}"
                    found.append((sub if sub in modules else child.module, top))
            if not (only_top and not inner):
                visit(child, inner)

    visit(tree, True)
    return found


def project_imports(name: str, modules: dict[str, ast.Module] | None = None) -> set[str]:
    modules = MODULES if modules is None else modules
    return {target for target, _ in imports(modules[name], only_top=False, modules=modules)
            if target.split(".")[0] in (*PACKAGES, "tasks") and target in modules}


# The distribution's root package: its one import of the project is `from rayhpc import
# Cluster`, deferred until a user asks for it (and no project module does: checked below).
ROOT_HOOK = ("rayhpc", "rayhpc.launcher.cluster")


def import_graph(modules: dict[str, ast.Module]) -> dict[str, set[str]]:
    """Module -> the project modules importing it runs: each one named, and the __init__ of
    every package above it (Python runs those first) that the importer is not inside of."""
    graph = {}
    for name in modules:
        targets = set()
        for target in project_imports(name, modules):
            targets.add(target)
            parts = target.split(".")
            for depth in range(1, len(parts)):
                package = ".".join(parts[:depth])
                if package in modules and not name.startswith(package + "."):
                    targets.add(package)
        graph[name] = targets - {name}
    if ROOT_HOOK[0] in graph:
        graph[ROOT_HOOK[0]].discard(ROOT_HOOK[1])
    return graph


def first_circle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                found = walk(target)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state:
            found = walk(name)
            if found:
                return found
    return None


def test_the_import_graph_has_no_circle():
    circle = first_circle(import_graph(MODULES))
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def parsed(sources: dict[str, str]) -> dict[str, ast.Module]:
    return {name: ast.parse(text) for name, text in sources.items()}


def test_a_circle_through_a_type_checking_import_is_found():
    modules = parsed({
        "rayhpc": "",
        "rayhpc.a": "from rayhpc.b import thing\n",
        "rayhpc.b": "from typing import TYPE_CHECKING\n"
                    "if TYPE_CHECKING:\n    from rayhpc.a import Other\n"})
    assert first_circle(import_graph(modules)) == ["rayhpc.a", "rayhpc.b", "rayhpc.a"]


def test_a_circle_through_a_package_init_is_found():
    """b imports a submodule of package p; p's __init__ imports c, which imports b."""
    modules = parsed({
        "rayhpc": "",
        "rayhpc.p": "from rayhpc.c import x\n",
        "rayhpc.p.leaf": "",
        "rayhpc.b": "from rayhpc.p.leaf import y\n",
        "rayhpc.c": "import rayhpc.b\n"})
    assert first_circle(import_graph(modules)) == ["rayhpc.b", "rayhpc.p", "rayhpc.c",
                                                   "rayhpc.b"]
    # Inside the package, its own __init__ is Python's edge, not the design's.
    inside = parsed({"rayhpc": "", "rayhpc.p": "from rayhpc.p.leaf import y\n",
                     "rayhpc.p.leaf": "from rayhpc.p.other import z\n", "rayhpc.p.other": ""})
    assert first_circle(import_graph(inside)) is None


def test_only_the_root_package_defers_the_python_api():
    for name, tree in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "rayhpc" \
                    and not name.startswith("rayhpc.examples"):
                assert "Cluster" not in {a.name for a in node.names}, name


def test_the_launcher_never_imports_the_node_program():
    for name in MODULES:
        if name == NODE or name.startswith(NODE + "."):
            continue
        wrong = {t for t in project_imports(name) if t == NODE or t.startswith(NODE + ".")}
        assert not wrong, f"{name} imports the node program ({', '.join(sorted(wrong))}); " \
                          f"share what both need through {CONTRACT}"


def test_project_modules_are_imported_inside_functions_only_to_defer_docker_py():
    for name, tree in MODULES.items():
        inside = {t for t, top in imports(tree, only_top=False) if not top
                  and t.split(".")[0] in PACKAGES and t in MODULES}
        assert inside <= DEFERRED_IMPORTS.get(name, set()), \
            f"{name} imports {', '.join(sorted(inside))} inside a function"


def node_modules() -> dict[str, ast.Module]:
    return {name: tree for name, tree in MODULES.items()
            if is_shared(name) or name == NODE or name.startswith(NODE + ".")}


def test_the_node_program_uses_the_standard_library_and_ray_only():
    allowed = set(sys.stdlib_module_names) | {"ray", "rayhpc"}
    for name, tree in node_modules().items():
        for target, _ in imports(tree, only_top=False):
            root = target.split(".")[0]
            assert root in allowed, f"{name} imports {target}: the node program runs in any " \
                                    "stock rayproject/ray image (standard library and Ray only)"
            if root == "rayhpc":
                assert is_shared(target) or target.startswith(NODE), (name, target)


def test_node_program_files_are_small_and_one_job_each():
    for path in (PROJECT_ROOT / "rayhpc/launcher/node").glob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path


def test_the_bundle_holds_the_node_program_and_the_contract_byte_for_byte():
    with zipfile.ZipFile(__import__("io").BytesIO(node_program())) as bundle:
        names = bundle.namelist()
        assert "__main__.py" in names
        contract = sorted(p.name for p in (PROJECT_ROOT / "rayhpc/launcher/contract").glob("*.py"))
        assert sorted(n.split("/")[-1] for n in names
                      if n.startswith("rayhpc/launcher/contract/")) == contract
        node_files = sorted(p.name for p in (PROJECT_ROOT / "rayhpc/launcher/node").glob("*.py")
                            if p.name != "bundle_main.py")
        assert sorted(n.split("/")[-1] for n in names if n.startswith("rayhpc/launcher/node/")) \
            == node_files
        assert bundle.read("rayhpc/launcher/node/head.py") == \
            (PROJECT_ROOT / "rayhpc/launcher/node/head.py").read_bytes()
    assert node_program('{"a": 1}') == node_program('{"a": 1}')  # the same bytes every time


def test_the_delivered_program_runs_in_a_bare_python_with_real_tracebacks(tmp_path):
    """The run directory's node_agent.pyz in a Python with no site-packages at all (so no Ray):
    every module of the node program imports; the first thing that needs Ray (its version, for
    token auth) fails with a traceback naming the file inside the archive and its line."""
    spec = make_spec("local", shared=str(tmp_path), nodes=2)
    paths = RunPaths(prepare_run_dir(spec))
    paths.spec.unlink()  # the program carries the run's spec: no node reads spec.json
    env = {"PATH": os.environ["PATH"], "RAYHPC_NODE_TEMP_DIR": str(tmp_path / "node")}
    result = subprocess.run([sys.executable, "-I", "-S", str(paths.node_program), "--run-dir",
                             str(paths.dir), "--role", "worker", "--node-name", "w1"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "PackageNotFoundError: No package metadata was found for ray" in result.stderr
    assert f'File "{paths.node_program}/rayhpc/launcher/node/agent.py", line ' in result.stderr
    assert 'return importlib.metadata.version("ray")' in result.stderr  # the source line
    # Bad input is one line, no traceback.
    bad = subprocess.run([sys.executable, "-I", "-S", str(paths.node_program), "--run-dir",
                          str(paths.dir), "--node-name", "w1"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("rayhpc agent: no --role and no rank in the launcher's rank "
                                  "variables (none: $RAYHPC_RANK_VARS is not set)")


# -- the contract: one definition of the spec, read back exactly

def test_the_spec_the_launcher_writes_is_the_spec_the_node_reads(tmp_path):
    for index, (site, cli) in enumerate((
            ("local", {"nodes": 3}),
            ("slurm", {"image": "/x.sif", "group": ["head:1", "gpu:2,gpu=nvidia,num_gpus=4"]}))):
        spec = make_spec(site, shared=str(tmp_path), run_id=f"20260101-000000-000{index}",
                         **cli)
        paths = RunPaths(prepare_run_dir(spec))
        assert read_spec(paths) == spec
        assert set(json.loads(paths.spec.read_text())) == \
            {f.name for f in dataclasses.fields(LaunchSpec)}
        with zipfile.ZipFile(paths.node_program) as bundle:  # the spec the nodes get
            assert f"SPEC = {paths.spec.read_text()!r}\n" in bundle.read("__main__.py").decode()


def test_a_spec_with_a_field_one_side_lacks_is_refused_by_the_node():
    data = make_spec("local").to_json()
    with pytest.raises(ValueError, match="unknown fields: gpus_per_node"):
        LaunchSpec.from_json({**data, "gpus_per_node": 4})
    del data["stop_timeout"]
    with pytest.raises(ValueError, match="missing fields: stop_timeout"):
        LaunchSpec.from_json(data)
    # The launcher reading an older run's spec leaves out what it does not know.
    assert LaunchSpec.from_json({**make_spec("local").to_json(), "old": 1}, strict=False)


def attributes_used(trees: dict[str, ast.Module], variable_names: set[str]) -> set[str]:
    """Attribute names read off variables (or self.<variable>) of these names."""
    used = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value
            if isinstance(owner, ast.Attribute) and isinstance(owner.value, ast.Name) \
                    and owner.value.id == "self":
                owner_name = owner.attr
            elif isinstance(owner, ast.Name):
                owner_name = owner.id
            else:
                continue
            if owner_name in variable_names:
                used.add(node.attr)
    return used


def members(cls: type) -> set[str]:
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    return fields | {n for n in vars(cls) if not n.startswith("__")}


def test_everything_the_node_reads_of_the_spec_is_in_the_contract():
    trees = node_modules()
    used = attributes_used({n: t for n, t in trees.items() if not n.endswith("bundle_main")},
                           {"spec"})
    assert used <= members(LaunchSpec), used - members(LaunchSpec)
    assert attributes_used(trees, {"group"}) <= members(NodeGroup)
    paths = RunPaths("/r")
    everywhere = attributes_used(MODULES, {"paths"})
    assert everywhere <= set(vars(paths)) | members(RunPaths), \
        everywhere - set(vars(paths)) - members(RunPaths)


def test_a_login_node_without_docker_py_runs_the_batch_commands(tmp_path):
    """docker-py is imported only where an engine is used: with it missing (`import docker`
    fails, as on an HPC login node), the `rayhpc` command runs a batch site's dry run, status,
    submit, logs, report and down (each as far as a run that is not up lets it: an answer, no
    ImportError)."""
    spec = make_spec("slurm", shared=str(tmp_path), image="/x.sif")
    run_dir = prepare_run_dir(spec)
    where = ["--site", "slurm", "--shared", str(tmp_path)]
    commands = {
        "launch": (["launch", *where, "--image", "/x.sif", "--dry-run"], 0,
                   "#!/bin/bash\n#SBATCH "),
        "status": (["status", *where], 0, f"{spec.run_id}  slurm  starting  0/3 nodes joined"),
        "logs": (["logs", "--run", spec.run_id, *where], 0, "rayhpc: no job output kept"),
        "submit": (["submit", "--run", spec.run_id, *where, "--", "python", "x.py"], 2,
                   f"error: --run: the cluster of run {spec.run_id} is not up yet"),
        "report": (["report", "--run", spec.run_id, *where], 2,
                   f"error: --run: run {spec.run_id} has no timing.json yet"),
        "down": (["down", "--run", spec.run_id, *where], 2,
                 f"error: --run: run {spec.run_id} has finished")}
    for name, (args, code, start) in commands.items():
        if name == "down":
            RunPaths(run_dir).exit_code.write_text("0\n")
        program = ("import sys\n"
                   "sys.modules['docker'] = None  # import docker: ImportError\n"
                   "from rayhpc.cli import program\n"
                   f"sys.argv = ['rayhpc', *{args!r}]\n"
                   "program.run()\n")
        result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                                cwd=tmp_path, timeout=60)
        assert result.returncode == code, (name, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        assert (result.stdout + result.stderr).startswith(start), (name, result.stdout[:200],
                                                                  result.stderr)


# -- schedulers own their facts

SCHEDULERS_PACKAGE = "rayhpc/launcher/schedulers/"
# The one other place a scheduler is named: Pyxis is a plugin of Slurm's srun, a fact of the
# runtime's (its `schedulers`), not a comparison.
NAMES_A_SCHEDULER = {"rayhpc/launcher/runtimes/pyxis.py"}


def scheduler_names_outside(files: dict[str, str], names: dict[str, str]) -> list[str]:
    """Where a module outside schedulers/ names a scheduler: a string that is its name (a
    comparison, a table, a registry of its own), or a line that lists three or more of them by
    hand. ``names``: name -> title."""
    found = []
    for path, text in files.items():
        if path.startswith(SCHEDULERS_PACKAGE) or path in NAMES_A_SCHEDULER:
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and node.value.lower() in names:
                found.append(f"{path}:{node.lineno}: {node.value!r}")
        for number, line in enumerate(text.splitlines(), 1):
            said = {name for name, title in names.items()
                    if re.search(rf"\b{re.escape(title)}\b", line)}
            if len(said) >= 3:
                found.append(f"{path}:{number}: lists {', '.join(sorted(said))}")
    return found


def package_files() -> dict[str, str]:
    return {str(p.relative_to(PROJECT_ROOT)): p.read_text()
            for p in sorted((PROJECT_ROOT / "rayhpc").rglob("*.py"))}


def test_no_module_outside_schedulers_names_a_scheduler():
    names = {name: scheduler.title for name, scheduler in SCHEDULERS.items()}
    assert scheduler_names_outside(package_files(), names) == []


def test_the_scheduler_name_rule_finds_a_comparison_and_a_hand_made_list():
    names = {name: scheduler.title for name, scheduler in SCHEDULERS.items()}
    planted = {"rayhpc/launcher/resolve/planted.py":
               'def f(site):\n    return site.scheduler != "slurm"\n'
               '"""For Slurm, PBS and LSF alike."""\n'}
    assert scheduler_names_outside(planted, names) == [
        "rayhpc/launcher/resolve/planted.py:2: 'slurm'",
        "rayhpc/launcher/resolve/planted.py:3: lists lsf, pbs, slurm"]


# -- one name, one room

def shared_file_names(paths: list[Path]) -> dict[str, list[str]]:
    """Base names that more than one module of the package has (``__init__.py`` aside): each
    file's name must say its job wherever it is opened or imported from."""
    seen: dict[str, list[str]] = {}
    for path in paths:
        if path.name != "__init__.py":
            seen.setdefault(path.name, []).append(str(path))
    return {name: sorted(where) for name, where in seen.items() if len(where) > 1}


def test_no_two_modules_of_the_package_share_a_file_name():
    paths = [p.relative_to(PROJECT_ROOT) for p in (PROJECT_ROOT / "rayhpc").rglob("*.py")]
    assert shared_file_names(paths) == {}


def test_the_file_name_rule_finds_a_planted_twin():
    paths = [Path("rayhpc/launcher/runs/grow_shrink.py"), Path("rayhpc/launcher/node/a.py"),
             Path("rayhpc/launcher/backends/a.py"), Path("rayhpc/x/__init__.py"),
             Path("rayhpc/y/__init__.py")]
    assert shared_file_names(paths) == {"a.py": ["rayhpc/launcher/backends/a.py",
                                                 "rayhpc/launcher/node/a.py"]}
