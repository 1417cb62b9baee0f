"""rayhpc in a checkout: `invoke --list` (the installed command, `rayhpc`, has the same tasks).

The tasks are defined once, in rayhpc/cli.py; this file is what invoke looks for."""

from rayhpc.cli import namespace

__all__ = ["namespace"]
