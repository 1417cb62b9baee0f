"""node_agent.pyz: the node program (`launcher.node`) and the contract it shares with the
launcher, as one file that Python runs (`python node_agent.pyz --run-dir DIR`).

Made at launch from this checkout's sources, byte for byte the same each time (fixed file times
and order), so every node of a run reads one file of the shared file system, and what runs
there is the code the launcher was written against.
"""

from __future__ import annotations

import functools
import io
import zipfile

from launcher import PACKAGE_DIR

NODE_DIR = PACKAGE_DIR / "node"
ENTRY = NODE_DIR / "bundle_main.py"  # the archive's __main__.py
# Inside the archive the `launcher` package holds only what the node program imports.
PACKAGE_INIT = b'"""rayhpc: the contract and the node program (node_agent.pyz)."""\n'
FILE_TIME = (1980, 1, 1, 0, 0, 0)  # zip's earliest: the same bytes whenever it is made


def bundle_members() -> dict[str, bytes]:
    """The archive's files by name: __main__.py, launcher/contract.py, launcher/node/*.py."""
    members = {"__main__.py": ENTRY.read_bytes(), "launcher/__init__.py": PACKAGE_INIT,
               "launcher/contract.py": (PACKAGE_DIR / "contract.py").read_bytes()}
    for path in sorted(NODE_DIR.glob("*.py")):
        if path != ENTRY:
            members[f"launcher/node/{path.name}"] = path.read_bytes()
    return members


@functools.lru_cache(maxsize=1)
def node_program() -> bytes:
    """The bytes of node_agent.pyz."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in bundle_members().items():
            info = zipfile.ZipInfo(name, FILE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()
