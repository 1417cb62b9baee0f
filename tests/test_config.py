"""Site profiles and config layering (CLI > RAYHPC_* env > site file > defaults)."""

import os

import pytest

from rayhpc.common.user_error import UserError
from rayhpc.launcher.backends import backend_for
from rayhpc.launcher.resolve.config import list_sites, load_site, resolve_settings
from rayhpc.launcher.resolve.driver import check_driver, driver_script


def test_layering_cli_over_env_over_site_over_default(tmp_path):
    site_file = tmp_path / "mysite.yaml"
    site_file.write_text("scheduler: local\nruntime: docker\nnodes: 5\njoin_timeout: 60\n"
                         "shm_size: 1g\n")
    site = load_site(str(site_file))
    assert site.name == "mysite"
    values = resolve_settings(site, {"nodes": "2"},
                              {"RAYHPC_NODES": "4", "RAYHPC_JOIN_TIMEOUT": "30"})
    assert values["nodes"] == 2             # CLI
    assert values["join_timeout"] == 30     # environment
    assert values["shm_size"] == "1g"       # site file
    assert values["driver"] is None         # default: none, an interactive cluster
    assert resolve_settings(site, {}, {})["nodes"] == 5


@pytest.mark.parametrize("cli, env, message", [
    ({"nodes": "0"}, {}, "--nodes: '0': must be 1 or more"),
    ({"nodes": "-2"}, {}, "--nodes: '-2': must be 1 or more"),
    ({"nodes": "three"}, {}, "--nodes: 'three': not a valid value"),
    ({}, {"RAYHPC_NODES": "0"}, "$RAYHPC_NODES: '0': must be 1 or more"),
    ({"shm_size": "lots"}, {}, "--shm-size: 'lots': must be a size like 512m or 2g"),
    ({"driver": "  "}, {}, "--driver: '  ': must not be empty"),
])
def test_bad_settings_name_their_source(cli, env, message):
    with pytest.raises(UserError) as err:
        resolve_settings(load_site("local"), cli, env)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("text, message", [
    ("scheduler: local\nruntime: docker\nnodez: 2\n", "nodez: unknown key; did you mean 'nodes'?"),
    ("scheduler: moab\nruntime: docker\n", "scheduler: 'moab' is not supported"),
    ("scheduler: local\nruntime: docker\nnodes: 0\n", "nodes: 0: must be 1 or more"),
    ("- a list\n", "a site file is a YAML mapping"),
    ("scheduler: [local\n", "not valid YAML"),
])
def test_bad_site_file_names_file_and_key(tmp_path, text, message):
    """At load, or where the site's backend is chosen (what every command does next)."""
    path = tmp_path / "site.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        backend_for(load_site(str(path)))
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_unknown_site_lists_the_known_ones():
    with pytest.raises(UserError, match="unknown site 'thetaa'.*known sites: .*local"):
        load_site("thetaa")


def test_sites_are_listed_with_scheduler_and_runtime():
    local = {s.name: s for s in list_sites()}["local"]
    assert (local.scheduler, local.runtime) == ("local", "docker")


@pytest.mark.parametrize("command, script", [
    ("python examples/hello.py --ray-address={address}", "examples/hello.py"),
    ("python3 -u train.py", "train.py"),
    ("python -W ignore run.py", "run.py"),
    ("python -m mypkg.main", None),
    ("python -c 'import ray'", None),
    ("./run.sh {address}", "./run.sh"),
    ("bash -c 'echo hi'", None),
])
def test_driver_script_detection(command, script):
    assert driver_script(command) == script


def test_missing_driver_script_is_named(tmp_path):
    (tmp_path / "ok.py").write_text("")
    check_driver("python ok.py", tmp_path)
    with pytest.raises(UserError, match=f"nope.py not found in the shared directory {tmp_path}"):
        check_driver("python nope.py --ray-address={address}", tmp_path)
    with pytest.raises(UserError, match="--driver: empty command"):
        check_driver("", tmp_path)


def test_shared_dir_the_container_user_cannot_enter_is_refused(shared_dir):
    from rayhpc.launcher.backends.rundir import check_reachable

    private = shared_dir / "private"
    (private / "shared").mkdir(parents=True)
    private.chmod(0o700)
    if private.stat().st_uid == 1000:
        pytest.skip("this test needs a user other than uid 1000")
    with pytest.raises(UserError, match=rf"{private} is mode 0o700; choose a directory"):
        check_reachable(private / "shared", 1000, 100)
    private.chmod(0o755)
    with pytest.raises(UserError, match=rf"{private}/shared is not writable by the containers' "
                                        r"user \(uid 1000; it is owned by uid 0, mode 0o755\); "
                                        rf"`chown 1000 {private}/shared`"):
        check_reachable(private / "shared", 1000, 100)
    os.chown(private / "shared", 1000, 100)
    check_reachable(private / "shared", 1000, 100)


def test_invoke_sites_shows_the_documentation_each_site_follows():
    from tests.cli import invoke

    result = invoke("sites", timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    polaris = next(i for i, line in enumerate(lines) if line.startswith("polaris "))
    assert lines[polaris + 1].split() == [
        "docs:", "https://docs.alcf.anl.gov/polaris/containers/containers/", "(argonne-lcf/"
        "user-guides", "docs/polaris/containers/containers.md)"]
    for site in list_sites():
        if site.scheduler != "local":
            assert all(f"docs: {doc}" in result.stdout for doc in site.docs)
