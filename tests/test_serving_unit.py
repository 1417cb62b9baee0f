"""Serving without an engine (docs/serving.md): the endpoint's settings and refusals, the lines
that say how to reach it, the compose file's publishing, the head's port check and deployment
step, and the probes (`rayhpc status`, the head's) against real HTTP servers on this host."""

from __future__ import annotations

import dataclasses
import http.server
import re
import socket
import threading
import time

import pytest
import yaml

from rayhpc.common.user_error import UserError
from rayhpc.launcher.backends.local.compose import render_compose
from rayhpc.launcher.backends.rundir import prepare_run_dir
from rayhpc.launcher.contract import (
    RunPaths,
    StatusRecord,
    health_path,
    http_status,
    write_record,
)
from rayhpc.launcher.node.connect import connect_text, endpoint_lines
from rayhpc.launcher.node.endpoint import Endpoint, check_port_free, deploy, wait_until_answering
from rayhpc.launcher.node.launch_failed import LaunchFailed
from rayhpc.launcher.resolve.serve_app import check_serve_app
from rayhpc.launcher.runs.run import Run, status_line
from tests.cli import invoke
from tests.specs import head_record, make_spec


class _Answer(http.server.BaseHTTPRequestHandler):
    """200 on Serve's health route, 404 elsewhere: both are answers."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200 if self.path == "/-/healthz" else 404)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- settings and refusals: one line, exit 2, nothing made

def test_serve_makes_an_interactive_cluster_with_an_endpoint_on_8000():
    spec = make_spec("local", serve="examples.serve_echo:app")
    assert spec.interactive and spec.has_endpoint
    assert spec.endpoint_port == 8000  # Ray Serve's default (serve.config.HTTPOptions.port)
    assert spec.serve_bind == "loopback"  # reachable only the way the user chose
    assert not make_spec("local").has_endpoint
    driver = make_spec("local", driver="vllm serve m", serve_port=8100)
    assert driver.has_endpoint and not driver.interactive and driver.endpoint_port == 8100


@pytest.mark.parametrize("args, says", [
    (["--serve", "examples/serve_echo.py"], "--serve: 'examples/serve_echo.py': must be an "
     "import path MODULE:NAME"),
    (["--serve", "m:app", "--driver", "python x.py"], "--serve: a Serve application is "
     "deployed on an interactive cluster (no --driver)"),
    (["--serve", "m:app", "--serve-port", "80"], "--serve-port: '80': must be a port from "
     "1024 to 65535"),
    (["--serve", "m:app", "--serve-port", "20005"], "--serve-port: 20005 is in 20000-29999, "
     "where rayhpc gives Ray the ports of its runs"),
    (["--serve", "m:app", "--serve-bind", "public"], "--serve-bind: 'public': must be one of: "
     "loopback, network"),
])
def test_bad_serve_settings_are_refused_with_one_line(tmp_path, args, says):
    result = invoke("launch", "--site", "slurm", "--image", "/x.sif", "--shared",
                    str(tmp_path / "shared"), *args, "--dry-run", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0], result.stderr
    assert not (tmp_path / "shared" / "runs").exists()


def test_a_batch_dry_run_carries_the_endpoint_in_its_spec(tmp_path):
    result = invoke("launch", "--site", "slurm", "--image", "/x.sif", "--shared",
                    str(tmp_path / "shared"), "--serve", "examples.serve_echo:app",
                    "--serve-bind", "network", "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "#SBATCH" in result.stdout


# -- the launching side's check of the application (before anything starts)

BINDS_APP = {
    "plain": "app = 1\n",
    "annotated": "app: object = None\n",
    "a function": "def app():\n    pass\n",
    "imported": "from os import sep as app\n",
    "under if": "if True:\n    app = 1\n",
    "under except": "try:\n    import nowhere\nexcept ImportError:\n    app = 2\n",
    "a with target": "import contextlib\nwith contextlib.nullcontext() as app:\n    pass\n",
    "a for target": "for app in range(1):\n    pass\n",
    "a walrus": "(app := 3)\n",
    "a tuple": "app, other = 1, 2\n",
    "a star import": "from os.path import *\n",  # cannot tell from the text: the head will
    "__getattr__": "def __getattr__(name):\n    return name\n",
    "a global": "def build():\n    global app\n    app = 1\n\nbuild()\n",
    "globals()": "globals()['a' + 'pp'] = 1\n",  # dynamic: the head will tell
}


@pytest.mark.parametrize("source", list(BINDS_APP.values()), ids=list(BINDS_APP))
def test_a_module_in_the_shared_dir_that_binds_the_name_passes(tmp_path, source):
    (tmp_path / "mine.py").write_text(source)
    check_serve_app("mine:app", tmp_path)


def test_a_module_not_in_the_shared_dir_is_left_to_the_head(tmp_path):
    check_serve_app("in_the_image:app", tmp_path)  # the image may have it: only the head knows
    (tmp_path / "ns").mkdir()  # a namespace package: another portion may be in the image
    check_serve_app("ns.other:app", tmp_path)


def test_a_module_in_a_package_of_the_shared_dir_is_read_there(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "serving.py").write_text("app = 1\n")
    (tmp_path / "pkg" / "sub" / "__init__.py").write_text("")
    check_serve_app("pkg.serving:app", tmp_path)
    with pytest.raises(UserError, match=r"pkg/sub/__init__.py binds no 'app'"):
        check_serve_app("pkg.sub:app", tmp_path)


@pytest.mark.parametrize("files, serve, says", [
    ({"mine.py": "def build():\n    app = 1\n"}, "mine:app",
     r"--serve mine:app: .*mine\.py binds no 'app' at its top level; Ray Serve deploys an "
     r"application bound there, e\.g\. `app = MyDeployment\.bind\(\)`"),
    ({"mine.py": "app = 1\n"}, "mine:ap", r"binds no 'ap' at its top level \(did you mean app\?\)"),
    ({"mine.py": "app = 1\n"}, "mine.sub:app",
     r"mine\.py in the shared dir .* is a module, not a package; fix the module path"),
    ({"pkg/__init__.py": ""}, "pkg.missing:app",
     r"no pkg/missing\.py \(nor pkg/missing/\) in the shared dir .*; fix the module path"),
])
def test_a_module_in_the_shared_dir_that_cannot_serve_is_refused_naming_it(tmp_path, files,
                                                                          serve, says):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    with pytest.raises(UserError, match=says):
        check_serve_app(serve, tmp_path)


def test_a_module_this_python_cannot_parse_is_launched_with_a_warning(tmp_path):
    """It may be of the image's newer Python (a `match` read by a 3.9 login node): the head
    imports it and says so, exit 2, where it does not parse there either."""
    (tmp_path / "mine.py").write_text("app = (\n")
    warning = check_serve_app("mine:app", tmp_path)
    assert re.match(r"warning: --serve mine:app: .*mine\.py:1: .* \(this Python 3\.\d+\); "
                    r"launching anyway", warning), warning
    (tmp_path / "mine.py").write_text("app = " + "1+" * 100_000 + "1\n")  # past the parser's
    assert "launching anyway" in check_serve_app("mine:app", tmp_path)  # recursion limit
    (tmp_path / "mine.py").write_text("app = 1\n")
    assert check_serve_app("mine:app", tmp_path) == ""


def test_a_module_linked_out_of_the_shared_dir_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "mine.py").write_text("app = 1\n")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "mine.py").symlink_to(tmp_path / "elsewhere" / "mine.py")
    with pytest.raises(UserError, match=r"is a link to .*outside the shared dir .* copy the "
                                        "module into it"):
        check_serve_app("mine:app", tmp_path / "shared")


def test_a_launch_whose_application_binds_no_such_name_is_refused_before_anything(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "mine.py").write_text("application = 1\n")
    result = invoke("launch", "--site", "slurm", "--image", "/x.sif", "--shared", str(shared),
                    "--serve", "mine:app", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--serve mine:app:" in errors[0] and "binds no 'app'" \
        in errors[0], result.stderr
    assert sorted(path.name for path in shared.iterdir()) == ["mine.py"]  # nothing made


# -- how to reach it

def test_the_lines_say_how_to_reach_the_endpoint_the_way_the_user_chose():
    loopback = dataclasses.replace(make_spec("slurm", image="/x.sif", serve="m:app"),
                                   login="me@login1")
    lines = endpoint_lines(loopback, "10.1.2.3", "nid0042")
    assert "ssh -N -L 8000:127.0.0.1:8000 -J me@login1 nid0042" in lines[1]
    # On the login node, 127.0.0.1:8000 is the login node's: no URL to curl there.
    assert not any(line.startswith("export") for line in lines)
    network = dataclasses.replace(loopback, serve_bind="network")
    lines = endpoint_lines(network, "10.1.2.3", "nid0042")
    assert "export RAYHPC_ENDPOINT=http://10.1.2.3:8000" in lines
    assert any("ssh -N -L 8000:10.1.2.3:8000 me@login1" in line for line in lines)
    local = dataclasses.replace(make_spec("local", serve="m:app"), published={"serve": 41234})
    lines = endpoint_lines(local, "172.18.0.2", "head")
    assert "export RAYHPC_ENDPOINT=http://127.0.0.1:41234" in lines
    text = connect_text(local, "172.18.0.2", "/t", lines)
    assert text.endswith("export RAYHPC_ENDPOINT=http://127.0.0.1:41234\n")


def test_the_local_site_publishes_the_endpoint_on_this_hosts_loopback_only():
    spec = dataclasses.replace(make_spec("local", serve="m:app"),
                               published={"dashboard": 41000, "client": 41001, "serve": 41002})
    head = next(iter(yaml.safe_load(render_compose(spec))["services"].values()))
    assert "127.0.0.1:41002:8000" in head["ports"]
    assert all(port.startswith("127.0.0.1:") for port in head["ports"])
    plain = dataclasses.replace(make_spec("local"), published={"dashboard": 1, "client": 2})
    head = next(iter(yaml.safe_load(render_compose(plain))["services"].values()))
    assert len(head["ports"]) == 2


# -- the head's side

def test_a_taken_port_fails_the_launch_naming_the_flag():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(LaunchFailed, match=rf"--serve-port {port}: the port is taken on "
                                               r"the head .*choose another --serve-port") \
                as caught:
            check_port_free("127.0.0.1", port)
        assert caught.value.exit_code == 2  # the user's input: exit 2, and never a restart
    check_port_free("127.0.0.1", port)  # free again


def test_an_application_that_does_not_import_fails_with_one_line(tmp_path):
    """The deployment step itself, in this Python: the import fails before Ray is needed."""
    spec = dataclasses.replace(make_spec("local", serve="nowhere_module:app",
                                         serve_port=closed_port()), shared=tmp_path)
    said = []
    with pytest.raises(LaunchFailed) as failed:
        deploy(spec, {"PATH": "/usr/bin:/bin"}, "127.0.0.1", said.append)
    message = str(failed.value)
    assert message.startswith("--serve nowhere_module:app: does not import: "
                              "ModuleNotFoundError: No module named 'nowhere_module'")
    assert "in the shared dir" in message and "\n" not in message
    assert failed.value.exit_code == 2


def test_an_application_with_a_syntax_error_does_not_import_on_the_head(tmp_path):
    (tmp_path / "mine.py").write_text("app = (\n")
    spec = dataclasses.replace(make_spec("local", serve="mine:app", serve_port=closed_port()),
                               shared=tmp_path)
    with pytest.raises(LaunchFailed) as failed:
        deploy(spec, {"PATH": "/usr/bin:/bin"}, "127.0.0.1", lambda _: None)
    assert str(failed.value).startswith("--serve mine:app: does not import: SyntaxError: ")
    assert "line 1" in str(failed.value) and failed.value.exit_code == 2
    assert str(failed.value).endswith("; fix the module or --serve")


def test_an_application_found_in_the_shared_dir_is_imported_from_there(tmp_path):
    """The shared dir is the deployment's working directory and on its path: a module there
    imports (this Python has no Ray Serve: the step fails after the import, not at it)."""
    (tmp_path / "mine.py").write_text("app = object()\n")
    spec = dataclasses.replace(make_spec("local", serve="mine:app", serve_port=closed_port()),
                               shared=tmp_path)
    with pytest.raises(LaunchFailed) as failed:
        deploy(spec, {"PATH": "/usr/bin:/bin", "PYTHONPATH": ""}, "127.0.0.1", lambda _: None)
    assert "does not import" not in str(failed.value)
    assert failed.value.exit_code == 1  # not the input's fault (no Ray Serve in this Python)
    assert "ray" in str(failed.value).lower()


def test_the_probes_count_any_http_answer_and_nothing_else(http_server):
    base = f"http://127.0.0.1:{http_server}"
    assert http_status(base + "/-/healthz") == 200
    assert http_status(base + "/") == 404  # an answer: the service is there
    assert http_status(f"http://127.0.0.1:{closed_port()}/") is None
    assert wait_until_answering(base + "/-/healthz", 5, lambda: False)
    assert not wait_until_answering(f"http://127.0.0.1:{closed_port()}/", 0, lambda: False)
    assert not wait_until_answering(base, 5, lambda: True)  # a stop ends the wait
    assert health_path(make_spec("local", serve="m:app")) == "/-/healthz"
    assert health_path(make_spec("local", driver="x", serve_port=8100)) == "/"


def test_the_head_probes_what_it_binds():
    spec = make_spec("slurm", image="/x.sif", serve="m:app")
    assert Endpoint(spec, "10.0.0.5", "n1").url == "http://127.0.0.1:8000"
    network = dataclasses.replace(spec, serve_bind="network")
    assert Endpoint(network, "10.0.0.5", "n1").url == "http://10.0.0.5:8000"
    local = dataclasses.replace(make_spec("local", serve="m:app"), published={"serve": 4})
    # A container's loopback cannot be published: its cluster address is, on 127.0.0.1 here.
    assert Endpoint(local, "172.18.0.2", "head").url == "http://172.18.0.2:8000"


# -- rayhpc status

def running_run(tmp_path, spec, ip="127.0.0.1", answered=None) -> Run:
    spec = dataclasses.replace(spec, shared=tmp_path)
    paths = RunPaths(prepare_run_dir(spec))
    write_record(paths.head, head_record(ip=ip, node="nid0042"))
    write_record(paths.status, StatusRecord(joined=2, expected=2, endpoint_answered=answered))
    return Run.load(paths.dir)


def test_status_probes_a_published_endpoint(tmp_path, http_server):
    spec = dataclasses.replace(make_spec("local", serve="m:app"),
                               published={"serve": http_server})
    line = status_line(running_run(tmp_path, spec))
    assert f"endpoint http://127.0.0.1:{http_server}/: answers (HTTP 200)" in line


def test_status_probes_an_endpoint_on_the_cluster_network(tmp_path, http_server):
    spec = make_spec("slurm", image="/x.sif", driver="vllm serve m", serve_port=http_server,
                     serve_bind="network")
    line = status_line(running_run(tmp_path, spec))
    assert f"endpoint http://127.0.0.1:{http_server}/: answers (HTTP 404)" in line
    spec = dataclasses.replace(spec, serve_port=closed_port())
    assert ": not answering" in status_line(running_run(tmp_path / "b", spec))


def test_status_tells_a_loopback_endpoint_by_the_heads_probe(tmp_path):
    spec = make_spec("slurm", image="/x.sif", serve="m:app")
    line = status_line(running_run(tmp_path, spec, answered=1796625325.0))
    assert "endpoint port 8000 on nid0042 (its loopback: `rayhpc status` cannot reach it " \
        "from here): answered the head's probe at" in line
    assert "answered the head's probe at" in line
    line = status_line(running_run(tmp_path / "b", spec, answered=1e308))  # a crafted time
    assert "not answering yet" in line


def test_status_never_sends_a_request_to_a_crafted_head_address(tmp_path):
    spec = make_spec("slurm", image="/x.sif", serve="m:app", serve_bind="network")
    line = status_line(running_run(tmp_path, spec, ip="evil.example.com/x?"))
    assert "evil" not in line and "an address head.json does not give" in line



def test_status_says_when_the_head_is_not_up_yet(tmp_path):
    spec = dataclasses.replace(make_spec("slurm", image="/x.sif", serve="m:app",
                                         serve_bind="network"), shared=tmp_path)
    prepare_run_dir(spec)
    line = status_line(Run.load(spec.run_dir))
    assert "endpoint on the head's cluster address, port 8000: not up yet" in line


def test_a_stop_during_the_deployment_ends_it_at_once(tmp_path):
    """A deployment that takes long (replicas loading a model) is stopped with the run."""
    (tmp_path / "slow.py").write_text("import time\ntime.sleep(60)\napp = object()\n")
    spec = dataclasses.replace(make_spec("local", serve="slow:app", serve_port=closed_port()),
                               shared=tmp_path)
    asked = time.monotonic()
    assert deploy(spec, {"PATH": "/usr/bin:/bin"}, "127.0.0.1", lambda _: None,
                  stopped=lambda: time.monotonic() - asked > 1) is False
    assert time.monotonic() - asked < 10


@pytest.mark.parametrize("written", ['{"endpoint_answered": "soon"}',
                                     '{"endpoint_answered": 1e999}', "link"])
def test_status_takes_a_crafted_endpoint_record_for_no_answer(tmp_path, written):
    """status.json is the containers' writing: a wrong type, a huge number or a link is no
    answer (and no crash)."""
    spec = make_spec("slurm", image="/x.sif", serve="m:app")
    run = running_run(tmp_path, spec)
    status = run.paths.status
    status.unlink()
    if written == "link":
        (tmp_path / "elsewhere.json").write_text('{"endpoint_answered": 1796625325.0}')
        status.symlink_to(tmp_path / "elsewhere.json")
    else:
        status.write_text(written)
    line = status_line(Run.load(run.paths.dir))
    assert "not answering yet" in line and "answered the head's probe" not in line
