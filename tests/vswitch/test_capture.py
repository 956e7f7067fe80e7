"""vswitch/capture.py: pcapng with one interface per port and the direction of every frame,
read back by dpkt's pcapng blocks and, when installed, by tshark."""

import io
import shutil
import struct
import subprocess
from pathlib import Path

import dpkt
import pytest

from vswitch.capture import (
    BT_EPB,
    BT_IDB,
    BT_SHB,
    EPB_INBOUND,
    EPB_OUTBOUND,
    CaptureWriter,
)
from vswitch.impair import Direction

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")
T0 = 1_700_000_000.25
EPB_FLAGS = 2  # the epb_flags option code of the pcapng specification


def frame(n: int, size: int = 60) -> bytes:
    return B + A + b"\x08\x00" + n.to_bytes(2, "big") + bytes(size - 16)


def blocks(data: bytes) -> list[tuple[int, bytes]]:
    """(block type, whole block) in stream order, checking both length fields of each."""
    out = []
    offset = 0
    while offset < len(data):
        kind, length = struct.unpack_from("<II", data, offset)
        assert length % 4 == 0 and offset + length <= len(data)
        assert struct.unpack_from("<I", data, offset + length - 4)[0] == length
        out.append((kind, data[offset : offset + length]))
        offset += length
    return out


def interfaces(data: bytes) -> list[dict[int, bytes]]:
    found = []
    for kind, raw in blocks(data):
        if kind == BT_IDB:
            idb = dpkt.pcapng.InterfaceDescriptionBlockLE(raw)
            assert idb.linktype == dpkt.pcapng.DLT_EN10MB
            found.append({opt.code: opt.data for opt in idb.opts})
    return found


def packets(data: bytes) -> list[tuple[int, float, int, bytes, int]]:
    """(interface id, time, direction flags, data, original length) of every EPB."""
    found = []
    for kind, raw in blocks(data):
        if kind == BT_EPB:
            epb = dpkt.pcapng.EnhancedPacketBlockLE(raw)
            (flags,) = [struct.unpack("<I", o.data)[0] for o in epb.opts if o.code == EPB_FLAGS]
            ts = ((epb.ts_high << 32) | epb.ts_low) / 1e6
            found.append((epb.iface_id, ts, flags, epb.pkt_data, epb.pkt_len))
    return found


def sample() -> tuple[CaptureWriter, bytes]:
    cap = CaptureWriter(["p1", "p2"], switch="lan0")
    cap.record(T0, "p1", Direction.IN, frame(1))
    cap.record(T0 + 0.5, "p2", Direction.OUT, frame(1))
    cap.record(T0 + 1.0, "carp0", Direction.OUT, frame(2, 61))  # a port named late
    return cap, cap.take()


def test_one_interface_per_port_and_the_direction_of_every_frame() -> None:
    cap, data = sample()
    assert blocks(data)[0][0] == BT_SHB
    names = [i[dpkt.pcapng.PCAPNG_OPT_IF_NAME].rstrip(b"\0") for i in interfaces(data)]
    assert names == [b"p1", b"p2", b"carp0"]
    assert interfaces(data)[0][3].rstrip(b"\0") == b"port p1 of switch lan0"
    assert packets(data) == [
        (0, T0, EPB_INBOUND, frame(1), 60),
        (1, T0 + 0.5, EPB_OUTBOUND, frame(1), 60),
        (2, T0 + 1.0, EPB_OUTBOUND, frame(2, 61), 61),
    ]
    # the carp0 interface is described before the packet that names it
    kinds = [k for k, _ in blocks(data)]
    assert kinds == [BT_SHB, BT_IDB, BT_IDB, BT_EPB, BT_EPB, BT_IDB, BT_EPB]
    assert cap.captured == 3 and cap.lost == 0 and cap.pending == 0 and not cap.waiting


def test_dpkt_reads_the_stream_as_a_pcapng_file() -> None:
    _, data = sample()
    reader = dpkt.pcapng.Reader(io.BytesIO(data))
    assert reader.datalink() == dpkt.pcapng.DLT_EN10MB
    got = list(reader)
    assert [buf for _, buf in got] == [frame(1), frame(1), frame(2, 61)]
    assert [ts for ts, _ in got] == pytest.approx([T0, T0 + 0.5, T0 + 1.0])


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_shows_the_port_and_direction(tmp_path: Path) -> None:
    _, data = sample()
    path = tmp_path / "capture.pcapng"
    path.write_bytes(data)
    fields = ["frame.interface_name", "frame.packet_flags_direction", "frame.len", "eth.src"]
    result = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", *(a for f in fields for a in ("-e", f))],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [(r[0], int(r[1], 0), r[2], r[3]) for r in rows] == [
        ("p1", EPB_INBOUND, "60", "02:00:00:00:00:01"),
        ("p2", EPB_OUTBOUND, "60", "02:00:00:00:00:01"),
        ("carp0", EPB_OUTBOUND, "61", "02:00:00:00:00:01"),
    ]


def test_a_slow_reader_loses_frames_counted_never_blocks() -> None:
    cap = CaptureWriter(["p1"], limit=1000)
    header = cap.take()
    results = [cap.record(T0, "p1", Direction.IN, frame(n, 200)) for n in range(10)]
    kept = results.count(True)
    assert 0 < kept < 10 and results == [True] * kept + [False] * (10 - kept)
    assert cap.lost == 10 - kept and cap.lost_by_port == {"p1": 10 - kept}
    assert cap.pending <= 1000
    data = cap.take()
    assert [p[3] for p in packets(data)] == [frame(n, 200) for n in range(kept)]
    assert cap.pending == 0
    assert cap.record(T0, "p1", Direction.IN, frame(99, 200))  # room again
    assert interfaces(header + data) and cap.captured == kept + 1


def test_lost_frames_never_lose_an_interface_description() -> None:
    cap = CaptureWriter(limit=320)
    cap.record(T0, "p1", Direction.IN, frame(1, 200))
    assert not cap.record(T0, "p2", Direction.IN, frame(2, 200))  # lost, p2 not described
    assert cap.record(T0, "p1", Direction.OUT, frame(3, 20)) is True
    data = cap.take()
    assert [i[dpkt.pcapng.PCAPNG_OPT_IF_NAME].rstrip(b"\0") for i in interfaces(data)] == [b"p1"]
    assert [(p[0], p[2]) for p in packets(data)] == [(0, EPB_INBOUND), (0, EPB_OUTBOUND)]


def test_take_in_pieces_keeps_the_order() -> None:
    cap = CaptureWriter(["p1"])
    for n in range(20):
        cap.record(T0 + n, "p1", Direction.IN, frame(n))
    pieces = []
    while cap.waiting:
        piece = cap.take(max_bytes=200)
        assert piece
        pieces.append(piece)
    assert len(pieces) > 3
    assert [p[3] for p in packets(b"".join(pieces))] == [frame(n) for n in range(20)]
    assert cap.take() == b""


def test_snaplen_and_vnet_header() -> None:
    cap = CaptureWriter(["p1"], snaplen=32, offset=10)
    cap.record(T0, "p1", Direction.IN, b"\x01" * 10 + frame(1, 100))
    (pkt,) = packets(cap.take())
    assert pkt[3] == frame(1, 100)[:32] and pkt[4] == 100
    with pytest.raises(ValueError, match="snaplen must be"):
        CaptureWriter(snaplen=0)
