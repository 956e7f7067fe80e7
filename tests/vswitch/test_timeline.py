"""The SVG pictures of vswitch/lab/timeline.py: valid XML, the right number of bands, gaps and
bars, their labels, and values at the x positions their axis gives them."""

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from vswitch.lab import timeline
from vswitch.lab.timeline import Band, Bar, BarGroup, Lane, Mark, Scale, Window

SVG = "{http://www.w3.org/2000/svg}"


def parse(figures: list[timeline.Figure]) -> ET.Element:
    return ET.fromstring(timeline.document(figures).encode())


def rects(root: ET.Element, cls: str) -> list[ET.Element]:
    return [r for r in root.iter(f"{SVG}rect") if cls in (r.get("class") or "").split()]


def texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def x_span(r: ET.Element) -> tuple[float, float]:
    x = float(r.get("x", "nan"))
    return x, x + float(r.get("width", "nan"))


# -- data ----------------------------------------------------------------------------------------


def test_bands_hold_each_state_until_the_next_change() -> None:
    changes = [(2.0, "MASTER"), (0.0, "BACKUP"), (2.5, "MASTER"), (3.0, "BACKUP")]
    assert timeline.bands(changes, 10.0) == (
        Band(0.0, 2.0, "BACKUP"),
        Band(2.0, 3.0, "MASTER"),  # the repeated MASTER starts no new band
        Band(3.0, 10.0, "BACKUP"),
    )
    assert timeline.bands([], 1.0) == ()


def test_gaps_are_the_silences_longer_than_the_threshold() -> None:
    replies = [0.0, 0.01, 0.02, 0.5, 0.51, 0.9]
    assert timeline.gaps(replies, 0.1) == [(0.02, 0.5), (0.51, 0.9)]
    assert timeline.gaps(replies, 1.0) == []
    assert timeline.gaps([], 0.1) == []


def test_scales_map_linearly_or_logarithmically_and_clamp() -> None:
    s = Scale(0.0, 4.0, x0=100, x1=500)
    assert (s(0.0), s(1.0), s(4.0)) == (100, 200, 500)
    assert (s(-1.0), s(9.0)) == (100, 500)
    log = Scale(0.1, 10.0, x0=0, x1=200, log=True)
    assert log(1.0) == pytest.approx(100)
    assert log(10.0) == pytest.approx(200)
    assert log(0.0) == log(0.1) == pytest.approx(0)


def test_nice_steps_are_one_two_or_five_times_a_power_of_ten() -> None:
    assert timeline.nice_step(10.0) == 2.0
    assert timeline.nice_step(0.3) == 0.05
    assert timeline.nice_step(60.0) == 10.0


# -- timelines ----------------------------------------------------------------------------------


def test_a_timeline_has_one_band_per_state_at_its_times() -> None:
    lanes = [
        Lane("gwa carp0", timeline.bands([(0.0, "MASTER"), (1.0, "KILLED")], 4.0)),
        Lane("gwb carp0", timeline.bands([(0.0, "BACKUP"), (3.0, "MASTER")], 4.0)),
    ]
    fig = timeline.timeline("a run", lanes, start=0.0, end=4.0, marks=[Mark(1.0, "kill -9")])
    root = parse([fig])
    bands = rects(root, "band")
    assert len(bands) == 4
    assert {"a run", "gwa carp0", "gwb carp0", "kill -9", "MASTER", "BACKUP"} <= set(texts(root))
    width = timeline.PLOT_X1 - timeline.PLOT_X0
    killed = next(b for b in bands if "KILLED" in (b.findtext(f"{SVG}title") or ""))
    assert x_span(killed) == pytest.approx((timeline.PLOT_X0 + width / 4, timeline.PLOT_X1))
    taken = next(b for b in bands if "gwb carp0 MASTER" in (b.findtext(f"{SVG}title") or ""))
    assert x_span(taken) == pytest.approx((timeline.PLOT_X0 + width * 3 / 4, timeline.PLOT_X1))
    (mark,) = [m for m in root.iter(f"{SVG}line") if m.get("class") == "mark"]
    assert float(mark.get("x1", "nan")) == pytest.approx(timeline.PLOT_X0 + width / 4)


def test_a_band_too_short_to_see_is_still_drawn() -> None:
    lanes = [
        Lane("gwb", timeline.bands([(0.0, "BACKUP"), (30.0, "MASTER"), (30.01, "BACKUP")], 60))
    ]
    root = parse([timeline.timeline("load", lanes, start=0.0, end=60.0)])
    widths = sorted(float(r.get("width", "0")) for r in rects(root, "band"))
    assert len(widths) == 3
    assert widths[0] == timeline.SHORT_BAND


def test_a_failover_shows_the_kill_the_window_and_the_client_gap() -> None:
    replies = [i * 0.01 for i in range(-50, 0)] + [0.25 + i * 0.01 for i in range(10)]
    fig = timeline.failover(
        "vswitch, advbase 0",
        master="gwa carp0",
        backup="gwb carp0",
        backup_changes=[(0.234, "MASTER")],
        replies=replies,
        master_down=0.234,
        master_interval=0.0039,
        reply_gap=0.03,
    )
    root = parse([fig])
    assert len(rects(root, "band")) == 4  # gwa MASTER, KILLED; gwb BACKUP, MASTER
    (gap,) = rects(root, "gap")
    assert "no reply 260.0 ms" in texts(root)
    assert len(rects(root, "replies")) == 2  # before and after the silence
    (window,) = rects(root, "window")
    (mark,) = [m for m in root.iter(f"{SVG}line") if m.get("class") == "mark"]
    kill_x = float(mark.get("x1", "nan"))
    # the axis runs from the first reply to the last one (with margins): check proportions
    w0, w1 = x_span(window)
    g0, g1 = x_span(gap)
    per_second = (g1 - g0) / 0.26
    assert g0 == pytest.approx(kill_x - 0.01 * per_second, abs=0.02)
    assert w1 == pytest.approx(kill_x + 0.234 * per_second, abs=0.02)
    assert w0 == pytest.approx(kill_x + (0.234 - 0.0039) * per_second, abs=0.02)
    assert "kill -9" in texts(root)
    assert any(t.startswith("master-down due (234.0 ms") for t in texts(root))


def test_a_timeline_needs_a_time_span() -> None:
    with pytest.raises(ValueError, match="end > start"):
        timeline.timeline("empty", [], start=1.0, end=1.0)


def test_labels_are_escaped() -> None:
    fig = timeline.timeline(
        "<a & b>",
        [Lane("x<y", (Band(0, 1, "MASTER"),))],
        start=0,
        end=1,
        windows=[Window(0.2, 0.4, "due <here>")],
    )
    root = parse([fig])
    assert {"<a & b>", "x<y", "due <here>"} <= set(texts(root))
    (window,) = rects(root, "window")
    assert x_span(window) == pytest.approx((Scale(0, 1)(0.2), Scale(0, 1)(0.4)))


# -- bar charts ---------------------------------------------------------------------------------


def test_ratio_bars_grow_from_the_one_line_on_a_log_axis() -> None:
    groups = [
        BarGroup("TCP 1 stream vs bridge", (Bar("vswitch", 0.5), Bar("dataplane", 2.0))),
        BarGroup("ping p99 vs vde", (Bar("vswitch", 0.5),), higher_is_better=False),
    ]
    root = parse([timeline.ratio_bars("ratios", groups, note="log scale")])
    bars = rects(root, "bar")
    assert len(bars) == 3
    (ref,) = [m for m in root.iter(f"{SVG}line") if m.get("class") == "ref"]
    one = float(ref.get("x1", "nan"))
    half, double, ping = (x_span(b) for b in bars)
    assert half[1] == pytest.approx(one) and double[0] == pytest.approx(one)
    assert ping == half  # the same ratio, whichever side is better
    # log axis: halving and doubling are the same distance from 1.0x
    assert one - half[0] == pytest.approx(double[1] - one, abs=0.02)
    scale = timeline.ratio_scale([0.5, 2.0, 0.5])
    assert double[1] == pytest.approx(scale(2.0), abs=0.01)
    assert math.isclose(scale(1.0), one, abs_tol=0.01)
    assert [b.get("class") for b in bars] == ["bar worse", "bar better", "bar better"]
    labels = texts(root)
    assert {"ratios", "log scale", "TCP 1 stream vs bridge", "ping p99 vs vde"} <= set(labels)
    assert labels.count("0.50x") == 2 and "2.00x" in labels and "1x" in labels


def test_a_ratio_of_zero_sits_at_the_low_end() -> None:
    root = parse([timeline.ratio_bars("r", [BarGroup("g", (Bar("dead", 0.0), Bar("ok", 1.5)))])])
    dead, _ = (x_span(b) for b in rects(root, "bar"))
    assert dead[0] == pytest.approx(timeline.PLOT_X0)


# -- documents ----------------------------------------------------------------------------------


def test_figures_stack_into_one_document(tmp_path: Path) -> None:
    one = timeline.timeline("first", [Lane("a", (Band(0, 1, "MASTER"),))], start=0, end=1)
    two = timeline.ratio_bars("second", [BarGroup("g", (Bar("p", 0.8),))])
    path = tmp_path / "run.svg"
    timeline.write(str(path), [one, two])
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    assert int(root.get("height", "0")) == one.height + two.height
    groups = [g for g in root if g.get("class") == "figure"]
    assert [g.get("transform") for g in groups] == ["translate(0,0)", f"translate(0,{one.height})"]
    assert {"first", "second"} <= set(texts(root))
    assert [p.name for p in tmp_path.iterdir()] == ["run.svg"]  # no temporary file left


def test_the_usual_gap_follows_the_replies_spacing() -> None:
    replies = [0.0, 0.01, 0.02, 0.03, 0.5, 0.51]  # every 10 ms, one silence
    assert timeline.usual_gap(replies) == pytest.approx(0.015)
    assert timeline.gaps(replies, timeline.usual_gap(replies)) == [(0.03, 0.5)]
    assert timeline.usual_gap([1.0]) == 0.1  # nothing to measure: a tenth of a second
