"""Values as users write them (flags, RAYHPC_* variables, YAML), checked the one way."""

from __future__ import annotations

from typing import Any


def whole_number(value: Any, least: int = 0) -> int:
    """A whole number of at least ``least``. ValueError: "must be <least> or more" below it;
    a text without "must" for anything that is not a whole number (true, 2.5, three)."""
    if isinstance(value, bool):
        raise ValueError("not a whole number")
    number = int(str(value).strip())
    if number < least:
        raise ValueError(f"must be {least} or more")
    return number


def positive_int(value: Any) -> int:
    return whole_number(value, 1)


def non_negative_int(value: Any) -> int:
    return whole_number(value, 0)
