"""Pictures of lab runs, written as SVG text directly (no plotting library).

Two kinds, each a `Figure`; `document()` stacks figures into one SVG file:
- `timeline()`: carp states over time, one lane of coloured bands per node, with vertical marks
  (the kill), shaded windows (when master-down is due) and the client's echo replies with the
  silences between them; `failover()` draws one kill -9 run with it, as `vswitch demo --plot`
  and bench/failover.py do.
- `ratio_bars()`: groups of ratios (one bar per path) on a log axis with the 1.0x line, bars
  growing from it; bench/throughput.py draws its table with it.

Every element carries a class (band, mark, window, replies, gap, bar, ref) so that tests and
style sheets find them. Times are seconds on one axis chosen by the caller (0 = the kill).
"""

import itertools
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

WIDTH = 900
LEFT = 160  # lane and bar labels sit left of the plot area
RIGHT = 70  # room for the value labels right of the longest bar
PLOT_X0 = LEFT
PLOT_X1 = WIDTH - RIGHT
LANE_HEIGHT = 24
LANE_GAP = 8
TITLE_HEIGHT = 34
AXIS_HEIGHT = 34
BAR_HEIGHT = 16
BAR_GAP = 4
GROUP_HEAD = 22
SHORT_BAND = 3.0  # pixels: the least width a band is drawn with

STATE_COLOURS = {
    "MASTER": "#2e8b57",
    "BACKUP": "#4682b4",
    "INIT": "#a9a9a9",
    "KILLED": "#f0f0f0",
}
OTHER_STATE = "#c8a2c8"
REPLIES = "#8fbc8f"
GAP = "#d62728"
MARK = "#d62728"
WINDOW = "#ffd54f"
BETTER = "#2e8b57"
WORSE = "#d2691e"
TEXT = "#222222"
GRID = "#dddddd"


@dataclass(frozen=True)
class Figure:
    """One picture: its size in pixels and its SVG elements (without the <svg> around them)."""

    width: int
    height: int
    body: tuple[str, ...]


@dataclass(frozen=True)
class Scale:
    """Values in [lo, hi] to x in [x0, x1], linear or logarithmic; values outside are clamped."""

    lo: float
    hi: float
    x0: float = PLOT_X0
    x1: float = PLOT_X1
    log: bool = False

    def __call__(self, value: float) -> float:
        lo, hi = (math.log10(self.lo), math.log10(self.hi)) if self.log else (self.lo, self.hi)
        if self.log:
            value = math.log10(max(value, self.lo))
        value = min(max(value, lo), hi)
        return self.x0 + (value - lo) / (hi - lo) * (self.x1 - self.x0)


# -- elements ----------------------------------------------------------------------------------


def _num(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def rect(
    x: float, y: float, w: float, h: float, fill: str, cls: str, title: str = "", style: str = ""
) -> str:
    """A rectangle; `style`: more attributes as written (opacity, stroke)."""
    tip = f"<title>{escape(title)}</title>" if title else ""
    more = f" {style}" if style else ""
    return (
        f'<rect class="{cls}" x="{_num(x)}" y="{_num(y)}" width="{_num(max(w, 0.0))}" '
        f'height="{_num(h)}" fill="{fill}"{more}>{tip}</rect>'
    )


def line(x1: float, y1: float, x2: float, y2: float, stroke: str, cls: str, dash: str = "") -> str:
    style = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<line class="{cls}" x1="{_num(x1)}" y1="{_num(y1)}" x2="{_num(x2)}" y2="{_num(y2)}" '
        f'stroke="{stroke}" stroke-width="1.5"{style}/>'
    )


def text(
    x: float,
    y: float,
    content: str,
    *,
    anchor: str = "start",
    size: int = 12,
    fill: str = TEXT,
    cls: str = "label",
    bold: bool = False,
) -> str:
    weight = ' font-weight="bold"' if bold else ""
    return (
        f'<text class="{cls}" x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}" '
        f'font-size="{size}" fill="{fill}"{weight}>{escape(content)}</text>'
    )


CHAR_WIDTH = 6.5  # about the width of one character at size 11, to keep labels inside


def beside(x0: float, x1: float, y: float, content: str, cls: str, fill: str = TEXT) -> str:
    """A label right of [x0, x1], or left of it where it would run off the picture."""
    if x1 + 3 + CHAR_WIDTH * len(content) <= WIDTH - 4:
        return text(x1 + 3, y, content, size=11, fill=fill, cls=cls)
    return text(x0 - 3, y, content, anchor="end", size=11, fill=fill, cls=cls)


def document(figures: Sequence[Figure]) -> str:
    """One SVG document with the figures one below the other on a white background."""
    width = max((f.width for f in figures), default=WIDTH)
    height = sum(f.height for f in figures) or 1
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Arial, sans-serif">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    y = 0
    for fig in figures:
        parts.append(f'<g class="figure" transform="translate(0,{y})">')
        parts.extend(fig.body)
        parts.append("</g>")
        y += fig.height
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write(path: str, figures: Sequence[Figure]) -> None:
    """Write the document to `path` (a temporary file renamed: never half a picture)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".timeline-", suffix=".svg")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(document(figures))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def nice_step(span: float, ticks: int = 8) -> float:
    """A 1, 2 or 5 times a power of ten that cuts `span` into about `ticks` steps."""
    raw = span / max(ticks, 1)
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    return next((m * power for m in (1, 2, 5) if m * power >= raw), 10 * power)


def _tick_label(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{value:.{decimals}f}"


def _axis(scale: Scale, y: float, unit: str) -> list[str]:
    """A time axis at `y` with labelled ticks and grid lines up to the top of the plot."""
    step = nice_step(scale.hi - scale.lo)
    out = [line(scale.x0, y, scale.x1, y, TEXT, "axis")]
    first = math.ceil(scale.lo / step - 1e-9)
    for i in range(first, math.floor(scale.hi / step + 1e-9) + 1):
        value = i * step
        x = scale(value)
        out.append(line(x, TITLE_HEIGHT, x, y, GRID, "grid"))
        out.append(line(x, y, x, y + 4, TEXT, "tick"))
        out.append(text(x, y + 16, _tick_label(value, step), anchor="middle", size=11))
    out.append(text(scale.x1, y + 30, unit, anchor="end", size=11))
    return out


# -- timelines ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Band:
    start: float
    end: float
    state: str


@dataclass(frozen=True)
class Lane:
    name: str
    bands: tuple[Band, ...]


@dataclass(frozen=True)
class Mark:
    at: float
    label: str


@dataclass(frozen=True)
class Window:
    start: float
    end: float
    label: str


def bands(changes: Sequence[tuple[float, str]], end: float) -> tuple[Band, ...]:
    """Each (time, state) holds until the next change, the last one until `end`; changes are
    taken in time order and a change to the state already held starts no new band."""
    ordered = sorted(changes, key=lambda c: c[0])
    out: list[Band] = []
    for i, (at, state) in enumerate(ordered):
        if out and out[-1].state == state:
            continue
        until = end
        for later, other in ordered[i + 1 :]:
            if other != state:
                until = later
                break
        if until > at:
            out.append(Band(at, min(until, end), state))
    return tuple(out)


def gaps(replies: Sequence[float], longer_than: float) -> list[tuple[float, float]]:
    """The silences between consecutive replies (in time order) longer than `longer_than`."""
    ordered = sorted(replies)
    return [(a, b) for a, b in itertools.pairwise(ordered) if b - a > longer_than]


def usual_gap(replies: Sequence[float]) -> float:
    """1.5 times the median spacing of the replies: longer silences are gaps (ping sends a
    little slower than asked on a loaded machine, so the spacing asked for is no measure)."""
    ordered = sorted(replies)
    spacings = sorted(b - a for a, b in itertools.pairwise(ordered))
    return 1.5 * spacings[len(spacings) // 2] if spacings else 0.1


def _runs(replies: Sequence[float], longer_than: float) -> list[tuple[float, float]]:
    """The stretches of regular replies between the gaps."""
    ordered = sorted(replies)
    if not ordered:
        return []
    out, start = [], ordered[0]
    for a, b in gaps(ordered, longer_than):
        out.append((start, a))
        start = b
    out.append((start, ordered[-1]))
    return out


def _seconds(value: float) -> str:
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.3f} s"


def timeline(
    title: str,
    lanes: Sequence[Lane],
    *,
    start: float,
    end: float,
    marks: Sequence[Mark] = (),
    windows: Sequence[Window] = (),
    replies: Sequence[float] | None = None,
    reply_gap: float = 0.1,
    replies_label: str = "client replies",
    unit: str = "seconds",
) -> Figure:
    """Lanes of state bands over [start, end]; with `replies`, one more lane shows the client's
    echo replies as stretches and the silences longer than `reply_gap` as labelled gaps."""
    if not end > start:
        raise ValueError(f"a timeline needs end > start (got {start} .. {end})")
    scale = Scale(start, end)
    rows = len(lanes) + (1 if replies is not None else 0)
    plot_top = TITLE_HEIGHT + 28  # room for the labels of marks (first row) and windows
    plot_bottom = plot_top + rows * (LANE_HEIGHT + LANE_GAP)
    body = [text(10, 22, title, size=14, bold=True, cls="title")]
    body += _axis(scale, plot_bottom, unit)
    for row, lane in enumerate(lanes):
        y = plot_top + row * (LANE_HEIGHT + LANE_GAP)
        body.append(text(LEFT - 8, y + LANE_HEIGHT * 0.7, lane.name, anchor="end", cls="lane"))
        short = []
        for b in lane.bands:
            if b.end <= start or b.start >= end:
                continue
            x0, x1 = scale(b.start), scale(b.end)
            fill = STATE_COLOURS.get(b.state, OTHER_STATE)
            tip = f"{lane.name} {b.state} {b.start:.4f} .. {b.end:.4f}"
            if x1 - x0 < SHORT_BAND:
                short.append(rect(x0, y - 3, SHORT_BAND, LANE_HEIGHT + 6, fill, "band", tip))
                continue
            body.append(rect(x0, y, x1 - x0, LANE_HEIGHT, fill, "band", tip))
            if x1 - x0 > 8 * len(b.state):
                ink = TEXT if b.state == "KILLED" else "#ffffff"
                body.append(text(x0 + 4, y + LANE_HEIGHT * 0.7, b.state, size=11, fill=ink))
        # a band too short to see at this scale (a false takeover of a few ms in a minute) is
        # drawn wider and taller, over its neighbours
        body.extend(short)
    if replies is not None:
        y = plot_top + len(lanes) * (LANE_HEIGHT + LANE_GAP)
        body.append(text(LEFT - 8, y + LANE_HEIGHT * 0.7, replies_label, anchor="end", cls="lane"))
        for first, last in _runs(replies, reply_gap):
            x0 = scale(first)
            body.append(
                rect(x0, y + 4, max(scale(last) - x0, 1.0), LANE_HEIGHT - 8, REPLIES, "replies")
            )
        for before, after in gaps(replies, reply_gap):
            x0, x1 = scale(before), scale(after)
            tip = f"no reply {before:.4f} .. {after:.4f}"
            body.append(rect(x0, y, max(x1 - x0, 1.0), LANE_HEIGHT, GAP, "gap", tip))
            silence = f"no reply {_seconds(after - before)}"
            if x1 - x0 > CHAR_WIDTH * len(silence) + 8:
                mid = (x0 + x1) / 2
                body.append(
                    text(
                        mid,
                        y + LANE_HEIGHT * 0.7,
                        silence,
                        anchor="middle",
                        size=11,
                        fill="#ffffff",
                        cls="gap-label",
                    )
                )
            else:
                body.append(beside(x0, x1, y + LANE_HEIGHT * 0.7, silence, "gap-label"))
    for w in windows:
        # over the lanes, see-through: the bands under it stay visible
        x0, x1 = scale(w.start), scale(w.end)
        height = plot_bottom - plot_top + 4
        style = 'fill-opacity="0.45" stroke="#b8860b" stroke-width="1"'
        body.append(
            rect(x0, plot_top - 4, max(x1 - x0, 1.0), height, WINDOW, "window", style=style)
        )
        body.append(beside(x0, x1, plot_top - 8, w.label, "window-label", fill="#8b6508"))
    for m in marks:
        x = scale(m.at)
        body.append(line(x, TITLE_HEIGHT - 4, x, plot_bottom, MARK, "mark", dash="5,3"))
        body.append(beside(x, x, TITLE_HEIGHT + 2, m.label, "mark-label", fill=MARK))
    return Figure(WIDTH, int(plot_bottom + AXIS_HEIGHT + 10), tuple(body))


def failover(
    title: str,
    *,
    master: str,
    backup: str,
    backup_changes: Sequence[tuple[float, str]],
    replies: Sequence[float],
    master_down: float,
    master_interval: float,
    reply_gap: float | None = None,
    start: float | None = None,
    end: float | None = None,
) -> Figure:
    """One kill -9 run on an axis where the kill is 0: the master MASTER until it is killed,
    the backup's states from its changes (seconds after the kill; BACKUP before the first),
    the window in which master-down expires (its last advertisement came at most one interval
    before the kill), and the client's replies (seconds after the kill) with the silences
    longer than `reply_gap` (default: `usual_gap`)."""
    last = max([0.0, master_down, *(t for t, _ in backup_changes), *replies])
    first = min([-master_interval, *replies]) if replies else -master_interval
    span = last - first or 1.0
    lo = first - 0.03 * span if start is None else start
    hi = last + 0.05 * span if end is None else end
    lanes = [
        Lane(master, bands([(lo, "MASTER"), (0.0, "KILLED")], hi)),
        Lane(backup, bands([(lo, "BACKUP"), *((t, s.upper()) for t, s in backup_changes)], hi)),
    ]
    due = Window(
        max(0.0, master_down - master_interval),
        master_down,
        f"master-down due ({_seconds(master_down)} after the last advertisement)",
    )
    return timeline(
        title,
        lanes,
        start=lo,
        end=hi,
        marks=[Mark(0.0, "kill -9")],
        windows=[due],
        replies=replies,
        reply_gap=usual_gap(replies) if reply_gap is None else reply_gap,
        unit="seconds after the kill",
    )


# -- bar charts of ratios ----------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    label: str
    value: float  # a ratio to the group's baseline


@dataclass(frozen=True)
class BarGroup:
    label: str
    bars: tuple[Bar, ...]
    higher_is_better: bool = True


LOG_STEPS = (1.0, 2.0, 5.0)


def ratio_scale(values: Sequence[float]) -> Scale:
    """A log axis from a 1-2-5 step below the smallest ratio (and 1.0) to one above the
    largest; ratios of 0 or less are shown at the axis' low end."""
    positive = [v for v in values if v > 0] + [1.0]
    return Scale(_step_below(min(positive) / 1.2), _step_above(max(positive) * 1.2), log=True)


def _steps(lo_power: int, hi_power: int) -> list[float]:
    return [m * 10.0**p for p in range(lo_power, hi_power + 1) for m in LOG_STEPS]


def _step_below(v: float) -> float:
    p = math.floor(math.log10(v))
    return max(s for s in _steps(p - 1, p + 1) if s <= v)


def _step_above(v: float) -> float:
    p = math.floor(math.log10(v))
    return min(s for s in _steps(p - 1, p + 1) if s >= v)


def ratio_bars(title: str, groups: Sequence[BarGroup], *, note: str = "") -> Figure:
    """Groups of bars, each a ratio drawn from the 1.0x line on a log axis: right of it for
    more, left for less; green where the ratio is the better side for its group."""
    scale = ratio_scale([b.value for g in groups for b in g.bars])
    body = [text(10, 22, title, size=14, bold=True, cls="title")]
    y = TITLE_HEIGHT + (16 if note else 0)
    if note:
        body.append(text(10, TITLE_HEIGHT + 6, note, size=11, cls="note"))
    top = y
    for group in groups:
        body.append(text(10, y + 15, group.label, bold=True, cls="group"))
        y += GROUP_HEAD
        for bar in group.bars:
            one, at = scale(1.0), scale(bar.value)
            better = bar.value >= 1.0 if group.higher_is_better else bar.value <= 1.0
            colour = BETTER if better else WORSE
            body.append(
                text(LEFT - 8, y + BAR_HEIGHT * 0.8, bar.label, anchor="end", cls="bar-label")
            )
            tip = f"{group.label}: {bar.label} {bar.value:.3f}x"
            cls = f"bar {'better' if better else 'worse'}"
            body.append(rect(min(one, at), y, abs(at - one), BAR_HEIGHT, colour, cls, tip))
            side, anchor = (at + 4, "start") if at >= one else (at - 4, "end")
            body.append(
                text(side, y + BAR_HEIGHT * 0.8, f"{bar.value:.2f}x", anchor=anchor, cls="value")
            )
            y += BAR_HEIGHT + BAR_GAP
        y += 6
    bottom = y
    for value in _steps(-3, 3):
        if scale.lo <= value <= scale.hi:
            x = scale(value)
            body.insert(1, line(x, top, x, bottom, GRID, "grid"))
            body.append(line(x, bottom, x, bottom + 4, TEXT, "tick"))
            body.append(text(x, bottom + 16, f"{value:g}x", anchor="middle", size=11))
    body.append(line(scale.x0, bottom, scale.x1, bottom, TEXT, "axis"))
    one = scale(1.0)
    body.append(line(one, top, one, bottom, TEXT, "ref", dash="6,3"))
    return Figure(WIDTH, int(bottom + AXIS_HEIGHT), tuple(body))
