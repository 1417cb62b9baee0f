"""Packages added to an image (--pip, --requirements, a recipe's pip): read, checked against
the base's Ray before any build, and pip's resolver failures turned into one line. No engine:
the resolver check runs against a recording stand-in of docker-py's client."""

import subprocess

import pytest

from rayhpc.common.user_error import UserError
from rayhpc.containers.pip_resolve import (
    PipFailure,
    check_resolvable,
    describe,
    dry_run_command,
    parse_pip_failure,
)
from rayhpc.containers.recipe import load_recipe
from rayhpc.containers.requirements import added_tag, read_requirements_file
from rayhpc.containers.secrets import BuildSecrets
from tests.cli import invoke

# pip's messages as pip 23-25 print them (src/pip/_internal/resolution/resolvelib/factory.py);
# the msgpack bound is Ray's own (ray-project/ray python/setup.py: "msgpack >= 1.0.0, < 2.0.0";
# PyPI's metadata of ray 2.60.0: msgpack<2.0.0,>=1.0.0).
CONFLICT = """\
Collecting msgpack<1.0
  Downloading msgpack-0.6.2.tar.gz (119 kB)
INFO: pip is looking at multiple versions of msgpack to determine which version is compatible \
with other requirements. This could take a while.
ERROR: Cannot install msgpack<1.0 and ray==2.60.0 because these package versions have \
conflicting dependencies.

The conflict is caused by:
    The user requested msgpack<1.0
    ray 2.60.0 depends on msgpack<2.0.0 and >=1.0.0

To fix this you could try to:
1. loosen the range of package versions you've specified
2. remove package versions to allow pip to attempt to solve the dependency conflict

ERROR: ResolutionImpossible: for help visit \
https://pip.pypa.io/en/latest/topics/dependency-resolution/#dealing-with-dependency-conflicts
"""
THREE_WAY = ("ERROR: Cannot install a==1.0, b==2.0 and ray==2.60.0 because these package "
             "versions have conflicting dependencies.\n")
INCONSISTENT = """\
ERROR: The following requirements are inconsistent:

    The user requested click==5.0
    The user requested click==7.0

ERROR: ResolutionImpossible For help visit: \
https://pip.pypa.io/en/stable/user_guide/#fixing-conflicting-dependencies
"""
NOT_FOUND = """\
ERROR: Could not find a version that satisfies the requirement tqdm==99.0 (from versions: \
4.66.5, 4.67.1)
ERROR: No matching distribution found for tqdm==99.0
"""


def test_a_conflict_names_the_packages_and_pips_causes():
    failure = parse_pip_failure(CONFLICT)
    assert failure == PipFailure("conflict", ("msgpack<1.0", "ray==2.60.0"), (
        "The user requested msgpack<1.0", "ray 2.60.0 depends on msgpack<2.0.0 and >=1.0.0"))
    line = describe(failure, "2.60.0", "--pip/--requirements")
    assert line.startswith("--pip/--requirements: msgpack<1.0 cannot be installed with the "
                           "base's Ray 2.60.0 (pip: The user requested msgpack<1.0; ray 2.60.0 "
                           "depends on msgpack<2.0.0 and >=1.0.0); loosen or drop")
    assert "\n" not in line


def test_pips_lists_of_two_and_more_are_split():
    assert parse_pip_failure(THREE_WAY).packages == ("a==1.0", "b==2.0", "ray==2.60.0")
    assert parse_pip_failure(
        "ERROR: Cannot install x because these package versions have conflicting "
        "dependencies.").packages == ("x",)


def test_inconsistent_requests_name_what_the_user_requested():
    failure = parse_pip_failure(INCONSISTENT)
    assert failure.kind == "conflict" and failure.packages == ("click==5.0", "click==7.0")


def test_no_release_is_named_as_such():
    failure = parse_pip_failure(NOT_FOUND)
    assert failure == PipFailure("not-found", ("tqdm==99.0",))
    assert "pip finds no release of tqdm==99.0" in describe(failure, "2.60.0", "--pip")


def test_other_failures_are_left_to_the_build():
    assert parse_pip_failure("WARNING: Retrying ... NewConnectionError\nERROR: Could not "
                             "install packages due to an OSError") is None
    assert parse_pip_failure("Would install six-1.17.0\n") is None


def test_the_dry_run_gets_the_build_secrets_and_keeps_ray():
    argv = dry_run_command("2.60.0", ("six", "rich>=13"))
    assert argv[:2] == ["sh", "-c"]
    script = argv[2]
    assert script.index("RAYHPC_SECRETS") < script.index("pip install --dry-run")
    assert "ray==2.60.0 six 'rich>=13' 2>&1" in script
    assert "--quiet" not in script and " -q " not in script  # the causes are info-level
    assert "rm -rf /tmp/rayhpc-secrets" in script
    # The script is valid shell whose pip line carries the words as given.
    words = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True)
    assert words.returncode == 0, words.stderr


class FakeAPI:
    """Records what docker-py's APIClient is asked; the container 'prints' ``output``."""

    def __init__(self, output: str, status: int):
        self.output, self.status, self.calls = output, status, []

    def create_host_config(self, **kwargs):
        return kwargs

    def create_container(self, image, command, environment, **kwargs):
        self.calls.append(("create", image, command, environment, kwargs))
        return "cid"

    def start(self, container):
        self.calls.append(("start", container))

    def wait(self, container, timeout):
        return {"StatusCode": self.status}

    def logs(self, container):
        return self.output.encode()

    def remove_container(self, container, force):
        self.calls.append(("remove", container, force))


def test_a_conflict_in_the_base_image_is_one_user_error_and_the_container_is_removed():
    api = FakeAPI(CONFLICT, status=1)
    with pytest.raises(UserError, match=r"^--pip: msgpack<1.0 cannot be installed with the "
                                        r"base's Ray 2.60.0"):
        check_resolvable(api, "rayproject/ray:2.60.0-py311-cpu", "2.60.0", ("msgpack<1.0",),
                         None, "--pip")
    create = api.calls[0]
    assert create[1] == "rayproject/ray:2.60.0-py311-cpu" and create[3] == {}
    assert "ray==2.60.0 'msgpack<1.0'" in create[2][2]
    assert api.calls[-1] == ("remove", "cid", True)


def test_with_secrets_the_check_reaches_them_as_a_build_does(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    secrets = BuildSecrets.resolve(str(bundle), environ={})
    api = FakeAPI("Would install six-1.17.0\n", status=0)
    assert check_resolvable(api, "img", "2.60.0", ("six",), secrets, "--pip") == ""
    _, _, command, environment, kwargs = api.calls[0]
    assert environment == {"RAYHPC_SECRETS": secrets.channel_name()}
    assert kwargs == {"host_config": {"network_mode": "host"}}
    assert "AAAA" not in repr(api.calls)  # the CA travels over the socket, not the config


def test_an_inconclusive_check_is_a_note_not_a_refusal():
    api = FakeAPI("ERROR: Could not install packages due to an OSError: [Errno 101]\n", 1)
    note = check_resolvable(api, "img", "2.60.0", ("six",), None, "--pip")
    assert note.startswith("the resolver check was inconclusive (ERROR: Could not install")


# --- requirements files and the derived tag --------------------------------------------------

def test_a_requirements_file_with_comments_and_blank_lines(tmp_path):
    path = tmp_path / "req.txt"
    path.write_text("# for the driver\n\nsix  # inline comment\nrich>=13\r\nsix\n"
                    "numpy; python_version >= '3.9'\n")
    assert read_requirements_file(path, "2.60.0") == (
        "six", "rich>=13", "numpy; python_version >= '3.9'")


@pytest.mark.parametrize("line, message", [
    ("-r other.txt", "'-r other.txt' is a pip option, not a requirement"),
    ("-e .", "'-e .' is a pip option"),
    ("--index-url https://x/simple", "is a pip option"),
    ("six\x0bseven", "holds a line break, tab or another control character"),
    ("six\tx", "control character"),
    ("ray==2.9.0", "'ray==2.9.0' excludes the base's Ray 2.60.0"),
    ("six \\", "a line continuation"),
    ("not a requirement!", "is not a requirement pip understands"),
])
def test_a_bad_requirements_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "req.txt"
    path.write_text(f"six\n# ok\n{line}\n")
    with pytest.raises(UserError) as err:
        read_requirements_file(path, "2.60.0")
    assert str(err.value).startswith(f"--requirements: {path}:3: ")
    assert message in str(err.value)


def test_a_missing_requirements_file_is_named(tmp_path):
    with pytest.raises(UserError, match=r"--requirements: .*/nope.txt cannot be read"):
        read_requirements_file(tmp_path / "nope.txt", "2.60.0")


def test_the_derived_tag_keeps_the_recipe_tag_and_names_the_set_of_packages():
    tag = load_recipe("ray").image_tag("cpu")
    one = added_tag(tag, ("six", "rich>=13"))
    assert one.startswith("rayhpc/ray:2.60.0-py311-cpu-plus-") and len(one) == len(tag) + 14
    assert one == added_tag(tag, ("rich>=13", "six"))  # order does not matter
    assert one != added_tag(tag, ("six",))


@pytest.mark.parametrize("args, message", [
    (("--pip", "ray<2.0"), "error: --pip: 'ray<2.0' excludes the base's Ray 2.60.0"),
    (("--pip", "six", "--pip", "-e ."), "error: --pip: '-e .' is a pip option"),
])
def test_build_refuses_a_bad_added_package_before_asking_any_engine(args, message):
    # DOCKER_HOST points nowhere: the refusal comes before any engine is asked.
    result = invoke("build", *args, env={"DOCKER_HOST": "tcp://127.0.0.1:9"})
    assert result.returncode == 2
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
