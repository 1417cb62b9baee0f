"""Serving on the real engine (docs/serving.md): a Ray Serve application deployed on a 2-node
local cluster by `rayhpc launch --serve`, answering from this host (the local site's login
side) through its port published on 127.0.0.1 only, `rayhpc status` probing it, `rayhpc down`
leaving nothing; an application that does not import, refused with one line, nothing left."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

from rayhpc import Cluster
from rayhpc.launcher.backends.local.manage import remove_run
from tests.cli import invoke
from tests.launching import launch, leftovers

pytestmark = pytest.mark.docker


def get(url: str) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=30) as response:
        return response.status, response.read()


def test_a_serve_application_answers_from_this_host_until_down(docker_api, built_image,
                                                                 shared_dir):
    image, _ = built_image
    result, run_dir = launch(image, shared_dir, "--nodes", "2", "--detach",
                             "--serve", "examples.serve_echo:app")
    assert run_dir is not None and result.returncode == 0, result.stdout + result.stderr
    run_id = run_dir.name
    try:
        connect = (run_dir / "connect.txt").read_text()
        assert connect in result.stdout
        url = re.search(r"^export RAYHPC_ENDPOINT=(\S+)$", connect, re.M).group(1)
        published = json.loads((run_dir / "spec.json").read_text())["published"]["serve"]
        assert url == f"http://127.0.0.1:{published}"

        # The request a user sends, from this host: the application answers.
        status, body = get(f"{url}/?text=hello")
        assert status == 200 and json.loads(body)["echo"] == "hello"
        # Published on this host's 127.0.0.1 only.
        container = f"rayhpc-{run_id}-head"
        bindings = docker_api.inspect_container(container)["NetworkSettings"]["Ports"]
        assert bindings["8000/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(published)}]

        assert Cluster.attach(run_id, shared=str(shared_dir), verbose=False).endpoint == url
        state = invoke("status", "--run", run_id, "--shared", str(shared_dir))
        assert f"endpoint {url}/: answers (HTTP 200)" in state.stdout, state.stdout
        head_log = json.loads((run_dir / "status.json").read_text())
        assert head_log.get("endpoint_answered"), head_log

        down = invoke("down", "--run", run_id, "--shared", str(shared_dir))
        assert down.returncode == 0, down.stdout + down.stderr
        assert leftovers(docker_api, run_id) == []
        with pytest.raises(OSError):
            get(f"{url}/?text=gone")
    finally:
        remove_run(run_id)


def test_an_application_that_does_not_import_ends_the_launch_with_one_line(docker_api,
                                                                            built_image,
                                                                            shared_dir):
    image, _ = built_image
    result, run_dir = launch(image, shared_dir, "--nodes", "1", "--detach",
                             "--serve", "examples.no_such_app:app")
    try:
        # Not in the shared dir (it could be in the image): found on the head, once the
        # cluster is up; the launch fails as bad input (exit 2), in one line, torn down.
        assert result.returncode == 2
        output = result.stdout + result.stderr
        errors = [line for line in output.splitlines() if "error:" in line]
        assert len(errors) == 1, output
        assert "--serve examples.no_such_app:app: does not import: ModuleNotFoundError" \
            in errors[0] and "in the shared dir" in errors[0]
        assert leftovers(docker_api, run_dir.name) == []
    finally:
        if run_dir is not None:
            remove_run(run_dir.name)
