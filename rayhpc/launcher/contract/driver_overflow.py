"""The marker the head's agent says when driver.log takes no more of the driver's output, and
how the launcher finds it. Standard library only."""

from __future__ import annotations

import re

# The driver's output, stored once: in driver.log. When driver.log can take no more (a full run
# directory, a quota), the head's agent says OVERFLOW_MARKER once on its own output (the
# container's log on the local site, the job's output on batch sites) with the bytes driver.log
# holds, then writes the rest of the driver's output there, each line after OVERFLOW_PREFIX,
# and says OVERFLOW_END when the driver's output ended. The local launcher follows the head's
# container output from the marker on, so the console misses nothing.

OVERFLOW_PREFIX = b"driver| "
_OVERFLOW_MARKER = re.compile(r"driver\.log takes no more after (\d+) bytes \((.*?)\); ")
OVERFLOW_END = "the driver's output ended"


def overflow_marker(stored: int, why: str) -> str:
    """The head's line when driver.log stopped taking the driver's output at ``stored`` bytes."""
    return (f"driver.log takes no more after {stored} bytes ({why}); the driver's output goes "
            f"on here, each line after '{OVERFLOW_PREFIX.decode()}'")


def parse_overflow_marker(line: str) -> tuple[int, str] | None:
    """(bytes driver.log holds, why) from a head's line, if it is the marker."""
    match = _OVERFLOW_MARKER.search(line)
    return (int(match.group(1)), match.group(2)) if match else None
