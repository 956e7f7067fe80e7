"""vswitch/impair.py (the impairment words and the node-file table) and vswitch/impairer.py
(the pure engine)."""

import itertools
import random
import statistics

import pytest

from tests.carp.sim import advert
from vswitch.impair import (
    Direction,
    ImpairError,
    Impairment,
    Partition,
    PortImpairment,
    parse_table,
    parse_words,
)
from vswitch.impairer import HOLD_FRAMES, QUEUE_SECONDS, Impairer, Line

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")


def frame(n: int = 0, size: int = 100, ethertype: bytes = b"\x08\x00") -> bytes:
    body = n.to_bytes(4, "big")
    return B + A + ethertype + body + bytes(size - 18)


def carp4() -> bytes:
    return B + A + b"\x08\x00" + advert()


def carp6(hop_by_hop: bool = False) -> bytes:
    packet = advert(src="fe80::1")
    if hop_by_hop:  # the same advertisement behind a hop-by-hop header (PadN)
        ext = bytes([112, 0, 1, 4, 0, 0, 0, 0])
        plen = int.from_bytes(packet[4:6], "big") + len(ext)
        packet = packet[:4] + plen.to_bytes(2, "big") + b"\x00" + packet[7:40] + ext + packet[40:]
    return B + A + b"\x86\xdd" + packet


def line(rng_seed: int = 1, **kw: object) -> Line:
    return Line(Impairment(**kw), random.Random(rng_seed))  # type: ignore[arg-type]


def drain(ln: Line, until: float, step: float = 0.001) -> list[tuple[float, bytes]]:
    """Release in time order, as an event loop would at each deadline."""
    out: list[tuple[float, bytes]] = []
    while (deadline := ln.deadline()) is not None and deadline <= until:
        out += [(deadline, f) for f in ln.release(deadline)]
    return out


# -- words -------------------------------------------------------------------------------------


def test_words_set_every_option() -> None:
    change = parse_words(
        ["out", "delay", "50ms", "jitter", "5ms", "loss", "30%", "rate", "10mbit", "partition"]
    )
    assert change.direction is Direction.OUT
    assert change.impairment == Impairment(0.05, 0.005, 30.0, 10_000_000, Partition.ALL)
    assert parse_words(["partition", "carp", "loss", "0.5"]).impairment == Impairment(
        loss=0.5, partition=Partition.CARP
    )
    assert parse_words(["in", "clear"]).impairment.clear
    assert parse_words(["clear"]).direction is None


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["loss", "130%"], "word 1 'loss 130%': 130% is out of range 0..100% (give 0% to 100%)"),
        (["delay", "-5ms"], "word 1 'delay -5ms': -5ms is negative"),
        (["in", "delay", "50"], "word 2 'delay 50': '50' is not a time with its unit"),
        (["delay", "fast"], "'fast' is not a time"),
        (["delay", "61s"], "61s is more than 60s (give 0 to 60s)"),
        (["rate", "10mbps"], "'10mbps' is ambiguous"),
        (["rate", "10"], "10 is out of range 1kbit..1tbit"),
        (["rate", "ten"], "'ten' is not a rate"),
        (["loss", "x%"], "'x%' is not a percentage"),
        (["delay", "5ms", "delay", "6ms"], "word 3 'delay 6ms': delay is given twice"),
        (["partition", "partition", "carp"], "partition is given twice"),
        (["loss"], "word 1 'loss': needs a value (e.g. loss 1%)"),
        (["drop", "5"], "word 1 'drop': unknown (known: delay, jitter"),
        (["clear", "loss", "1%"], "word 1 'clear': unknown"),
        (["out", "in", "loss", "1%"], "word 2 'in': unknown"),
        (["in"], "nothing to set"),
        ([], "nothing to set"),
    ],
)
def test_words_are_refused_with_the_reason(words: list[str], message: str) -> None:
    with pytest.raises(ImpairError) as refused:
        parse_words(words)
    assert message in str(refused.value)


def test_every_bad_word_is_reported_at_once() -> None:
    with pytest.raises(ImpairError) as refused:
        parse_words(["loss", "130%", "delay", "-1ms", "rate", "5mbit"])
    assert len(refused.value.errors) == 2


@pytest.mark.parametrize(
    "impairment",
    [
        Impairment(delay=0.05, jitter=0.0005, loss=0.25, rate=1_544_000, partition=Partition.CARP),
        Impairment(delay=1.5, rate=2_000_000_000, partition=Partition.ALL),
        Impairment(jitter=0.012, rate=1001),
        Impairment(),
    ],
)
def test_words_and_table_round_trip(impairment: Impairment) -> None:
    assert parse_words(impairment.words()).impairment == impairment
    assert parse_table(impairment.table()) == PortImpairment(impairment, impairment)


# -- the node file's table ----------------------------------------------------------------------


def test_table_for_both_directions_or_each() -> None:
    both = parse_table({"delay": "50ms", "loss": 1, "rate": 64000, "partition": "carp"})
    expected = Impairment(delay=0.05, loss=1.0, rate=64000, partition=Partition.CARP)
    assert both == PortImpairment(expected, expected)
    assert parse_table({"delay": 0.25}).inbound.delay == 0.25  # a TOML number is seconds
    each = parse_table({"in": {"loss": "5%"}, "out": {"partition": True}})
    assert each == PortImpairment(Impairment(loss=5.0), Impairment(partition=Partition.ALL))
    assert each.table() == {"in": {"loss": "5%"}, "out": {"partition": True}}
    assert parse_table(each.table()) == each
    assert parse_table({"out": {"delay": "1s"}}).inbound.clear
    assert parse_table({}) == PortImpairment()


@pytest.mark.parametrize(
    ("table", "where", "message"),
    [
        ({"loss": "130%"}, ("loss",), "130% is out of range 0..100%"),
        ({"loss": 130}, ("loss",), "130% is out of range"),
        ({"delay": "-5ms"}, ("delay",), "-5ms is negative"),
        ({"delay": -1}, ("delay",), "-1 is not a positive number of seconds"),
        ({"delay": float("nan")}, ("delay",), "nan is not a positive number"),
        ({"delay": True}, ("delay",), "True is not a time"),
        ({"jitter": [1]}, ("jitter",), "[1] is not a time"),
        ({"rate": 1.5}, ("rate",), "1.5 is not a rate"),
        ({"loss": None}, ("loss",), "None is not a percentage"),
        ({"partition": "yes"}, ("partition",), "'yes' is not true, false or \"carp\""),
        ({"dealy": "5ms"}, ("dealy",), "unknown key (known: delay, jitter, loss"),
        ({"in": {"loss": "2%"}, "delay": "5ms"}, ("delay",), "beside in/out tables"),
        ({"in": "5ms"}, ("in",), "expected a table"),
        ({"out": {"rate": "1kbps"}}, ("out", "rate"), "'1kbps' is ambiguous"),
        ("50ms", (), "expected a table"),
    ],
)
def test_table_is_refused_with_the_key_and_reason(
    table: object, where: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ImpairError) as refused:
        parse_table(table)
    assert [loc for loc, _ in refused.value.errors] == [where]
    assert message in refused.value.errors[0][1]
    if where:
        assert str(refused.value).startswith(".".join(where) + ": ")


def test_partition_false_and_none_are_no_partition() -> None:
    assert parse_table({"partition": False}).inbound.partition is Partition.NONE
    assert parse_table({"partition": "none"}).outbound.partition is Partition.NONE


# -- which frames `partition carp` takes ----------------------------------------------------


def test_partition_carp_drops_only_protocol_112() -> None:
    ln = line(partition=Partition.CARP)
    data = [frame(1), carp4(), frame(2), carp6(), carp6(hop_by_hop=True)]
    assert ln.submit(0.0, data) == [frame(1), frame(2)]
    assert ln.drops["partition"] == 3 and ln.passed == 2


def test_partition_drops_everything() -> None:
    ln = line(partition=Partition.ALL)
    assert ln.submit(0.0, [frame(1), carp4()]) == []
    assert ln.counters() == {
        "passed": 0,
        "held": 0,
        "partition": 2,
        "loss": 0,
        "queue": 0,
        "limit": 0,
    }


# -- loss, delay, jitter, rate ----------------------------------------------------------------


def test_loss_follows_the_probability_and_the_injected_randomness() -> None:
    frames = [frame(n) for n in range(4000)]
    first = line(rng_seed=7, loss=30.0).submit(0.0, frames)
    again = line(rng_seed=7, loss=30.0).submit(0.0, frames)
    assert first == again  # the same seed, the same frames lost
    assert 0.27 < 1 - len(first) / len(frames) < 0.33
    assert line(loss=100.0).submit(0.0, frames) == []
    assert line(loss=0.0).submit(0.0, frames) == frames


def test_delay_holds_frames_until_their_deadline() -> None:
    ln = line(delay=0.05)
    assert ln.submit(1.0, [frame(1), frame(2)]) == []
    assert ln.submit(1.01, [frame(3)]) == []
    assert ln.deadline() == pytest.approx(1.05) and ln.held == 3
    assert ln.release(1.049) == []
    assert ln.release(1.05) == [frame(1), frame(2)]
    assert ln.deadline() == pytest.approx(1.06)
    assert ln.release(2.0) == [frame(3)]
    assert ln.deadline() is None and ln.held_bytes == 0 and ln.passed == 3


def test_jitter_spreads_the_delay_but_never_reorders() -> None:
    ln = line(delay=0.05, jitter=0.01)
    for n in range(500):
        ln.submit(n * 0.001, [frame(n)])
    released = drain(ln, 10.0)
    assert [f for _, f in released] == [frame(n) for n in range(500)]
    delays = [t - n * 0.001 for n, (t, _) in enumerate(released)]
    assert min(delays) >= 0.04 - 1e-9 and max(delays) <= 0.06 + 0.01
    assert statistics.pstdev(delays) > 0.002  # it does vary


def test_jitter_larger_than_the_delay_is_clipped_at_zero() -> None:
    ln = line(jitter=0.05)
    passed = ln.submit(0.0, [frame(n) for n in range(200)])
    released = drain(ln, 1.0)
    assert len(passed) + len(released) == 200
    assert all(0.0 <= t <= 0.05 for t, _ in released)


def test_rate_spaces_frames_at_the_bit_rate() -> None:
    ln = line(rate=1_000_000)  # 1 Mbit/s: a 1250-byte frame takes 10 ms
    big = [frame(n, size=1250) for n in range(20)]
    now = ln.submit(0.0, big)
    released = drain(ln, 1.0)
    # the full bucket (5 ms of rate, at least one 1514-byte frame) lets the first through
    assert now == big[:1]
    assert [f for _, f in released] == big[1:]
    times = [t for t, _ in released]
    burst = 1514 * 8
    assert times[0] == pytest.approx((2 * 10_000 - burst) / 1_000_000)
    assert all(b - a == pytest.approx(0.01) for a, b in itertools.pairwise(times))
    assert times[-1] == pytest.approx((20 * 10_000 - burst) / 1_000_000)


def test_rate_queue_is_bounded_and_counts_its_drops() -> None:
    ln = line(rate=100_000)  # 100 kbit/s: a 1250-byte frame takes 0.1 s
    ln.submit(0.0, [frame(n, size=1250) for n in range(20)])
    queued = ln.held
    assert ln.drops["queue"] == 20 - 1 - queued
    assert ln.drops["queue"] > 0
    # what is queued leaves within QUEUE_SECONDS (plus one frame's time)
    released = [t for t, _ in drain(ln, 10.0)]
    assert len(released) == queued and max(released) <= QUEUE_SECONDS
    assert max(released) > QUEUE_SECONDS - 0.1  # the queue was used up to its bound
    assert ln.submit(10.0, [frame(99, size=1250)]) == [frame(99, size=1250)]  # refilled


def test_a_frame_larger_than_the_bucket_is_sent_in_debt() -> None:
    ln = line(rate=1_000)  # the bucket holds one 1514-byte frame; 64 KiB leaves in debt
    huge = frame(1, size=65536)
    assert ln.submit(0.0, [huge]) == [huge]
    assert ln.submit(0.0, [frame(2)]) == []
    assert ln.drops["queue"] == 1  # the debt (over 500 s at 1 kbit/s) refuses the next
    assert ln.submit(600.0, [frame(3)]) == [frame(3)]  # paid off


def test_rate_with_delay_adds_up() -> None:
    ln = line(rate=1_000_000, delay=0.1)
    ln.submit(0.0, [frame(n, size=1250) for n in range(3)])
    first_wait = (2 * 10_000 - 1514 * 8) / 1_000_000
    expected = [0.1, 0.1 + first_wait, 0.11 + first_wait]
    assert [t for t, _ in drain(ln, 5.0)] == pytest.approx(expected)


def test_the_delay_line_is_bounded() -> None:
    ln = line(delay=1.0)
    ln.submit(0.0, [frame(n, size=64) for n in range(HOLD_FRAMES + 5)])
    assert ln.held == HOLD_FRAMES and ln.drops["limit"] == 5
    ln2 = line(delay=1.0)
    ln2.submit(0.0, [frame(n, size=60000) for n in range(1000)])
    assert ln2.held_bytes <= 32 << 20 and ln2.drops["limit"] > 0


def test_a_change_applies_to_new_frames_and_keeps_order() -> None:
    ln = line(delay=0.5)
    ln.submit(0.0, [frame(1)])
    ln.set(Impairment())
    assert ln.submit(0.1, [frame(2)]) == []  # may not overtake the held frame
    assert not ln.idle
    assert ln.release(0.5) == [frame(1), frame(2)]
    assert ln.idle
    assert ln.submit(0.6, [frame(3)]) == [frame(3)]


def test_a_new_rate_starts_with_a_full_bucket() -> None:
    ln = line(rate=1_000)
    ln.submit(0.0, [frame(1, size=1000)])
    ln.set(Impairment(rate=2_000))
    assert ln.submit(0.0, [frame(2, size=1000)]) == [frame(2, size=1000)]


# -- a port: both directions ------------------------------------------------------------------


def test_impairer_per_direction() -> None:
    port = Impairer(random.Random(3))
    assert port.submit(0.0, Direction.IN, [frame(1)]) == [frame(1)]  # nothing set: no line
    assert port.idle and port.deadline() is None
    config = port.apply(parse_words(["in", "delay", "10ms"]))
    assert config == PortImpairment(inbound=Impairment(delay=0.01))
    port.apply(parse_words(["out", "partition"]))
    assert port.config.inbound.delay == 0.01  # the other direction is kept
    assert port.submit(0.0, Direction.OUT, [frame(2)]) == []
    assert port.submit(0.0, Direction.IN, [frame(3)]) == []
    assert port.deadline() == pytest.approx(0.01)
    assert port.release(0.02) == {Direction.IN: [frame(3)]}
    assert port.counters()["out"]["partition"] == 1
    assert port.counters()["in"]["passed"] == 1
    port.apply(parse_words(["clear"]))
    assert port.idle and port.config == PortImpairment()
    assert port.counters()["out"]["partition"] == 1  # counters survive a clear


def test_impairer_honours_the_vnet_header() -> None:
    port = Impairer(random.Random(1), offset=10)
    port.set(parse_table({"partition": "carp", "rate": "1mbit"}))
    hdr = bytes(10)
    assert port.submit(0.0, Direction.IN, [hdr + carp4(), hdr + frame(1, size=1250)]) == [
        hdr + frame(1, size=1250)
    ]
    line_in = port.lines[Direction.IN]
    assert line_in.drops["partition"] == 1
    port.submit(0.0, Direction.IN, [hdr + frame(2, size=1250)])
    # the bucket left after the first 1250 bytes (1514 - 1250) shortens the second's wait
    assert port.deadline() == pytest.approx((2 * 10_000 - 1514 * 8) / 1_000_000)
