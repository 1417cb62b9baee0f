"""Input hardening without an engine (issue 29), through the real command line and the Python
API: every value that reaches a job script is one line (flags, RAYHPC_* variables, site files,
node groups, `rayhpc grow`) and the site's environment keys are names, else one `error:` line,
exit 2, nothing submitted or written; `Cluster.launch` refuses keywords it does not know before
anything starts; a run's token that others can read is warned about once, a missing one is
called missing."""

from __future__ import annotations

import dataclasses
import errno
import http.server
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from rayhpc import Cluster
from rayhpc.common.user_error import UserError
from rayhpc.launcher.backends.batch.jobscript import render_job_script
from rayhpc.launcher.contract import RunPaths, write_record
from rayhpc.launcher.resolve.config import load_site
from rayhpc.launcher.resolve.fabric_interface import check_interface
from rayhpc.launcher.runs import run as run_module
from rayhpc.launcher.runs.run import Run
from tests import PROJECT_ROOT
from tests.cli import invoke
from tests.specs import head_record, make_spec

INJECTED = "x\ntouch /tmp/rayhpc-pwned"
ONE_LINE = ("must be one line without control characters (a line break would start a line of "
            "its own in the job script)")

# Stand-ins for sbatch and squeue that record each call: a submission is seen, not made.
FAKE_SLURM = """#!/bin/sh
echo "$(basename "$0") $*" >> "$FAKE_LOG"
case "$(basename "$0")" in sbatch) echo 4242 ;; squeue) echo RUNNING ;; esac
"""


@pytest.fixture
def slurm_here(tmp_path: Path) -> dict[str, str]:
    """The environment of a login node whose sbatch and squeue record their calls into
    tmp_path/calls.log (see `calls`)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("sbatch", "squeue"):
        (bin_dir / name).write_text(FAKE_SLURM)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "ray.sif").write_text("")
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(tmp_path / "calls.log")}


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def refusal(result) -> str:
    """The one error line of a command refused as bad input (exit 2, nothing on stdout)."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == "", result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def launch(tmp_path: Path, *args: str, env: dict[str, str], dry_run: bool = False):
    """`rayhpc launch` on the slurm site (or the site given), the shared dir in tmp_path."""
    site = [] if "--site" in args else ["--site", "slurm"]
    shared = [] if "--shared" in args else ["--shared", str(tmp_path / "shared")]
    return invoke("launch", *site, "--image", str(tmp_path / "ray.sif"), *shared, *args,
                  *(["--dry-run"] if dry_run else []), env=env, timeout=120)


def nothing_written(tmp_path: Path) -> None:
    """Nothing submitted, no shared dir or run directory made: only the test's own files."""
    assert calls(tmp_path) == []
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bin", "ray.sif"]


@pytest.mark.parametrize("dry_run", [False, True], ids=["submit", "dry-run"])
@pytest.mark.parametrize("flag", ["--account", "--queue", "--shared"])
def test_a_flag_with_a_line_break_is_refused_and_nothing_is_submitted(tmp_path, slurm_here,
                                                                      flag, dry_run):
    value = f"{tmp_path}/{INJECTED}" if flag == "--shared" else INJECTED
    result = launch(tmp_path, flag, value, "--account", "P", env=slurm_here, dry_run=dry_run) \
        if flag != "--account" else launch(tmp_path, flag, value, env=slurm_here,
                                           dry_run=dry_run)
    assert refusal(result) == f"error: {flag}: {value!r}: {ONE_LINE}"
    nothing_written(tmp_path)


@pytest.mark.parametrize("why", ["driver", "no sbatch", "refused"])
def test_a_launch_refused_after_the_shared_dir_was_made_leaves_nothing(tmp_path, slurm_here,
                                                                       why):
    """Refused once the shared dir is made and the examples staged in it (a driver that is
    not there, no sbatch on PATH, sbatch refusing the job): those are removed again."""
    env = {**slurm_here, "PATH": "/usr/bin:/bin"} if why == "no sbatch" else slurm_here
    if why == "refused":
        (tmp_path / "bin" / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: Invalid "
                                                 "account' >&2\nexit 1\n")
    driver = "python missing.py" if why == "driver" else "python examples/hello_nodes.py"
    result = launch(tmp_path, "--shared", str(tmp_path / "new" / "shared"), "--account", "P",
                    "--driver", driver, env=env)
    assert result.returncode == 2 and result.stderr.startswith("error: "), result.stderr
    nothing_written(tmp_path)


@pytest.mark.parametrize("control", ["\t", "\r", "\x1b[2J"])
def test_any_control_character_in_a_flag_is_refused(tmp_path, slurm_here, control):
    result = launch(tmp_path, "--account", f"P{control}Q", env=slurm_here)
    assert refusal(result) == f"error: --account: {f'P{control}Q'!r}: {ONE_LINE}"
    nothing_written(tmp_path)


def test_rayhpc_account_with_a_line_break_is_refused(tmp_path, slurm_here):
    result = launch(tmp_path, env={**slurm_here, "RAYHPC_ACCOUNT": INJECTED})
    assert refusal(result) == f"error: $RAYHPC_ACCOUNT: {INJECTED!r}: {ONE_LINE}"
    nothing_written(tmp_path)


SLURM_SITE = (PROJECT_ROOT / "rayhpc/launcher/sites/slurm.yaml").read_text()
SITE_CASES = {
    # name: (what the site file adds, what the error says after "<file>: ")
    "group queue": ('groups:\n  head: {nodes: 1}\n'
                    '  gpu: {nodes: 1, queue: "x\\ntouch /tmp/rayhpc-pwned"}\n',
                    f"groups: gpu: queue: {INJECTED!r}: {ONE_LINE}"),
    "environment key": ('environment: {"A=1; touch /tmp/rayhpc-pwned; B": x}\n',
                        "environment: 'A=1; touch /tmp/rayhpc-pwned; B': not a variable name: "
                        "letters, digits and _, not starting with a digit (e.g. MY_SETTING)"),
    "environment value": ('environment: {A: "1\\ntouch /tmp/rayhpc-pwned"}\n',
                          f"environment: A: {'1' + INJECTED[1:]!r}: {ONE_LINE}"),
    "directive": ('directives: ["#SBATCH --comment=x\\ntouch /tmp/rayhpc-pwned"]\n',
                  f"directives: {'#SBATCH --comment=' + INJECTED!r}: {ONE_LINE}"),
    "scheduler option": ('  constraint: "x\\ntouch /tmp/rayhpc-pwned"\n',
                         f"scheduler_options: constraint: {INJECTED!r}: {ONE_LINE}"),
    "queue table": ('queues:\n  "x\\ntouch /tmp/rayhpc-pwned": {max_nodes: 4}\n',
                    f"queues: {INJECTED!r}: {ONE_LINE}"),
    "site name": ('name: "x\\ntouch /tmp/rayhpc-pwned"\n', f"name: {INJECTED!r}: {ONE_LINE}"),
    "interface": ('interface: "hsn0\\n"\n', f"interface: 'hsn0\\n': {ONE_LINE}"),
}


@pytest.mark.parametrize("case", SITE_CASES)
def test_a_site_file_value_that_would_break_the_job_script_is_refused(tmp_path, slurm_here,
                                                                      case):
    addition, expected = SITE_CASES[case]
    site = tmp_path / "bin" / "mysite.yaml"  # beside the stand-ins: nothing_written ignores it
    # A scheduler option goes into the site's scheduler_options mapping (the file's last).
    site.write_text((SLURM_SITE.replace("name: slurm\n", "") if case == "site name"
                     else SLURM_SITE) + addition)
    result = launch(tmp_path, "--site", str(site), "--account", "P", env=slurm_here)
    assert refusal(result) == f"error: {site}: {expected}"
    nothing_written(tmp_path)


def test_a_group_flag_with_a_line_break_is_refused(tmp_path, slurm_here):
    result = launch(tmp_path, "--account", "P", "--group", "head:1",
                    "--group", f"gpu:1,queue={INJECTED}", env=slurm_here)
    assert refusal(result) == f"error: --group gpu: queue: {INJECTED!r}: {ONE_LINE}"
    nothing_written(tmp_path)


def test_grow_refuses_a_queue_with_a_line_break_and_submits_nothing(tmp_path, slurm_here):
    spec = make_spec("slurm", shared=str(tmp_path / "shared"), image=str(tmp_path / "ray.sif"),
                     nodes=2)
    paths = RunPaths(spec.run_dir)
    paths.dir.mkdir(parents=True)
    paths.spec.write_text(json.dumps(spec.to_json()))
    write_record(paths.head, head_record("10.0.0.1", "node0001"))
    result = invoke("grow", "--run", spec.run_id, "--nodes", "1", "--site", "slurm", "--shared",
                    str(tmp_path / "shared"), "--queue", INJECTED, env=slurm_here, timeout=120)
    assert refusal(result) == f"error: --queue: {INJECTED!r}: {ONE_LINE}"
    assert calls(tmp_path) == [] and not paths.blocks.exists()


def test_an_interface_name_with_a_trailing_line_break_is_not_one():
    with pytest.raises(ValueError, match="must be a network interface name"):
        check_interface("hsn0\n")


def test_a_value_that_got_past_resolution_can_never_render_a_line_of_its_own():
    spec = dataclasses.replace(make_spec("slurm", image="/x.sif", nodes=2), account=INJECTED)
    with pytest.raises(ValueError, match="control character"):
        render_job_script(spec, load_site("slurm"))


# -- the Python API

@pytest.mark.parametrize("keywords, unknown, suggestion", [
    ({"node": 2, "nodes_": 5}, "node, nodes_", "'node' (did you mean 'nodes'?), 'nodes_' (did "
                                               "you mean 'nodes'?)"),
    ({"join_timout": 60}, "join_timout", "'join_timout' (did you mean 'join_timeout'?)"),
    ({"colour": "blue"}, "colour", "'colour'"),
])
def test_cluster_launch_refuses_keywords_it_does_not_know_before_anything_starts(
        tmp_path, monkeypatch, keywords, unknown, suggestion):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(TypeError) as refused:
        Cluster.launch(shared=str(tmp_path / "shared"), **keywords)
    message = str(refused.value)
    assert message.startswith(f"Cluster.launch() got unknown keyword arguments: {suggestion}"
                              if "," in unknown else
                              f"Cluster.launch() got an unknown keyword argument: {suggestion}"
                              ), message
    assert "the flags of `rayhpc launch`" in message
    assert list(tmp_path.iterdir()) == []


# -- the run's token

class JobsApi(http.server.BaseHTTPRequestHandler):
    """A dashboard with no jobs: enough for `rayhpc logs` of an interactive cluster."""

    def do_GET(self):  # noqa: N802 (the name http.server calls)
        body = b"[]" if self.path == "/api/jobs/" else b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture
def dashboard() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), JobsApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def interactive_run(shared: Path, dashboard_port: int, token_mode: int | None,
                    site: str = "local") -> RunPaths:
    """An interactive cluster that is up, whose dashboard is published on this host at
    ``dashboard_port``; its token file with ``token_mode`` (None: no token file)."""
    spec = dataclasses.replace(make_spec(site, nodes=1, image="/x.sif"), shared=shared,
                               published={"dashboard": dashboard_port})
    paths = RunPaths(spec.run_dir)
    paths.dir.mkdir(parents=True)
    paths.spec.write_text(json.dumps(spec.to_json()))
    write_record(paths.head, head_record("172.20.0.2", "head"))
    paths.connect.write_text("# up\n")
    if token_mode is not None:
        paths.auth_token.write_text("0" * 64)
        paths.auth_token.chmod(token_mode)
    return paths


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_token_others_can_read_is_warned_about_naming_the_fix(tmp_path, dashboard, mode):
    paths = interactive_run(tmp_path, dashboard, mode)
    result = invoke("logs", "--run", paths.dir.name, "--shared", str(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"rayhpc: no jobs submitted to run {paths.dir.name} yet\n"
    readers = {0o644: "its group and others", 0o640: "its group", 0o604: "others"}[mode]
    assert result.stderr == (
        f"rayhpc: warning: the run's token {paths.auth_token} can be read by {readers} "
        f"(mode {mode:o}): whoever reads it can run code on the cluster; `chmod 600 "
        f"{paths.auth_token}`\n")


def test_a_token_its_private_group_can_read_gets_no_warning(tmp_path, dashboard, capsys):
    """Launched by root, the token is root's and the containers' private group's (a gid that
    no group of the machine has, so no one else is in it): 0640 is no warning then."""
    from rayhpc.launcher.backends.local import private_gid
    if os.geteuid() != 0:
        pytest.skip("only root can give a file to a group it is not in")
    paths = interactive_run(tmp_path, dashboard, 0o640)
    os.chown(paths.auth_token, -1, private_gid())
    Run.load(paths.dir).client()
    assert capsys.readouterr().err == ""


def test_a_private_token_gets_no_warning_and_an_open_one_only_once(tmp_path, dashboard, capsys):
    private = Run.load(interactive_run(tmp_path / "a", dashboard, 0o600).dir)
    private.client()
    assert capsys.readouterr().err == ""
    shared = Run.load(interactive_run(tmp_path / "b", dashboard, 0o644).dir)
    shared.client()
    shared.client()
    Run.load(shared.paths.dir).client()
    assert capsys.readouterr().err.count("rayhpc: warning: the run's token") == 1


def test_attaching_to_a_cluster_whose_token_others_can_read_warns(tmp_path, dashboard, capsys):
    # A batch run: its backend asks no engine whether it runs (it has no job id here).
    paths = interactive_run(tmp_path, dashboard, 0o644, site="slurm")
    cluster = Cluster.attach(paths.dir.name, shared=str(tmp_path), site="slurm")
    assert cluster.env["RAY_AUTH_TOKEN_PATH"] == str(paths.auth_token)
    assert capsys.readouterr().err == (
        f"rayhpc: warning: the run's token {paths.auth_token} can be read by its group and "
        f"others (mode 644): whoever reads it can run code on the cluster; `chmod 600 "
        f"{paths.auth_token}`\n")


def test_a_missing_token_is_called_missing_not_a_permission_problem(tmp_path, dashboard):
    paths = interactive_run(tmp_path, dashboard, None)
    result = invoke("logs", "--run", paths.dir.name, "--shared", str(tmp_path), timeout=120)
    line = refusal(result)
    assert line == (f"error: --run: the run's token {paths.auth_token} is missing: its launch "
                    "writes it before any node starts, so it was removed since, and the "
                    "cluster's dashboard takes no request without it; `rayhpc down --run "
                    f"{paths.dir.name} --shared {tmp_path}` stops the run, then launch a new "
                    "one")
    assert "user who launched" not in line


def test_a_token_this_user_may_not_read_says_whose_it_is(tmp_path, dashboard, monkeypatch):
    run = Run.load(interactive_run(tmp_path, dashboard, 0o600).dir)

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    # As root, file modes do not refuse a read: the refusal is made here.
    monkeypatch.setattr(run_module, "read_token_file", refused)
    with pytest.raises(UserError) as error:
        run.client()
    assert str(error.value) == (f"--run: cannot read the run's token {run.paths.auth_token} "
                                "(Permission denied); run this as the user who launched it")
