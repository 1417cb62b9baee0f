"""<run>/timeline.svg: where a launch's time went, node by node (waiting for the head, `ray
start`, joined, the driver or the cluster up, stopping), the head's milestones as vertical
lines, the nodes that came late named.

Standard library only: the head's agent writes it at the end of every run (this module travels
in node_agent.pyz beside the contract), `rayhpc report` rewrites it from the run's records.
`render_timeline` is pure (records in, SVG text out); `read_timeline`/`write_timeline` do the
file work. Above MAX_ROWS nodes, rows are bins of nodes in the order they joined (each bar the
bin's median times, a whisker from its first to its last join), and the stragglers keep rows
of their own.

The records come from the containers: every loop here is bounded by their number (nodes, bins,
milestones, at most MAX_TICKS ticks), never by the values in them, and a moment outside the
run's possible span (MAX_SPAN_S after the submission, MAX_SKEW_S before it) is left out and
named in the notes.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace
from html import escape
from pathlib import Path

from rayhpc.launcher.contract import (
    EndedAttempt,
    NodeRecord,
    RunPaths,
    TimingRecord,
    atomic_write,
    ended_attempts,
    list_names,
    read_node_records,
    read_record,
    read_spec,
)

MAX_ROWS = 40  # one row per node up to this many nodes; bins above
BINS = 32
MAX_STRAGGLERS = 8
# A straggler joined this much later than the median node (after the head was up): at least
# STRAGGLER_MIN_S, and STRAGGLER_SPREAD times the median's absolute deviation.
STRAGGLER_MIN_S = 1.0
STRAGGLER_SPREAD = 4.0
# A run's moments lie within this much after its submission (the longest walltime there is)
# and this much before it (the login node's clock against the head's): others are left out.
MAX_SPAN_S = 366 * 86400
MAX_SKEW_S = 86400
MAX_TICKS = 10  # along the time axis
MAX_LEFT_OUT_NAMED = 6

PHASES = (  # name, legend text, colour
    ("waiting", "waiting for the head", "#c9d3dd"),
    ("starting", "ray start", "#f2a541"),
    ("joined", "joined", "#7fb8e6"),
    ("up", "driver / up", "#3b8c4a"),
    ("stopping", "stopping", "#9b6fb5"),
)
COLOURS = {name: colour for name, _, colour in PHASES}
MILESTONES = (  # timing.json key, label
    ("t_submit", "submit"), ("t_head_up", "head up"), ("t_all_joined", "all joined"),
    ("t_driver_start", "driver"), ("t_driver_end", "driver end"),
    ("t_teardown_start", "stop"), ("t_teardown_done", "down"))

LABEL_W, PLOT_W, RIGHT_W = 170, 760, 110
ROW_H, BAR_H, AXIS_H = 18, 12, 34
CHAR_W, LEVEL_H = 5.2, 11  # a milestone label's width per character (9 px font), line height


@dataclass(frozen=True)
class NodeTimes:
    """One node's moments on the head's clock (None: it never got there)."""

    name: str
    connected: float | None  # its agent reached the head: waiting for the head's address
    starting: float | None  # `ray start` began
    joined: float | None
    end: float | None  # its agent stopped (or its connection closed)
    state: str  # its last state: stopped, failed, gone, lost-head, ...
    head: bool = False


class Span:
    """The moments a run can have (see MAX_SPAN_S); those outside it are named, once each."""

    def __init__(self, t_submit: float):
        self.first, self.last = t_submit - MAX_SKEW_S, t_submit + MAX_SPAN_S
        self.left_out: list[str] = []

    def keep(self, value: float | None, what: str) -> float | None:
        if value is None or self.first <= value <= self.last:
            return value
        self.left_out.append(what)
        return None

    def note(self) -> list[str]:
        if not self.left_out:
            return []
        named = ", ".join(self.left_out[:MAX_LEFT_OUT_NAMED])
        more = len(self.left_out) - MAX_LEFT_OUT_NAMED
        return [f"left out, not within {MAX_SPAN_S // 86400} days of the submission: {named}"
                + (f" and {more} more" if more > 0 else "")]


def node_times(records: dict[str, NodeRecord], span: Span | None = None) -> list[NodeTimes]:
    """Each node's moments from nodes.json's records (the head's clock: when the head heard
    of each state; the head's own: `ray start` to its GCS up); ``span``: the moments outside
    it are left out."""
    found = []
    for name, record in records.items():
        times = dict(record.times or {})  # none: a record a node wrote itself
        end_time = record.time
        if span is not None:
            times = {key: span.keep(value, f"{name}'s {key}") for key, value in times.items()}
            end_time = span.keep(end_time, f"{name}'s time")
        ends = [times.get(k) for k in ("stopped", "left", "failed", "lost-head", "gone",
                                       "disconnected") if times.get(k)]
        found.append(NodeTimes(name, times.get("connected"), times.get("starting"),
                               times.get("joined"), min(ends) if ends else end_time,
                               record.state, record.role == "head"))
    return found


def phases(node: NodeTimes, timing: TimingRecord) -> list[tuple[str, float, float]]:
    """(phase, start, end) of one node, in order."""
    driver_start = timing.t_driver_start
    stop = timing.t_teardown_start or timing.t_driver_end or node.end
    marks = [("waiting", node.connected), ("starting", node.starting), ("joined", node.joined)]
    if node.joined is not None and driver_start is not None:
        marks.append(("up", max(node.joined, driver_start)))
    if node.joined is not None and stop is not None:
        marks.append(("stopping", max(stop, node.joined)))
    marks = [(name, t) for name, t in marks if t is not None]
    found = []
    for (name, start), (_, end) in zip(marks, [*marks[1:], ("end", node.end)]):
        if end is None:
            end = start
        if end > start:
            found.append((name, start, end))
    return found


def stragglers(nodes: list[NodeTimes], head_up: float | None) -> list[tuple[NodeTimes, str]]:
    """The nodes that joined late (or never), the latest first, each with why."""
    joined = [n for n in nodes if n.joined is not None and not n.head]
    late: list[tuple[NodeTimes, str]] = []
    if joined and head_up is not None:
        waits = [max(0.0, n.joined - head_up) for n in joined]
        middle = statistics.median(waits)
        spread = statistics.median(abs(w - middle) for w in waits)
        limit = middle + max(STRAGGLER_MIN_S, STRAGGLER_SPREAD * spread)
        for node, wait in sorted(zip(joined, waits), key=lambda p: -p[1]):
            if wait > limit:
                late.append((node, f"joined {wait - middle:.1f} s after the median node"))
    never = [(n, f"never joined ({n.state or 'no record'})") for n in nodes if n.joined is None]
    return (never + late)[:MAX_STRAGGLERS]


@dataclass(frozen=True)
class Row:
    label: str
    bars: list[tuple[str, float, float]]
    whisker: tuple[float, float] | None = None  # a bin's first and last join
    title: str = ""


def bin_rows(nodes: list[NodeTimes], timing: TimingRecord) -> list[Row]:
    """Bins of nodes in the order they joined, each drawn at its median moments."""
    ordered = sorted(nodes, key=lambda n: (n.joined is None, n.joined or 0.0, n.name))
    size = math.ceil(len(ordered) / BINS)
    rows = []
    for first in range(0, len(ordered), size):
        group = ordered[first:first + size]
        middle = [statistics.median(v) if v else None for v in (
            [getattr(n, key) for n in group if getattr(n, key) is not None]
            for key in ("connected", "starting", "joined", "end"))]
        typical = NodeTimes("", *middle, state="")
        joins = [n.joined for n in group if n.joined is not None]
        label = f"#{first + 1}-{first + len(group)} ({len(group)})"
        rows.append(Row(label, phases(typical, timing),
                        (min(joins), max(joins)) if joins else None,
                        f"nodes {first + 1} to {first + len(group)} by join time: "
                        + ", ".join(n.name for n in group[:6])
                        + (", ..." if len(group) > 6 else "")))
    return rows


def label_levels(labels: list[tuple[float, str]]) -> list[int]:
    """A line of text for each milestone label (0: nearest the plot) where it overlaps none
    on its left."""
    ends: list[float] = []  # per level: where its last label ends
    levels = []
    for x, text in labels:
        level = next((i for i, end in enumerate(ends) if x > end + 4), len(ends))
        if level == len(ends):
            ends.append(0.0)
        ends[level] = x + 2 + CHAR_W * len(text)
        levels.append(level)
    return levels


def seconds_text(value: float) -> str:
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def tick_step(span: float) -> float:
    """The time between two ticks: at most MAX_TICKS of them along ``span``."""
    for step in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400):
        if span / step <= MAX_TICKS:
            return step
    return 86400.0 * math.ceil(span / MAX_TICKS / 86400)


def attempt_notes(attempts: list[EndedAttempt], restarts: int) -> list[str]:
    """One line per attempt before this one (`--restarts`), with how long it ran and why it
    ended; [] for a run in its first attempt."""
    return [f"attempt {a.number} of {restarts + 1}: "
            + (f"{seconds_text(a.ended - a.started)}, " if a.started and a.ended else "")
            + f"ended: {a.why}" for a in attempts]


def render_timeline(run_id: str, timing: TimingRecord, records: dict[str, NodeRecord],
                    attempts: list[str] | None = None) -> str:
    """The SVG text of a run's timeline (timing.json's content, nodes.json's records); below
    it, ``attempts``: the attempts before this one (`attempt_notes`)."""
    bounds = Span(timing.t_submit)
    timing = replace(timing, **{key: bounds.keep(timing.moment(key), key)
                                for key, _ in MILESTONES if key != "t_submit"})
    nodes = node_times(records, bounds)
    head_up = timing.t_head_up
    late = stragglers(nodes, head_up)
    late_names = {n.name for n, _ in late}
    if len(nodes) <= MAX_ROWS:
        rows = [Row(n.name, phases(n, timing), title=n.state) for n in nodes]
    else:
        rows = [Row(n.name, phases(n, timing), title="the head") for n in nodes if n.head]
        rows += bin_rows([n for n in nodes if not n.head], timing)
        rows += [Row(n.name, phases(n, timing), title=why) for n, why in late]
    moments = [t for row in rows for _, a, b in row.bars for t in (a, b)]
    reached = [(key, label, timing.moment(key)) for key, label in MILESTONES if timing.moment(key)]
    moments += [t for _, _, t in reached]
    start = timing.t_submit or min(moments, default=0.0)
    span = max(max(moments, default=start) - start, 1.0)

    def x(t: float) -> float:
        return round(LABEL_W + (t - start) / span * PLOT_W, 1)

    milestones = [(x(t), f"{label} {seconds_text(t - start)}") for _, label, t in reached]
    levels = label_levels(milestones)
    top = 66 + LEVEL_H * (max(levels, default=0) + 1)
    bottom = top + len(rows) * ROW_H
    notes = [f"{n.name}: {why}" for n, why in late] or ["none"]
    notes += bounds.note()
    attempts = attempts or []
    if attempts:
        notes += ["", f"this run started {len(attempts) + 1} times; the picture is of the last "
                  "start; before it:", *attempts]
    height = bottom + AXIS_H + 16 * (len(notes) + 1)
    width = LABEL_W + PLOT_W + RIGHT_W
    joined = timing.nodes_joined
    expected = timing.nodes_expected or len(nodes)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="8" y="18" font-size="14" font-weight="bold">run {escape(run_id)}: '
           f'{joined}/{expected} nodes joined'
           + (f", bring-up {seconds_text(timing.t_all_joined - start)}"
              if timing.t_all_joined else "") + "</text>"]
    if len(nodes) > MAX_ROWS:
        out.append(f'<text x="8" y="34">the head, then the other {len(nodes) - 1} nodes in '
                   "rows by join time (#first-last (count)), each at its median; the whisker: "
                   "first to last join; stragglers at the bottom</text>")
    legend_x = 8
    for _, text, colour in PHASES:
        out.append(f'<rect x="{legend_x}" y="44" width="12" height="10" fill="{colour}"/>'
                   f'<text x="{legend_x + 16}" y="53">{escape(text)}</text>')
        legend_x += 24 + 6 * len(text)
    step = tick_step(span)
    # one unit along the axis
    unit, per = next((u, p) for u, p in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))
                     if step >= p or p == 1)
    for i in range(int(span // step) + 1):  # at most MAX_TICKS + 1: see tick_step
        tx = x(start + i * step)
        out.append(f'<line x1="{tx}" y1="{top}" x2="{tx}" y2="{bottom}" stroke="#eeeeee"/>'
                   f'<text x="{tx}" y="{bottom + 14}" text-anchor="middle">'
                   f"{i * step / per:g} {unit}</text>")
    for index, row in enumerate(rows):
        y = top + index * ROW_H
        colour = "#b3261e" if row.label in late_names else "black"
        out.append(f'<text x="{LABEL_W - 6}" y="{y + BAR_H - 1}" text-anchor="end" '
                   f'fill="{colour}"><title>{escape(row.title)}</title>'
                   f"{escape(row.label)}</text>")
        for phase, a, b in row.bars:
            out.append(f'<rect x="{x(a)}" y="{y}" width="{max(round(x(b) - x(a), 1), 0.5)}" '
                       f'height="{BAR_H}" fill="{COLOURS[phase]}"><title>{phase} '
                       f"{seconds_text(a - start)} to {seconds_text(b - start)}</title></rect>")
        if row.whisker:
            wy = y + BAR_H / 2
            out.append(f'<line x1="{x(row.whisker[0])}" y1="{wy}" x2="{x(row.whisker[1])}" '
                       f'y2="{wy}" stroke="black"/>')
    for (mx, label), level in zip(milestones, levels):
        out.append(f'<line x1="{mx}" y1="{top - 4 - LEVEL_H * level}" x2="{mx}" y2="{bottom}" '
                   f'stroke="#444444" stroke-dasharray="3,2"/><text x="{mx + 2}" '
                   f'y="{top - 6 - LEVEL_H * level}" font-size="9">{escape(label)}</text>')
    out.append(f'<text x="8" y="{bottom + AXIS_H}" font-weight="bold">stragglers</text>')
    for index, note in enumerate(notes):
        out.append(f'<text x="8" y="{bottom + AXIS_H + 16 * (index + 1)}">'
                   f"{escape(note)}</text>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def read_timeline(paths: RunPaths) -> tuple[TimingRecord, dict[str, NodeRecord]]:
    """timing.json and every node's record (nodes.json, then records nodes wrote themselves);
    RecordError when one is not this rayhpc's record, FileNotFoundError without timing.json."""
    timing = read_record(paths.timing, TimingRecord)
    if timing is None:
        raise FileNotFoundError(f"{paths.timing}: no timing record")
    records = read_node_records(paths.nodes_file)
    for name in list_names(paths.nodes, paths.dir):
        if name.endswith(".json"):
            node = read_record(paths.nodes / name, NodeRecord, paths.dir)
            if node is not None:
                records.setdefault(name[:-len(".json")], node)
    return timing, records


def write_timeline(paths: RunPaths) -> Path:
    """Render the run's timeline.svg from its records (atomically); its path."""
    timing, records = read_timeline(paths)
    spec = read_spec(paths, strict=False)
    attempts = attempt_notes(ended_attempts(paths), spec.restarts) if spec else []
    text = render_timeline(paths.dir.resolve().name, timing, records, attempts)
    atomic_write(paths.timeline, text, root=paths.dir)
    return paths.timeline
