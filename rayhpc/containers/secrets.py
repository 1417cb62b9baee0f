"""Build-only secrets (a CA bundle, pip index settings) that never land in an image layer.

docker-py drives the classic builder, which has no BuildKit ``--mount=type=secret``. Instead the
host serves the secrets on an abstract Unix socket for the length of one build; the build runs with
host networking, so a RUN step can read them, use them and delete them before its layer is
committed. Abstract socket names live in the network namespace, not on a filesystem, so nothing is
left behind. The socket name is derived from the secrets' content: it is stable from build to build,
so it does not invalidate the layer cache (as BuildKit secrets do not).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shlex
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rayhpc.common.user_error import UserError

SECRETS_DIR = "/tmp/rayhpc-secrets"
SECRETS_ARG = "RAYHPC_SECRETS"
CA_ENV_VARS = ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
PIP_ENV_VARS = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST")

# Shell text for a RUN step: fetch the secrets script over the socket (if the build has one) and
# evaluate it. Needs the image's python3 (a base without one gets no secrets: apt over plain http
# still works); prints nothing when the build has no secrets.
FETCH_SECRETS = (
    "if command -v python3 >/dev/null; then eval \"$(python3 -c 'import os,socket;"
    "n=os.environ.get(\"" + SECRETS_ARG + "\");"
    "s=n and socket.socket(socket.AF_UNIX);n and s.connect(\"\\0\"+n);"
    "print(n and s.makefile().read() or \"\")')\"; fi"
)
FORGET_SECRETS = f"rm -rf {SECRETS_DIR}"


@dataclass(frozen=True)
class BuildSecrets:
    ca_bundle: str = ""
    pip_env: dict[str, str] = field(default_factory=dict)
    ca_source: str = ""

    @classmethod
    def resolve(cls, ca_bundle: str | None = None, pip_index_url: str | None = None,
                environ: Mapping[str, str] = os.environ) -> BuildSecrets:
        """CA bundle from --ca-bundle, else PIP_CERT / REQUESTS_CA_BUNDLE / SSL_CERT_FILE;
        pip index settings from --pip-index-url and PIP_INDEX_URL / PIP_EXTRA_INDEX_URL /
        PIP_TRUSTED_HOST."""
        source, path = "--ca-bundle", ca_bundle
        if not path:
            for var in CA_ENV_VARS:
                if environ.get(var):
                    source, path = f"${var}", environ[var]
                    break
        text = ""
        if path:
            try:
                text = Path(path).read_text()
            except OSError as exc:
                raise UserError(f"CA bundle {path} (from {source}) cannot be read: "
                                f"{exc.strerror}; give an existing PEM file with --ca-bundle "
                                "or unset the variable") from None
            if "-----BEGIN CERTIFICATE-----" not in text:
                raise UserError(f"CA bundle {path} (from {source}) holds no PEM certificate; "
                                "give a PEM bundle with --ca-bundle")
        pip_env = {var: environ[var] for var in PIP_ENV_VARS if environ.get(var)}
        if pip_index_url:
            pip_env["PIP_INDEX_URL"] = pip_index_url
        return cls(ca_bundle=text, pip_env=pip_env, ca_source=f"{path} ({source})" if path else "")

    def __bool__(self) -> bool:
        return bool(self.ca_bundle or self.pip_env)

    def script(self) -> str:
        """Shell text a RUN step evaluates: writes the CA under SECRETS_DIR and exports env."""
        lines = [f"mkdir -p {SECRETS_DIR} && chmod 700 {SECRETS_DIR}"]
        if self.ca_bundle:
            ca = f"{SECRETS_DIR}/ca.pem"
            marker = "RAYHPC_SECRET_EOF"
            lines += [f"cat > {ca} <<'{marker}'", self.ca_bundle.rstrip("\n"), marker]
            lines.append(f"printf 'Acquire::https::CAInfo \"{ca}\";\\n' > {SECRETS_DIR}/apt.conf")
            lines.append(f"export PIP_CERT={ca} REQUESTS_CA_BUNDLE={ca} SSL_CERT_FILE={ca} "
                         f"APT_CONFIG={SECRETS_DIR}/apt.conf")
        for var, value in sorted(self.pip_env.items()):
            lines.append(f"export {var}={shlex.quote(value)}")
        return "\n".join(lines) + "\n"

    def channel_name(self) -> str:
        digest = hashlib.sha256(self.script().encode()).hexdigest()[:16]
        return f"rayhpc-secrets-{os.getuid()}-{digest}"


@contextlib.contextmanager
def serve(secrets: BuildSecrets, wait_s: float = 1800) -> Iterator[str]:
    """Serve the secrets on an abstract socket while the block runs; yield its name."""
    name = secrets.channel_name()
    payload = secrets.script().encode()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        try:
            server.bind("\0" + name)
            break
        except OSError as exc:
            # Another build of ours with the very same secrets holds the name: wait our turn.
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                server.close()
                raise
            if not told:
                print("waiting for another build that is using the same build secrets ...",
                      file=sys.stderr)
                told = True
            time.sleep(0.5)
    server.listen(16)
    stop = threading.Event()

    def answer() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (socket.timeout, OSError):
                continue
            with conn, contextlib.suppress(OSError):
                conn.sendall(payload)

    thread = threading.Thread(target=answer, name="rayhpc-build-secrets", daemon=True)
    thread.start()
    try:
        yield name
    finally:
        stop.set()
        thread.join(timeout=2)
        server.close()
