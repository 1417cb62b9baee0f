"""node_agent.pyz: the node program (`rayhpc.launcher.node`) and the contract (and timeline) it
shares with the launcher, as one file that Python runs (`python node_agent.pyz --run-dir DIR`).

Made at launch from this checkout's sources (fixed file times and order: the same sources and
spec give the same bytes), so what runs on the nodes is the code the launcher was written
against. Its __main__.py is `node/bundle_main.py` after two lines: every module's source, and
the run's spec (spec.json's text), so that a node reads nothing of the archive after Python's
own start and no spec.json. At 1024 nodes every open counts: Python's start of an archive
opens it three times where a script is opened twice, and the spec read from the archive makes
up for that one. The modules are in the archive as files too, for reading.
"""

from __future__ import annotations

import io
import zipfile

from rayhpc.launcher import PACKAGE_DIR

NODE_DIR = PACKAGE_DIR / "node"
ENTRY = NODE_DIR / "bundle_main.py"  # the archive's __main__.py, after the SOURCES line
# Inside the archive the packages hold only what the node program imports.
PACKAGE_INIT = b'"""rayhpc: the contract and the node program (node_agent.pyz)."""\n'
# What both sides import: the contract, and the timeline the head draws at the end of a run.
SHARED = ("contract", "timeline.py")
FILE_TIME = (1980, 1, 1, 0, 0, 0)  # zip's earliest: the same bytes whenever it is made


def node_modules() -> dict[str, bytes]:
    """The node program's modules by their path in the archive: rayhpc/__init__.py,
    rayhpc/launcher/__init__.py, the modules it shares with the launcher (SHARED: the contract
    package and the timeline), and
    rayhpc/launcher/node/*.py (its start aside)."""
    modules = {"rayhpc/__init__.py": PACKAGE_INIT,
               "rayhpc/launcher/__init__.py": PACKAGE_INIT}
    for name in SHARED:  # a module, or a package's modules
        shared = PACKAGE_DIR / name
        for path in sorted(shared.glob("*.py")) if shared.is_dir() else [shared]:
            modules[path.relative_to(PACKAGE_DIR.parent.parent).as_posix()] = path.read_bytes()
    for path in sorted(NODE_DIR.glob("*.py")):
        if path != ENTRY:
            modules[f"rayhpc/launcher/node/{path.name}"] = path.read_bytes()
    return modules


def entry_point(modules: dict[str, bytes], spec_text: str) -> bytes:
    """__main__.py: the SOURCES and SPEC lines, then the start."""
    return f"SOURCES = {modules!r}\nSPEC = {spec_text!r}\n".encode() + ENTRY.read_bytes()


def node_program(spec_text: str = "") -> bytes:
    """The bytes of node_agent.pyz for a run whose spec.json holds ``spec_text`` ("": none
    inside, the nodes read spec.json)."""
    modules = node_modules()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in {"__main__.py": entry_point(modules, spec_text), **modules}.items():
            info = zipfile.ZipInfo(name, FILE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()
