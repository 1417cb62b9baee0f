"""The start of node_agent.pyz: the archive's __main__.py is this file, after two lines written
by `rayhpc.launcher.backends.bundle`: the sources of every module of the node program (`SOURCES`),
which are imported from memory, and the run's spec (`SPEC`, spec.json's text).

The archive lies in the run directory on the shared file system, and every node runs it.
Python's own zip import opens it again for each module it loads from it (and looks there for
every standard library module): here nothing more is read from it once Python has read this
file, and it is taken off sys.path. Tracebacks name the modules as the files they are in the
archive, with their lines (`.../node_agent.pyz/rayhpc/launcher/node/head.py`, line N). The archive
holds those files too, for reading (`unzip -p node_agent.pyz rayhpc/launcher/node/head.py`).

No `from __future__` import: SOURCES comes first in __main__.py. Python 3.9 syntax only.
"""

import importlib.abc
import importlib.util
import os
import sys
import traceback
from typing import Optional


class BundleImporter(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    """Imports modules from their sources, given by their path in the archive."""

    def __init__(self, archive: str, sources: dict[str, bytes]):
        self.archive = archive
        self.sources = sources

    def _entry(self, fullname: str) -> Optional[str]:
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


def run(sources: dict[str, bytes], spec_text: str) -> int:
    archive = os.path.dirname(os.path.abspath(__file__))
    # Nothing else is imported from the archive's place: Python's import system would read the
    # archive (or list and stat the run directory) for modules, on every node.
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or ".") != archive]
    sys.meta_path.insert(0, BundleImporter(archive, sources))
    # Python's own printing of an uncaught traceback reads source lines from files only; this
    # one asks the importer, so the lines inside the archive show too.
    sys.excepthook = traceback.print_exception
    from rayhpc.launcher.node.main import main  # served by the importer above

    return main(spec_text=spec_text)


if __name__ == "__main__":
    sys.exit(run(SOURCES, SPEC))  # noqa: F821 (the lines above this file in __main__.py)
