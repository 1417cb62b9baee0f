"""Strict reading of the run directory's JSON: whether a value read from a file is of the type
its field's annotation names, so that a foreign or hostile file is refused by the field's name
instead of failing deep inside. Standard library only."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

# What each annotation of a record's fields takes in JSON (Path: its text; a nested record: an
# object, checked by its own reader).
JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "str": str, "int": int, "float": (int, float), "bool": bool, "Path": str, "Any": object,
    "NodeGroup": dict, "NodeRecord": dict}


# A number of a record fits in 64 bits: a longer integer is no count or time (and one past a
# float's range would fail the arithmetic done with it).
NUMBER_MAX = 2 ** 63


class RecordError(ValueError):
    """A run-directory file that is not this rayhpc's record (a field of the wrong type, one
    missing, not a JSON object): the message names the file and the field."""


def split_options(annotation: str) -> list[str]:
    """The options of ``a | b | c``, at the outer level only (``dict[str, int | None]`` is one)."""
    options, depth, start = [], 0, 0
    for index, char in enumerate(annotation):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "|" and depth == 0:
            options.append(annotation[start:index].strip())
            start = index + 1
    return [*options, annotation[start:].strip()]


def fits_json_type(annotation: str, value: Any) -> bool:
    """Whether a value read from JSON is of the type a field's annotation names."""
    for option in split_options(annotation):
        if option == "None":
            if value is None:
                return True
            continue
        outer, _, inner = option.partition("[")
        inner = inner[:-1]
        if outer == "dict":
            value_type = inner.split(",", 1)[1].strip()
            if isinstance(value, dict) and all(fits_json_type(value_type, item)
                                               for item in value.values()):
                return True
        elif outer in ("list", "tuple"):
            item_type = inner.split(",", 1)[0].strip()
            if isinstance(value, (list, tuple)) and all(fits_json_type(item_type, item)
                                               for item in value):
                return True
        elif isinstance(value, JSON_TYPES[outer]) and not (
                outer in ("int", "float") and (isinstance(value, bool)
                                               or not -NUMBER_MAX <= value <= NUMBER_MAX)):
            return True
    return False


def check_json_types(cls: type, values: Any, where: str = "spec.json") -> None:
    """RecordError (a ValueError) naming the first field of ``values`` (read from the file
    ``where``) whose value is not of its field's type: a hand-edited or foreign file."""
    if not isinstance(values, dict):
        raise RecordError(f"{where}: a {cls.__name__} is not a JSON object")
    for spec_field in fields(cls):
        value = values.get(spec_field.name)
        if spec_field.name in values and not fits_json_type(str(spec_field.type), value):
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            what = (f"{value!r} is out of range (a finite number within ±2**63)"
                    if number and not -NUMBER_MAX <= value <= NUMBER_MAX
                    else f"{type(value).__name__} is not {spec_field.type}")
            raise RecordError(f"{where}: {spec_field.name}: {what}")
