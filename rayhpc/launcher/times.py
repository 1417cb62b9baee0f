"""Time in the launcher's words: the one walltime form users give (flag, RAYHPC_WALLTIME, site
file), parsed once into seconds, and how walltimes and durations are shown."""

from __future__ import annotations

import re

# The one form of a walltime a user gives (flag, RAYHPC_WALLTIME, site file), with Slurm's
# meaning (sbatch(1) --time: "minutes", "minutes:seconds", "hours:minutes:seconds",
# "days-hours", "days-hours:minutes" and "days-hours:minutes:seconds"). Every scheduler renders
# the seconds in its own syntax. Note `30:00` is 30 minutes (not 30 hours, as LSF's -W and
# OLCF's "hours:minutes" would read it) and `2-12` is 2 days and 12 hours.
WALLTIME_FORMS = "MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"
WALLTIME_RE = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")


def parse_walltime(text: object) -> int:
    """Seconds from a walltime in Slurm's forms and meaning (see WALLTIME_FORMS).

    ValueError (its text says "must") for a malformed one, and for an ambiguous one: a field
    after the first that is out of its range (`1:75`, `1:90:00`, `1-30`), which other
    conventions would read differently."""
    value = str(text).strip()
    match = WALLTIME_RE.fullmatch(value)
    if not match:
        raise ValueError(f"must be a walltime in one of Slurm's forms: {WALLTIME_FORMS} "
                         "(30:00 is 30 minutes, 2-12 is 2 days 12 hours)")
    days, first, second, third = (None if g is None else int(g) for g in match.groups())
    if days is None:
        if second is None:  # MM
            units = [(first, 60, None, "minutes")]
        elif third is None:  # MM:SS
            units = [(first, 60, None, "minutes"), (second, 1, 60, "seconds")]
        else:  # HH:MM:SS
            units = [(first, 3600, None, "hours"), (second, 60, 60, "minutes"),
                     (third, 1, 60, "seconds")]
    else:  # D-HH[:MM[:SS]]
        units = [(days, 86400, None, "days"), (first, 3600, 24, "hours")]
        if second is not None:
            units.append((second, 60, 60, "minutes"))
        if third is not None:
            units.append((third, 1, 60, "seconds"))
    for number, _, limit, name in units:
        if limit is not None and number >= limit:
            raise ValueError(f"ambiguous: its {name} ({number}) must be below {limit} in "
                             f"Slurm's forms {WALLTIME_FORMS} (30:00 is 30 minutes)")
    seconds = sum(number * scale for number, scale, _, _ in units)
    if seconds <= 0:
        raise ValueError("must be more than zero")
    return seconds


def hms(seconds: int, hour_digits: int = 2) -> str:
    """HH:MM:SS, hours past 24 included (PBS's walltime=, Slurm's --time= below a day);
    ``hour_digits``: the hours' least width (1: H:MM:SS)."""
    return f"{seconds // 3600:0{hour_digits}d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def format_walltime(seconds: int) -> str:
    """A walltime as users read it in messages (HH:MM:SS, D-HH:MM:SS past a day)."""
    days, rest = divmod(seconds, 86400)
    return f"{days}-{hms(rest)}" if days else hms(rest)


DURATION_MAX_S = 100 * 366 * 86400  # longer is no clock's difference: a record's bad value


def duration(seconds: float) -> str:
    """How long something ran or has left, as H:MM:SS (never below zero; "?" for a value
    no clock gives: NaN, infinite, over a century)."""
    if not -DURATION_MAX_S <= seconds <= DURATION_MAX_S:
        return "?"
    return hms(max(0, int(seconds)), hour_digits=1)
