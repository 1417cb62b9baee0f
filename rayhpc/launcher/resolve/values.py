"""Values as users write them (flags, RAYHPC_* variables, YAML), checked the one way."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from rayhpc.common.user_error import UserError


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


# Values that reach a job script are written into its lines (directives, exports, paths): a
# line break there would start a line of its own, i.e. run a command or drop the directives
# after it. Other control characters (tab, CR, escapes) have no place in them either.
ONE_LINE_RULE = ("must be one line without control characters (a line break would start a "
                 "line of its own in the job script)")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ENV_NAME_RULE = ("not a variable name: letters, digits and _, not starting with a digit (e.g. "
                 "MY_SETTING)")


def has_control(text: str) -> bool:
    return any(ord(char) < 0x20 or ord(char) == 0x7f for char in text)


def one_line(value: Any) -> str:
    """``value`` as text; ValueError (with "must") when it holds a control character."""
    text = str(value)
    if has_control(text):
        raise ValueError(ONE_LINE_RULE)
    return text


def check_one_line(value: Any, where: str) -> None:
    """Every text in ``value`` (nested lists and mappings, their keys too) is one line;
    UserError naming ``where`` and the keys on the way to the first that is not."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            check_one_line(key, where)
            check_one_line(item, f"{where}: {key}")
    elif isinstance(value, (list, tuple)):
        for item in value:
            check_one_line(item, where)
    elif isinstance(value, str) and has_control(value):
        raise UserError(f"{where}: {value!r}: {ONE_LINE_RULE}")


def check_env_names(environment: Mapping[Any, Any], where: str) -> None:
    """The keys of an environment the job script exports are variable names: UserError else
    (`export A=1; touch x; B=...` would run a command)."""
    for key in environment:
        if not isinstance(key, str) or not ENV_NAME_RE.fullmatch(key):
            raise UserError(f"{where}: {key!r}: {ENV_NAME_RULE}")
