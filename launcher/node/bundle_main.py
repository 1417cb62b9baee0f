"""The start of node_agent.pyz (it is the archive's __main__.py): every module of the node
program is read from the archive in one go and imported from memory.

The archive lies in the run directory on the shared file system, and every node runs it: Python's
own zip import would open it again for each module, and look there for every standard library
module too. Here it is opened once, then taken off sys.path. Tracebacks keep the modules' real
names and lines (`.../node_agent.pyz/launcher/node/head.py`, line N).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import zipfile


class BundleImporter(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    """Imports the modules of a zip archive from their sources, read once."""

    def __init__(self, archive: str):
        self.archive = archive
        with zipfile.ZipFile(archive) as bundle:
            self.sources = {name: bundle.read(name) for name in bundle.namelist()
                            if name.endswith(".py")}

    def _entry(self, fullname: str) -> str | None:
        base = fullname.replace(".", "/")
        return next((name for name in (f"{base}/__init__.py", f"{base}.py")
                     if name in self.sources), None)

    def find_spec(self, fullname, path=None, target=None):
        entry = self._entry(fullname)
        if entry is None:
            return None
        spec = importlib.util.spec_from_loader(fullname, self,
                                               origin=f"{self.archive}/{entry}",
                                               is_package=entry.endswith("/__init__.py"))
        spec.has_location = True  # __file__ is the origin
        return spec

    def is_package(self, fullname: str) -> bool:
        return (self._entry(fullname) or "").endswith("/__init__.py")

    def get_source(self, fullname: str) -> str:
        return self.sources[self._entry(fullname)].decode("utf-8")

    def get_code(self, fullname: str):
        origin = f"{self.archive}/{self._entry(fullname)}"
        return compile(self.get_source(fullname), origin, "exec", dont_inherit=True)


def run() -> int:
    archive = os.path.dirname(os.path.abspath(__file__))
    # Nothing else is imported from the archive's place: Python's import system would list and
    # stat the run directory (or read the archive) for every module, on every node.
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or ".") != archive]
    sys.meta_path.insert(0, BundleImporter(archive))
    from launcher.node.main import main

    return main()


if __name__ == "__main__":
    sys.exit(run())
