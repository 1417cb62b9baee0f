"""bin/engine's decisions (what is there -> what it does or prints), run for real against fake
`docker`, `dockerd`, `apt-get`, `sudo`, `id`, ... on a PATH of their own that record every call.

The real install path (Debian's packages, a real dockerd) is proven end to end by .ci/run on a
bare CI machine, which calls the same script."""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests import PROJECT_ROOT

ENGINE = PROJECT_ROOT / "bin" / "engine"
SYSTEM_HOST = "unix:///var/run/docker.sock"
# Real tools the script (and the fakes) use; nothing else of the host is on the fake PATH.
TOOLS = ["bash", "sh", "env", "awk", "sed", "tee", "cat", "tail", "head", "sleep", "setsid",
         "timeout", "grep", "tr", "uname", "kill", "touch", "cp", "chmod", "mkdir",
         "dirname"]

BOOKWORM = """PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
"""
TRIXIE = 'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nVERSION_ID="13"\n' \
         'VERSION_CODENAME=trixie\nID=debian\n'
NOBLE = 'PRETTY_NAME="Ubuntu 24.04.1 LTS"\nNAME="Ubuntu"\nVERSION_ID="24.04"\n' \
        'VERSION_CODENAME=noble\nID=ubuntu\nID_LIKE=debian\n'
FOCAL = 'PRETTY_NAME="Ubuntu 20.04.6 LTS"\nVERSION_ID="20.04"\nVERSION_CODENAME=focal\n' \
        'ID=ubuntu\n'
FEDORA = 'NAME="Fedora Linux"\nVERSION_ID=40\nID=fedora\nPRETTY_NAME="Fedora Linux 40"\n'

DEBIAN_SOURCES = """Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
TRIXIE_SOURCE = """Types: deb
URIs: http://mirror.example/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

"""
TRIXIE_PIN = "Package: *\nPin: release n=trixie\nPin-Priority: 100\n"

# --- the fakes: bash scripts that append their command line to $STATE/calls ---------------

FAKES = {
    # `docker info` answers when $STATE/engine_at names the DOCKER_HOST asked for; that
    # engine refuses a user (not root through the fake sudo) when $STATE/denied exists.
    "docker": r"""
echo "docker $*" >> "$STATE/calls"
host="${DOCKER_HOST:-unix:///var/run/docker.sock}"
case "$1" in
  info)
    if [ -f "$STATE/engine_at" ] && [ "$(cat "$STATE/engine_at")" = "$host" ]; then
      [ -f "$STATE/denied" ] && [ -z "${FAKE_ROOT:-}" ] || exit 0
      echo "permission denied while trying to connect to the Docker daemon socket at $host" >&2
      exit 1
    fi
    echo "Cannot connect to the Docker daemon at $host. Is the docker daemon running?" >&2
    exit 1 ;;
  compose)
    [ -f "$STATE/compose_v2" ] && { echo "Docker Compose version 2.26.1-4"; exit 0; }
    echo "docker: 'compose' is not a docker command." >&2; exit 1 ;;
  version) echo "20.10.24+dfsg1" ;;
esac
""",
    "docker-compose": r"""
echo "docker-compose $*" >> "$STATE/calls"
echo "docker-compose version 1.29.2, build unknown"
""",
    # Comes up (answers at the system socket) unless $STATE/dockerd_hangs or _dies exists.
    "dockerd": r"""
echo "dockerd $*" >> "$STATE/calls"
echo $$ > "$STATE/dockerd.pid"
if [ -f "$STATE/dockerd_dies" ]; then echo "failed to start daemon: exiting at once"; exit 1; fi
if [ -f "$STATE/dockerd_hangs" ]; then echo "failed to start containerd: timeout"; exec sleep 60; fi
echo "API listen on /var/run/docker.sock"
echo "unix:///var/run/docker.sock" > "$STATE/engine_at"
exec sleep 60
""",
    # Installs the fakes of what it is asked for, or fails when $STATE/apt_fails exists.
    "apt-get": r"""
echo "DEBIAN_FRONTEND=${DEBIAN_FRONTEND:-} apt-get $*" >> "$STATE/calls"
[ "$1" = install ] || exit 0
if [ -f "$STATE/apt_fails" ]; then echo "E: Unable to locate package docker.io" >&2; exit 100; fi
for arg in "$@"; do
  case "$arg" in
    docker.io) cp "$FAKES/dockerd" "$FAKES/docker" "$FAKEBIN/" ;;
    docker-compose|docker-compose-v2) touch "$STATE/compose_v2" ;;
    debootstrap|openssl) printf '#!/bin/sh\n' > "$FAKEBIN/$arg"; chmod +x "$FAKEBIN/$arg" ;;
  esac
done
""",
    # Passwordless unless $STATE/sudo_password exists; runs the command "as root".
    "sudo": r"""
echo "sudo $*" >> "$STATE/calls"
case "$1" in
  -n|-v) [ -f "$STATE/sudo_password" ] && exit 1; exit 0 ;;
esac
FAKE_ROOT=1 exec "$@"
""",
    "id": r"""
case "$1" in
  -u) cat "$STATE/uid" ;;
  -un) cat "$STATE/user" ;;
  -nG) echo "users" ;;
esac
""",
    "usermod": 'echo "usermod $*" >> "$STATE/calls"\n',
    "systemctl": r"""
echo "systemctl $*" >> "$STATE/calls"
echo "unix:///var/run/docker.sock" > "$STATE/engine_at"
""",
    "uname": 'echo Darwin\n',
}


class Machine:
    """A fake machine: PATH of fakes and real tools, os-release, /etc/apt, state, calls."""

    def __init__(self, root: Path):
        self.root = root
        self.state = root / "state"
        self.fakes = root / "fakes"  # every fake; copied into bin/ to be "installed"
        self.bin = root / "bin"
        self.tools = root / "tools"
        self.apt = root / "etc-apt"
        for path in (self.state, self.fakes, self.bin, self.tools,
                     self.apt / "sources.list.d", self.apt / "preferences.d"):
            path.mkdir(parents=True)
        for name, body in FAKES.items():
            fake = self.fakes / name
            fake.write_text("#!/bin/bash\n" + body)
            fake.chmod(0o755)
        for tool in TOOLS:
            real = shutil.which(tool)
            if real:
                (self.tools / tool).symlink_to(real)
        self.os_release = root / "os-release"
        self.os_release.write_text(BOOKWORM)
        (self.apt / "sources.list.d" / "debian.sources").write_text(DEBIAN_SOURCES)
        self.log = root / "dockerd.log"
        self.as_root()
        self.have("docker", "id", "apt-get", "usermod")  # a Docker CLI, no engine: a fresh VM

    def have(self, *names: str) -> None:
        for name in names:
            shutil.copy(self.fakes / name, self.bin / name)

    def flag(self, *names: str, text: str = "") -> None:
        for name in names:
            (self.state / name).write_text(text)

    def as_root(self) -> None:
        self.flag("uid", text="0\n")
        self.flag("user", text="root\n")

    def as_user(self) -> None:
        self.flag("uid", text="1000\n")
        self.flag("user", text="alice\n")

    def engine_up(self, host: str = SYSTEM_HOST) -> None:
        self.flag("engine_at", text=host + "\n")

    def env(self, **extra: str) -> dict[str, str]:
        env = {"PATH": f"{self.bin}:{self.tools}", "STATE": str(self.state),
               "FAKES": str(self.fakes), "FAKEBIN": str(self.bin),
               "RAYHPC_OS_RELEASE": str(self.os_release), "RAYHPC_APT_ETC": str(self.apt),
               "RAYHPC_SYSTEMD_DIR": str(self.root / "no-systemd"),
               "RAYHPC_DOCKERD_LOG": str(self.log), "RAYHPC_ENGINE_TIMEOUT": "10",
               "HOME": str(self.root)}
        env.update(extra)
        return env

    def run(self, *args: str, script: Path = ENGINE, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(script), *args], env=self.env(**extra), text=True,
                              capture_output=True, stdin=subprocess.DEVNULL, timeout=60)

    def calls(self) -> list[str]:
        path = self.state / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def actions(self) -> list[str]:
        """What it did, leaving out the `docker` probes."""
        return [c for c in self.calls() if not c.startswith(("docker ", "docker-compose "))]

    def dockerd_pid(self) -> int | None:
        path = self.state / "dockerd.pid"
        return int(path.read_text()) if path.exists() else None


@pytest.fixture
def machine(tmp_path):
    m = Machine(tmp_path)
    yield m
    pid = m.dockerd_pid()
    if pid and alive(pid):
        os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not alive.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def plan(result: subprocess.CompletedProcess) -> list[str]:
    """The indented lines of the plan (or of the commands for an unsupported system)."""
    return [line[2:] for line in result.stderr.splitlines() if line.startswith("  ")]


APT_BOOKWORM = [
    "DEBIAN_FRONTEND=noninteractive apt-get update -q",
    "DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io debootstrap openssl",
    "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -t trixie "
    "docker-compose",
]


# --- engine and compose there: nothing to do ----------------------------------------------

def test_engine_and_compose_v2_present_does_nothing(machine):
    machine.engine_up()
    machine.flag("compose_v2")
    result = machine.run()
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "rayhpc: Docker engine 20.10.24+dfsg1 at the system socket (unix:///var/run/docker.sock)",
        "rayhpc: compose v2: Docker Compose version 2.26.1-4"]
    assert result.stdout == ""
    assert machine.actions() == []
    quiet = machine.run("--quiet")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


def test_engine_with_compose_v1_only_is_accepted(machine):
    machine.engine_up()
    machine.have("docker-compose")
    result = machine.run("--install")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "rayhpc: compose v1: docker-compose version 1.29.2, build unknown (works; v2, "
        "`docker compose`, is preferred)")
    assert machine.actions() == []


def test_docker_host_is_probed_not_the_system_socket(machine):
    machine.engine_up("tcp://10.0.0.5:2375")
    machine.flag("compose_v2")
    result = machine.run(DOCKER_HOST="tcp://10.0.0.5:2375")
    assert result.returncode == 0, result.stderr
    assert "at DOCKER_HOST=tcp://10.0.0.5:2375" in result.stderr
    assert result.stdout == ""


def test_docker_host_that_does_not_answer_installs_nothing(machine):
    result = machine.run("--install", DOCKER_HOST="tcp://10.0.0.5:2375")
    assert result.returncode == 2
    assert error_lines(result) == [
        "error: DOCKER_HOST=tcp://10.0.0.5:2375 does not answer (Cannot connect to the Docker "
        "daemon at tcp://10.0.0.5:2375. Is the docker daemon running?): start that engine, or "
        "unset DOCKER_HOST to use (or set up) one on this machine"]
    assert machine.actions() == []


def test_rootless_engine_is_found_and_its_docker_host_printed(machine):
    runtime = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # short: AF_UNIX path limit
    try:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(runtime / "docker.sock"))
        host = f"unix://{runtime}/docker.sock"
        machine.engine_up(host)
        machine.flag("compose_v2")
        result = machine.run("--quiet", XDG_RUNTIME_DIR=str(runtime))
        sock.close()
    finally:
        shutil.rmtree(runtime)
    assert result.returncode == 0, result.stderr
    assert result.stdout == host + "\n"
    assert result.stderr == (f"rayhpc: using the rootless engine through DOCKER_HOST={host} "
                             "(export it to run invoke yourself)\n")
    assert machine.actions() == []


def test_engine_refusing_this_user_is_explained_not_reinstalled(machine):
    machine.as_user()
    machine.have("dockerd", "sudo")
    machine.engine_up()
    machine.flag("compose_v2", "denied")
    result = machine.run("--install")
    assert result.returncode == 2
    assert error_lines(result) == [
        "error: a Docker engine runs at unix:///var/run/docker.sock, but alice may not use it "
        "(permission denied while trying to connect to the Docker daemon socket at "
        "unix:///var/run/docker.sock): `sudo usermod -aG docker alice`, log in again, and "
        "rerun (or use a rootless engine)"]
    assert machine.actions() == []


# --- a bare Debian/Ubuntu machine, with consent -------------------------------------------

def test_bare_bookworm_as_root_installs_compose_from_trixie_and_starts_dockerd(machine):
    result = machine.run("--install")
    assert result.returncode == 0, result.stderr
    assert machine.actions() == [*APT_BOOKWORM, "dockerd "]
    sources = machine.apt / "sources.list.d"
    assert sorted(p.name for p in sources.iterdir()) == ["debian.sources",
                                                         "rayhpc-trixie.sources"]
    assert (sources / "rayhpc-trixie.sources").read_text() == TRIXIE_SOURCE
    assert (machine.apt / "preferences.d" / "rayhpc-trixie-low").read_text() == TRIXIE_PIN
    # It waited for the engine: `docker info` was asked again after dockerd started.
    calls = machine.calls()
    assert "docker info" in calls[calls.index("dockerd "):]
    assert machine.log.read_text() == "API listen on /var/run/docker.sock\n"
    assert alive(machine.dockerd_pid())  # left running, out of this script's session
    assert result.stdout == ""
    assert result.stderr.splitlines()[-2:] == [
        "rayhpc: Docker engine 20.10.24+dfsg1 at the system socket (unix:///var/run/docker.sock)",
        "rayhpc: compose v2: Docker Compose version 2.26.1-4"]
    assert error_lines(result) == []


def test_the_plan_is_shown_before_anything_is_done(machine):
    result = machine.run("--install")
    assert result.returncode == 0, result.stderr
    apt = machine.apt
    assert plan(result) == [
        f"write {apt}/sources.list.d/rayhpc-trixie.sources: this machine's Debian source with "
        "suite trixie (compose v2 is not in bookworm)",
        f"write {apt}/preferences.d/rayhpc-trixie-low: Package: * / Pin: release n=trixie / "
        "Pin-Priority: 100 (nothing else comes from trixie)",
        "apt-get update -q",
        "apt-get install -y -q docker.io debootstrap openssl",
        "apt-get install -y -q --no-install-recommends -t trixie docker-compose",
        f"dockerd > {machine.log} 2>&1 & (in the background), then wait up to 10 s for it to "
        "answer"]
    lines = result.stderr.splitlines()
    assert lines[0] == ("rayhpc: missing: a Docker engine (no dockerd on this machine); compose "
                        "(neither `docker compose` nor docker-compose)")
    assert lines[1] == ("rayhpc: to set it up on Debian GNU/Linux 12 (bookworm), bin/engine "
                        "would run (as root):")


def test_install_consent_from_the_environment(machine):
    result = machine.run(RAYHPC_INSTALL_ENGINE="1")
    assert result.returncode == 0, result.stderr
    assert machine.actions() == [*APT_BOOKWORM, "dockerd "]


def test_bookworm_with_sources_list_only_gets_a_one_line_trixie_source(machine):
    (machine.apt / "sources.list.d" / "debian.sources").unlink()
    (machine.apt / "sources.list").write_text(
        "deb [signed-by=/k.gpg] http://mirror.example/debian bookworm main\n"
        "deb http://mirror.example/debian-security bookworm-security main\n")
    result = machine.run("--install")
    assert result.returncode == 0, result.stderr
    assert (machine.apt / "sources.list.d" / "rayhpc-trixie.list").read_text() == (
        "deb [signed-by=/k.gpg] http://mirror.example/debian trixie main\n")


def test_bare_bookworm_with_sudo_prefixes_every_change_and_adds_the_user_to_docker(machine):
    machine.as_user()
    machine.have("sudo")
    machine.flag("denied")  # the new engine's socket is root:docker, and this session is not
    result = machine.run("--install")
    assert result.returncode == 1
    sudo_calls = [c for c in machine.actions() if c.startswith("sudo ") and "docker info" not in c]
    assert sudo_calls == [
        "sudo -n true",
        f"sudo tee {machine.apt}/sources.list.d/rayhpc-trixie.sources",
        f"sudo tee {machine.apt}/preferences.d/rayhpc-trixie-low",
        "sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q",
        "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io debootstrap "
        "openssl",
        "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
        "-t trixie docker-compose",
        "sudo usermod -aG docker alice",
        f"sudo sh -c setsid dockerd >\"$1\" 2>&1 </dev/null & echo $! sh {machine.log}"]
    assert [c for c in machine.actions() if c.startswith(("DEBIAN", "usermod", "dockerd"))] == [
        *APT_BOOKWORM, "usermod -aG docker alice", "dockerd "]
    assert error_lines(result) == [
        "error: the engine is up, but alice may not use unix:///var/run/docker.sock in this "
        "session: log in again (group docker counts from then on) or run `newgrp docker`, "
        "then rerun"]


def test_trixie_takes_compose_v2_from_its_own_suite(machine):
    machine.os_release.write_text(TRIXIE)
    result = machine.run("--install")
    assert result.returncode == 0, result.stderr
    assert machine.actions() == [
        "DEBIAN_FRONTEND=noninteractive apt-get update -q",
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io docker-compose "
        "debootstrap openssl",
        "dockerd "]
    assert sorted(p.name for p in (machine.apt / "sources.list.d").iterdir()) == [
        "debian.sources"]
    assert list((machine.apt / "preferences.d").iterdir()) == []


def test_ubuntu_takes_docker_compose_v2(machine):
    machine.os_release.write_text(NOBLE)
    result = machine.run("--install")
    assert result.returncode == 0, result.stderr
    assert machine.actions()[1] == ("DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                                    "docker.io docker-compose-v2 debootstrap openssl")


def test_engine_installed_but_stopped_is_only_started(machine):
    machine.have("dockerd")
    machine.flag("compose_v2")
    result = machine.run("--install")
    assert result.returncode == 0, result.stderr
    assert machine.actions() == ["dockerd "]


def test_engine_without_compose_on_bookworm_gets_only_compose_v2(machine):
    machine.have("dockerd")
    machine.engine_up()
    for tool in ("debootstrap", "openssl"):
        (machine.bin / tool).write_text("#!/bin/sh\n")
        (machine.bin / tool).chmod(0o755)
    result = machine.run("--install")
    assert result.returncode == 0, result.stderr
    assert machine.actions() == [APT_BOOKWORM[0], APT_BOOKWORM[2]]
    assert (machine.apt / "preferences.d" / "rayhpc-trixie-low").read_text() == TRIXIE_PIN


def test_under_systemd_the_docker_service_is_started(machine):
    machine.have("dockerd", "systemctl")
    machine.flag("compose_v2")
    systemd = machine.root / "systemd"
    systemd.mkdir()
    result = machine.run("--install", RAYHPC_SYSTEMD_DIR=str(systemd))
    assert result.returncode == 0, result.stderr
    assert machine.actions() == ["systemctl start docker"]


def test_base_tools_are_installed_on_their_own_when_asked(machine):
    machine.engine_up()
    machine.flag("compose_v2")
    assert machine.run("--install").returncode == 0
    assert machine.actions() == []
    result = machine.run("--install", "--base-tools")
    assert result.returncode == 0, result.stderr
    assert machine.actions() == [
        "DEBIAN_FRONTEND=noninteractive apt-get update -q",
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap openssl"]
    assert result.stderr.splitlines()[-1] == "rayhpc: debootstrap and openssl: present"


# --- no consent ---------------------------------------------------------------------------

def test_no_consent_and_no_terminal_prints_the_plan_and_exits_2(machine):
    result = machine.run()
    assert result.returncode == 2
    assert error_lines(result) == [
        "error: no Docker engine with compose here, and no consent to install one (not a "
        "terminal): rerun with RAYHPC_INSTALL_ENGINE=1 (or bin/engine --install) to do the "
        "above, or do it yourself"]
    assert result.stderr.splitlines()[-1].startswith("error:")
    assert len(plan(result)) == 6
    assert machine.actions() == []
    assert list((machine.apt / "preferences.d").iterdir()) == []


def test_check_only_reports(machine):
    result = machine.run("--check", RAYHPC_INSTALL_ENGINE="1")
    assert result.returncode == 2
    assert len(error_lines(result)) == 1
    assert error_lines(result)[0].startswith("error: Docker is not ready (see above)")
    assert machine.actions() == []


def test_install_engine_0_never_asks(machine):
    result = machine.run(RAYHPC_INSTALL_ENGINE="0")
    assert result.returncode == 2
    assert len(error_lines(result)) == 1 and "RAYHPC_INSTALL_ENGINE=0" in result.stderr
    assert machine.actions() == []


def run_on_terminal(machine: Machine, answer: str) -> tuple[int, str]:
    """bin/engine with stdin and stderr on a pseudo-terminal, typing ``answer``."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(ENGINE)], env=machine.env(), stdin=slave, stderr=slave,
                            stdout=subprocess.PIPE, text=True)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the other side closed
                break
            seen += chunk
            if b"[y/N]" in chunk:
                os.write(master, answer.encode() + b"\n")
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(master)
    return proc.returncode, seen.decode(errors="replace")


def test_on_a_terminal_it_asks_and_yes_installs(machine):
    code, output = run_on_terminal(machine, "y")
    assert code == 0, output
    assert "rayhpc: install and start these now? [y/N]" in output
    assert machine.actions() == [*APT_BOOKWORM, "dockerd "]


def test_on_a_terminal_no_installs_nothing(machine):
    code, output = run_on_terminal(machine, "n")
    assert code == 2, output
    assert 'error: nothing installed (answered "n")' in output
    assert machine.actions() == []


# --- cannot -------------------------------------------------------------------------------

def test_consent_without_root_or_sudo_exits_2(machine):
    machine.as_user()
    result = machine.run("--install")
    assert result.returncode == 2
    assert error_lines(result) == [
        "error: installing Docker needs root: not root and no sudo; run this as root or with "
        "sudo rights, or run the commands above yourself; nothing was installed"]
    assert machine.actions() == []


def test_consent_with_a_sudo_that_wants_a_password_and_no_terminal_exits_2(machine):
    machine.as_user()
    machine.have("sudo")
    machine.flag("sudo_password")
    result = machine.run("--install")
    assert result.returncode == 2
    assert error_lines(result) == [
        "error: installing Docker needs root: not root, and sudo asks for a password (`sudo -n "
        "true` failed); run this as root or with sudo rights, or run the commands above "
        "yourself; nothing was installed"]
    assert machine.actions() == ["sudo -n true"]


@pytest.mark.parametrize("os_release, name, page", [
    (FEDORA, "Fedora Linux 40", "https://docs.docker.com/engine/install/fedora/"),
    (FOCAL, "Ubuntu 20.04.6 LTS", "https://docs.docker.com/engine/install/ubuntu/"),
])
def test_unsupported_system_prints_its_commands_and_exits_2(machine, os_release, name, page):
    machine.os_release.write_text(os_release)
    result = machine.run("--install")
    assert result.returncode == 2
    assert (f"rayhpc: on {name}, install Docker Engine with the compose plugin ({page}), e.g. "
            "with Docker's install script:") in result.stderr
    assert plan(result) == ["curl -fsSL https://get.docker.com -o get-docker.sh",
                            "sudo sh get-docker.sh", "sudo systemctl enable --now docker",
                            "sudo usermod -aG docker $USER   # then log in again"]
    assert error_lines(result) == [
        f"error: bin/engine installs Docker only on Debian 12+ and Ubuntu 22.04+, not on {name}: "
        "run the commands above yourself, then rerun"]
    assert machine.actions() == []


def test_macos_points_at_docker_desktop(machine):
    machine.os_release.unlink()
    machine.have("uname")
    result = machine.run("--install")
    assert result.returncode == 2
    assert plan(result) == ["brew install --cask docker && open -a Docker"]
    assert "https://docs.docker.com/desktop/setup/install/mac-install/" in result.stderr
    assert len(error_lines(result)) == 1
    assert machine.actions() == []


# --- failing ------------------------------------------------------------------------------

def test_engine_that_never_answers_is_stopped_and_its_log_shown(machine):
    machine.flag("dockerd_hangs")
    started = time.monotonic()
    result = machine.run("--install", RAYHPC_ENGINE_TIMEOUT="2")
    assert result.returncode == 1
    assert time.monotonic() - started < 15
    pid = machine.dockerd_pid()
    assert error_lines(result) == [
        f"error: the Docker engine did not answer within 2 s; its log ({machine.log}) ends as "
        f"above; stopped it (pid {pid})"]
    assert "failed to start containerd: timeout" in result.stderr
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pid)


def test_dockerd_that_exits_at_once_fails_without_waiting_out_the_timeout(machine):
    machine.flag("dockerd_dies")
    started = time.monotonic()
    result = machine.run("--install", RAYHPC_ENGINE_TIMEOUT="30")
    assert result.returncode == 1
    assert time.monotonic() - started < 15
    assert "failed to start daemon: exiting at once" in result.stderr
    assert error_lines(result) == [
        f"error: dockerd exited without answering; its log ({machine.log}) ends as above"]


def test_failed_apt_step_names_what_was_done_before_it(machine):
    machine.flag("apt_fails")
    result = machine.run("--install")
    assert result.returncode == 1
    assert error_lines(result) == [
        "error: step apt_install failed (exit 100); done before it: trixie_source, trixie_pin, "
        "apt_update; nothing after it ran; fix the cause and rerun bin/engine"]
    assert "dockerd " not in machine.actions()


def test_bad_arguments_and_timeout(machine):
    result = machine.run("--frobnicate")
    assert (result.returncode, error_lines(result)) == (2, [
        "error: bin/engine: unknown argument --frobnicate (see bin/engine --help)"])
    result = machine.run("--install", RAYHPC_ENGINE_TIMEOUT="soon")
    assert (result.returncode, error_lines(result)) == (2, [
        "error: RAYHPC_ENGINE_TIMEOUT=soon: give whole seconds"])
    assert machine.actions() == []


def test_help_documents_the_consent_flags():
    result = subprocess.run([str(ENGINE), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for word in ("--install", "--check", "--base-tools", "--quiet", "RAYHPC_INSTALL_ENGINE",
                 "RAYHPC_ENGINE_TIMEOUT"):
        assert word in result.stdout


# --- the callers --------------------------------------------------------------------------

def test_quickstart_stops_before_installing_the_project_without_an_engine(machine):
    result = machine.run(script=PROJECT_ROOT / "quickstart.sh")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith("error: no Docker engine with compose here")
    assert "creating" not in result.stderr and result.stdout == ""
    assert machine.actions() == []


def test_ci_installs_through_bin_engine_only():
    ci = (PROJECT_ROOT / ".ci" / "run").read_text()
    assert "bin/engine --install" in ci
    assert "apt-get" not in ci
