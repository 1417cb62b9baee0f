"""Rendered Dockerfiles and compose files against reviewed golden files."""

import pytest
import yaml

from rayhpc.common.user_error import UserError
from rayhpc.containers.dockerfile import render_dockerfile
from rayhpc.containers.recipe import load_recipe
from rayhpc.containers.secrets import BuildSecrets
from rayhpc.containers.standin import render_base_dockerfile
from rayhpc.launcher.backends.local.compose import render_compose
from tests.golden import assert_golden
from tests.specs import make_spec


def spec(nodes=3, shared="/data/shared", **cli):
    return make_spec("local", shared=shared, nodes=nodes, **cli)


@pytest.mark.parametrize("variant", list(load_recipe("ray").variants))
def test_recipe_dockerfile_golden(variant):
    assert_golden(f"Dockerfile.ray-{variant}", render_dockerfile(load_recipe("ray"), variant))


def test_base_override_changes_only_from_line():
    recipe = load_recipe("ray")
    default = render_dockerfile(recipe, "cpu").splitlines()
    other = render_dockerfile(recipe, "cpu", base="my/base:1").splitlines()
    changed = [(a, b) for a, b in zip(default, other) if a != b]
    assert changed == [("FROM rayproject/ray:2.60.0-py311-cpu", "FROM my/base:1")]


def test_layer_order_puts_pip_after_apt_and_labels_last():
    text = render_dockerfile(load_recipe("ray"), "cpu")
    assert text.index("apt-get install") < text.index("pip install") < text.index("LABEL")


def test_standin_dockerfile_golden():
    assert_golden("Dockerfile.standin", render_base_dockerfile(load_recipe("ray")))


def test_standin_refuses_a_python_bookworm_lacks(tmp_path):
    recipe = load_recipe("ray")
    other = type(recipe)(**{**recipe.__dict__, "python": "3.12"})
    with pytest.raises(UserError, match="python: the stand-in base is Debian bookworm"):
        render_base_dockerfile(other)


def test_compose_golden():
    assert_golden("compose.local-3.yaml", render_compose(spec()))


def test_compose_is_isolated_per_run_and_safe_by_default():
    doc = yaml.safe_load(render_compose(spec()))
    assert list(doc["services"]) == ["head", "worker-1", "worker-2"]
    assert doc["networks"]["ray"]["name"] == "rayhpc-20260101-000000-abcd"
    for name, service in doc["services"].items():
        assert service["container_name"] == f"rayhpc-20260101-000000-abcd-{name}"
        assert service["init"] is True
        assert service["user"] == "1000"
        assert service["shm_size"] == "2g"
        assert {"type": "bind", "source": "/data/shared", "target": "/data/shared"} in \
            service["volumes"]
        published = service.get("ports", [])
        assert all(p.startswith("127.0.0.1:") for p in published)
    assert "ports" not in doc["services"]["worker-1"]


def test_compose_for_a_non_image_user_gives_a_home():
    doc = yaml.safe_load(render_compose(spec(nodes=2), user="1234:1234"))
    assert doc["services"]["head"]["environment"]["HOME"] == spec().temp_dir


def test_two_runs_share_no_name_port_or_temp_dir():
    a, b = spec(), make_spec("local", run_id="20260101-000000-beef")
    assert a.project != b.project
    assert a.temp_dir != b.temp_dir
    assert set(a.ports.values()).isdisjoint(b.ports.values())


def test_compose_escapes_what_compose_would_interpolate():
    doc = yaml.safe_load(render_compose(spec(shared="/data/x$HOME/${USER}")))
    head = doc["services"]["head"]
    assert head["working_dir"] == "/data/x$$HOME/$${USER}"
    assert head["volumes"][0]["source"] == "/data/x$$HOME/$${USER}"


def test_secrets_script_carries_ca_and_pip_settings_only_in_the_script(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    secrets = BuildSecrets.resolve(str(bundle), environ={"PIP_INDEX_URL": "https://u:p@idx/simple"})
    script = secrets.script()
    assert "AAAA" in script and "export PIP_INDEX_URL=https://u:p@idx/simple" in script
    assert "PIP_CERT=/tmp/rayhpc-secrets/ca.pem" in script
    # The channel name is what reaches the build (and its history): no secret in it.
    assert "AAAA" not in secrets.channel_name() and "u:p" not in secrets.channel_name()
    assert secrets.channel_name() == BuildSecrets.resolve(
        str(bundle), environ={"PIP_INDEX_URL": "https://u:p@idx/simple"}).channel_name()


def test_ca_bundle_defaults_from_environment_and_missing_file_is_named(tmp_path):
    assert not BuildSecrets.resolve(environ={})
    with pytest.raises(UserError, match=r"CA bundle /nope.pem \(from \$REQUESTS_CA_BUNDLE\)"):
        BuildSecrets.resolve(environ={"REQUESTS_CA_BUNDLE": "/nope.pem"})
    with pytest.raises(UserError, match=r"CA bundle /nope.pem \(from --ca-bundle\)"):
        BuildSecrets.resolve("/nope.pem", environ={})
    not_pem = tmp_path / "x.pem"
    not_pem.write_text("hello")
    with pytest.raises(UserError, match="holds no PEM certificate"):
        BuildSecrets.resolve(str(not_pem), environ={})


def _instructions(text):
    """Dockerfile instructions (continuation lines joined, comments and blanks dropped)."""
    joined = text.replace("\\\n", " ")
    return [line for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def test_an_extending_recipe_renders_its_parent_steps_first_and_its_own_as_new_layers(tmp_path):
    child_file = tmp_path / "child.yaml"
    child_file.write_text("name: child\nextends: ray\napt: [htop]\npip: [six]\n"
                          "env: {MINE: x}\nlabels: {team: a}\n")
    parent = _instructions(render_dockerfile(load_recipe("ray"), "gpu"))
    child = _instructions(render_dockerfile(load_recipe(str(child_file)), "gpu"))
    # Every instruction of the parent before its LABEL, unchanged and in order: the engine's
    # cache serves them all to the child's build.
    assert parent[-1].startswith("LABEL") and child[:len(parent) - 1] == parent[:-1]
    added = child[len(parent) - 1:]
    assert [line.split()[0] for line in added] == ["USER", "RUN", "USER", "RUN", "ENV", "LABEL"]
    assert added[0] == "USER root" and "install -y -q --no-install-recommends htop" in added[1]
    assert "procps" not in added[1]  # the parent's packages are not installed again
    assert added[2] == "USER ray"
    assert added[3].count("pip install") == 1 and "ray==2.60.0 six   &&" in added[3]
    assert added[4] == 'ENV MINE="x"'
    assert '"team"="a"' in added[5] and '"org.rayhpc.extends"="ray"' in added[5]


def test_extra_pip_is_one_layer_after_the_recipe_and_named_in_a_label():
    recipe = load_recipe("ray")
    plain = _instructions(render_dockerfile(recipe, "cpu"))
    extra = _instructions(render_dockerfile(recipe, "cpu", extra_pip=("six", "rich>=13")))
    assert extra[:len(plain) - 1] == plain[:-1]
    run, label = extra[len(plain) - 1:]
    assert "python -m pip install --no-cache-dir ray==2.60.0 six 'rich>=13'   &&" in run
    assert '"org.rayhpc.extra-pip"="six rich>=13"' in label


def test_every_pip_step_installs_with_the_base_ray_pinned():
    text = render_dockerfile(load_recipe("ray"), "cpu")
    pip_lines = [line for line in text.splitlines() if "pip install" in line]
    assert pip_lines and all("ray==2.60.0" in line for line in pip_lines)


def test_an_extending_recipe_has_a_def_file_with_its_parent_steps_then_its_own(tmp_path):
    from rayhpc.containers.apptainer_def import render_def
    child_file = tmp_path / "child.yaml"
    child_file.write_text("name: child\nextends: ray\nvariants:\n  gpu:\npip: [six]\n")
    text = render_def(load_recipe(str(child_file)), "gpu")
    assert "From: rayproject/ray:2.60.0-py311-gpu" in text
    post = text.split("%post", 1)[1].split("%environment")[0]
    assert post.index("pip install --no-cache-dir ray==2.60.0 tqdm || exit $?") < post.index(
        "pip install --no-cache-dir ray==2.60.0 six || exit $?")
    assert "org.rayhpc.extends ray" in text
