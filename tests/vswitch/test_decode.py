"""`vswitch decode`: captures in, one report per protocol-112 packet out (via vswitch.cli.main)."""

import json
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import dpkt
import pytest

from carp.auth import HmacContexts, carp_key
from carp.checksum import inet_checksum
from carp.wire import CarpHeader, build_frame, build_ipv4, build_ipv6
from vswitch.cli import main
from vswitch.decode import classify, decode_frame

UCARP_PCAP = Path(__file__).resolve().parents[1] / "carp" / "data" / "ucarp-vhid1-pass-secret.pcap"
UCARP_CARP_INDEXES = [3, 5, 6, 9, 11, 12, 15, 17, 19, 20]
COUNTER = bytes.fromhex("0123456789abcdef")
SRC_MAC = bytes.fromhex("00005e000101")
MAC4 = bytes.fromhex("01005e000012")
MAC6 = bytes.fromhex("333300000012")
SRC4 = IPv4Address("192.0.2.2")
VIP4 = IPv4Address("192.0.2.10")
GROUP4 = IPv4Address("224.0.0.18")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["decode", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, Any]]:
    code, out, err = run(capsys, "--json", *argv)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def advert(
    passphrase: str = "secret",
    vhid: int = 1,
    v4: tuple[IPv4Address, ...] = (VIP4,),
    v6: tuple[IPv6Address, ...] = (),
    **fields: int,
) -> CarpHeader:
    md = HmacContexts(carp_key(passphrase), vhid, v4, v6).generate(COUNTER)
    values = {"advskew": 0, "advbase": 1, "demote": 0, **fields}
    return CarpHeader(vhid=vhid, counter=COUNTER, md=md, **values)


def eth4(ip: bytes) -> bytes:
    return build_frame(MAC4, SRC_MAC, 0x0800, ip)


def ipv4(payload: bytes, ttl: int = 255, proto: int = 112) -> bytes:
    packet = bytearray(build_ipv4(SRC4, GROUP4, payload, 7))
    packet[8], packet[9] = ttl, proto
    packet[10:12] = b"\0\0"
    packet[10:12] = inet_checksum(bytes(packet[:20])).to_bytes(2, "big")
    return bytes(packet)


def write_pcap(path: Path, frames: list[bytes], linktype: int = 1) -> Path:
    with path.open("wb") as stream:
        writer = dpkt.pcap.Writer(stream, linktype=linktype)
        for i, frame in enumerate(frames):
            writer.writepkt(frame, ts=1000.0 + i)
    return path


def vrrp2(count: int = 1, auth_type: int = 0) -> bytes:
    body = bytearray(
        bytes((0x21, 1, 100, count, auth_type, 1, 0, 0))
        + b"".join(IPv4Address(int(VIP4) + i).packed for i in range(count))
        + bytes(8)
    )
    body[6:8] = inet_checksum(bytes(body)).to_bytes(2, "big")
    return bytes(body)


# --- the ucarp capture: the done-criteria ------------------------------------------------------


def test_ucarp_capture_accepts_with_the_right_pass(capsys: pytest.CaptureFixture[str]) -> None:
    rows = run_json(capsys, "--pass", "secret", "--vip", "192.0.2.10", str(UCARP_PCAP))
    assert [r["index"] for r in rows] == UCARP_CARP_INDEXES
    for row in rows:
        assert row["kind"] == "carp"
        assert row["verdict"] == "accept"
        assert row["hmac"] == "ok"
        assert row["checksum_ok"] is True
        assert row["ttl"] == 255 and row["dst"] == "224.0.0.18" and row["vhid"] == 1
        assert row["src"] in ("192.0.2.1", "192.0.2.2")
        assert len(row["counter"]) == 16 and int(row["counter"], 16) >= 0
    first = rows[0]
    assert first["counter"] == "94ad2ee7182ab5e3"
    # every line says its layout's version; "version" is the CARP header's
    assert {(r["format"], r["version"]) for r in rows} == {(1, 2)}
    assert (first["advbase"], first["advskew"], first["demote"]) == (1, 0, 0)
    assert {r["advskew"] for r in rows if r["src"] == "192.0.2.2"} == {100}


def test_ucarp_capture_wrong_pass_is_badauth(capsys: pytest.CaptureFixture[str]) -> None:
    rows = run_json(capsys, "--pass", "wrong", "--vip", "192.0.2.10", str(UCARP_PCAP))
    assert len(rows) == 10
    assert {r["verdict"] for r in rows} == {"badauth"}
    assert {r["hmac"] for r in rows} == {"bad"}


def test_ucarp_capture_wrong_vip_is_badauth(capsys: pytest.CaptureFixture[str]) -> None:
    rows = run_json(capsys, "--pass", "secret", "--vip", "192.0.2.11", str(UCARP_PCAP))
    assert {r["verdict"] for r in rows} == {"badauth"}


def test_without_vip_hmac_is_unchecked(capsys: pytest.CaptureFixture[str]) -> None:
    rows = run_json(capsys, "--pass", "wrong", str(UCARP_PCAP))
    assert {r["hmac"] for r in rows} == {"unchecked"}
    assert {r["verdict"] for r in rows} == {"accept"}


def test_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--pass", "secret", "--vip", "192.0.2.10", str(UCARP_PCAP))
    assert code == 0
    lines = out.splitlines()
    packet_lines = [line for line in lines if line.startswith("#")]
    assert len(packet_lines) == 10
    assert packet_lines[0].startswith("#3 192.0.2.1 -> 224.0.0.18")
    assert "counter 94ad2ee7182ab5e3" in packet_lines[0]
    assert all(line.endswith("-> accept") for line in packet_lines)
    assert "22 frames, 10 protocol-112 packets: 10 carp, 0 vrrp, 0 other" in lines
    assert "verdicts: accept 10" in lines


def test_human_output_says_hmac_unchecked(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(UCARP_PCAP))
    assert code == 0
    assert "accept (HMAC unchecked)" in out
    assert "HMAC unchecked (no --vip)" in out


# --- bad files ---------------------------------------------------------------------------------


def test_not_a_capture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("hello, this is not a capture\n")
    code, out, err = run(capsys, str(bogus))
    assert code == 2
    assert str(bogus) in err and "not a pcap" in err
    assert out == ""


@pytest.mark.parametrize("content", [b"", b"\xa1\xb2", b"\xd4\xc3\xb2\xa1\x02\x00"])
def test_empty_or_cut_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    path = tmp_path / "cut.pcap"
    path.write_bytes(content)
    code, _, err = run(capsys, str(path))
    assert code == 2
    assert str(path) in err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, str(tmp_path / "nope.pcap"))
    assert code == 2
    assert "nope.pcap" in err


def test_unsupported_link_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_pcap(tmp_path / "wifi.pcap", [b"\x00" * 30], linktype=105)
    code, _, err = run(capsys, str(path))
    assert code == 2
    assert "link type 105" in err


def test_truncated_capture_keeps_what_it_has(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = UCARP_PCAP.read_bytes()
    argv = ["--json", "--pass", "secret", "--vip", "192.0.2.10"]
    # the last record (16-byte header + 42-byte ARP frame) cut inside its header
    cut_header = tmp_path / "cut-header.pcap"
    cut_header.write_bytes(data[:-50])
    code, out, err = run(capsys, *argv, str(cut_header))
    assert code == 0
    assert [json.loads(line)["verdict"] for line in out.splitlines()] == ["accept"] * 10
    assert "truncated after 21 frames" in err and str(cut_header) in err
    # the last advertisement's frame cut short: 50 of its 70 bytes remain, less than its IP
    # length says, so ip_input would drop it
    cut_data = tmp_path / "cut-data.pcap"
    cut_data.write_bytes(data[: -58 - 20])
    code, out, _ = run(capsys, *argv, str(cut_data))
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["verdict"] for r in rows] == ["accept"] * 9 + ["ipdrop"]
    assert rows[-1]["ip_drop"] == "tooshort"


# --- formats and link types --------------------------------------------------------------------


def test_pcapng(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "adv.pcapng"
    with path.open("wb") as stream:
        writer = dpkt.pcapng.Writer(stream)
        writer.writepkt(b"\x00" * 20, ts=1.0)
        writer.writepkt(eth4(build_ipv4(SRC4, GROUP4, advert().pack(), 1)), ts=2.0)
    rows = run_json(capsys, "--pass", "secret", "--vip", "192.0.2.10", str(path))
    assert [(r["index"], r["verdict"], r["hmac"]) for r in rows] == [(1, "accept", "ok")]


def test_linux_cooked_sll(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ip = build_ipv4(SRC4, GROUP4, advert().pack(), 1)
    sll = (0).to_bytes(2, "big") + (1).to_bytes(2, "big") + (6).to_bytes(2, "big")
    sll += SRC_MAC + b"\0\0" + (0x0800).to_bytes(2, "big")
    path = write_pcap(tmp_path / "sll.pcap", [sll + ip], linktype=113)
    rows = run_json(capsys, "--pass", "secret", "--vip", "192.0.2.10", str(path))
    assert [(r["kind"], r["verdict"]) for r in rows] == [("carp", "accept")]


def test_linux_cooked_sll2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ip = build_ipv4(SRC4, GROUP4, advert().pack(), 1)
    sll2 = (0x0800).to_bytes(2, "big") + b"\0\0" + (3).to_bytes(4, "big")
    sll2 += (1).to_bytes(2, "big") + bytes((2, 6)) + SRC_MAC + b"\0\0"
    assert len(sll2) == 20
    path = write_pcap(tmp_path / "sll2.pcap", [sll2 + ip], linktype=276)
    rows = run_json(capsys, "--pass", "secret", "--vip", "192.0.2.10", str(path))
    assert [(r["kind"], r["verdict"]) for r in rows] == [("carp", "accept")]


def test_vlan_tagged_frames(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ip = build_ipv4(SRC4, GROUP4, advert().pack(), 1)
    tagged = MAC4 + SRC_MAC + b"\x81\x00\x00\x0a" + b"\x08\x00" + ip
    qinq = MAC4 + SRC_MAC + b"\x88\xa8\x00\x64" + b"\x81\x00\x00\x0a" + b"\x08\x00" + ip
    path = write_pcap(tmp_path / "vlan.pcap", [tagged, qinq])
    rows = run_json(capsys, "--pass", "secret", "--vip", "192.0.2.10", str(path))
    assert [r["verdict"] for r in rows] == ["accept", "accept"]


def test_ipv6_advertisement(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    v4, v6 = (IPv4Address("192.168.1.10"),), (IPv6Address("2001:db8::10"),)
    hdr = advert("mekmitasdigoat", 1, v4, v6).pack()
    frame = build_frame(MAC6, SRC_MAC, 0x86DD, build_ipv6(IPv6Address("fe80::1"), hdr))
    path = write_pcap(tmp_path / "v6.pcap", [frame])
    argv = ["--pass", "mekmitasdigoat", "--vip", "192.168.1.10", "--vip", "2001:db8::10"]
    rows = run_json(capsys, *argv, str(path))
    assert [(r["af"], r["src"], r["dst"], r["verdict"]) for r in rows] == [
        (6, "fe80::1", "ff02::12", "accept")
    ]
    # the IPv6 address takes part in the HMAC
    rows = run_json(capsys, "--pass", "mekmitasdigoat", "--vip", "192.168.1.10", str(path))
    assert rows[0]["verdict"] == "badauth"


def test_vip_without_pass_uses_the_zero_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_pcap(tmp_path / "nopass.pcap", [eth4(ipv4(advert("").pack()))])
    assert run_json(capsys, "--vip", "192.0.2.10", str(path))[0]["verdict"] == "accept"
    assert run_json(capsys, "--pass", "x", "--vip", "192.0.2.10", str(path))[0]["hmac"] == "bad"


def test_bad_vip_argument(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["decode", "--vip", "not-an-address", str(UCARP_PCAP)])
    assert exc.value.code == 2
    assert "not an IP address" in capsys.readouterr().err


# --- every verdict -----------------------------------------------------------------------------


def test_each_rejection_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = advert().pack()
    bad_sum = bytearray(good)
    bad_sum[2] ^= 1
    frames = [
        eth4(ipv4(good)),  # 0 accept
        eth4(ipv4(good, ttl=64)),  # 1 badttl
        eth4(ipv4(good[:30])),  # 2 badlen
        eth4(ipv4(bytes(bad_sum))),  # 3 badsum
        eth4(ipv4(advert(version=3).pack())),  # 4 badver
        eth4(ipv4(advert("other").pack())),  # 5 badauth
        eth4(ipv4(good, proto=17)),  # 6 not protocol 112: not listed
        build_frame(MAC4, SRC_MAC, 0x0806, bytes(28)),  # 7 ARP: not listed
        eth4(ipv4(good)[:12]),  # 8 IPv4 header cut: the IP layer drops it
    ]
    path = write_pcap(tmp_path / "mixed.pcap", frames)
    rows = run_json(capsys, "--pass", "secret", "--vip", "192.0.2.10", str(path))
    got = {r["index"]: r["verdict"] for r in rows}
    assert got == {
        0: "accept",
        1: "badttl",
        2: "badlen",
        3: "badsum",
        4: "badver",
        5: "badauth",
        8: "ipdrop",
    }
    assert [r["ip_drop"] for r in rows] == [None] * 6 + ["toosmall"]
    by_index = {r["index"]: r for r in rows}
    assert by_index[1]["ttl"] == 64
    assert by_index[3]["checksum_ok"] is False
    assert by_index[2]["vhid"] is None  # no 36 bytes to show
    assert by_index[4]["kind"] == "other" and by_index[4]["version"] == 3
    code, out, _ = run(capsys, "--pass", "secret", "--vip", "192.0.2.10", str(path))
    assert code == 0
    assert "9 frames, 7 protocol-112 packets" in out
    assert "badttl 1" in out and "badsum 1" in out


# --- CARP vs VRRP ------------------------------------------------------------------------------


def test_vrrp2_is_recognised(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_pcap(tmp_path / "vrrp.pcap", [eth4(ipv4(vrrp2(count=2)))])
    rows = run_json(capsys, "--pass", "secret", "--vip", "192.0.2.10", str(path))
    assert len(rows) == 1
    row = rows[0]
    assert row["kind"] == "vrrp"
    assert row["verdict"] == "badlen"  # 24 bytes: what a carp(4) host would count
    assert row["vrrp"]["version"] == 2
    assert row["vrrp"]["addresses"] == ["192.0.2.10", "192.0.2.11"]
    assert row["vrrp"]["checksum_ok"] is True
    code, out, _ = run(capsys, str(path))
    assert code == 0
    assert "VRRPv2 vrid 1 prio 100" in out


def test_vrrp3_ipv6_is_recognised() -> None:
    src, dst = IPv6Address("fe80::1"), IPv6Address("ff02::12")
    body = bytearray(bytes((0x31, 7, 200, 1, 0, 100, 0, 0)) + IPv6Address("2001:db8::7").packed)
    pseudo = src.packed + dst.packed + len(body).to_bytes(4, "big") + bytes((0, 0, 0, 112))
    body[6:8] = inet_checksum(pseudo + bytes(body)).to_bytes(2, "big")
    kind, vrrp = classify(bytes(body), 6, src.packed, dst.packed)
    assert kind == "vrrp" and vrrp is not None
    assert (vrrp.version, vrrp.vrid, vrrp.priority, vrrp.adver_int) == (3, 7, 200, 100)
    assert vrrp.checksum_ok
    assert vrrp.addresses == ("2001:db8::7",)


def test_vrrp2_with_five_addresses_is_not_mistaken_for_carp() -> None:
    body = vrrp2(count=5)  # 36 bytes: both layouts fit; authlen (count) 5 is not CARP's 7
    assert len(body) == 36
    kind, _ = classify(body, 4, SRC4.packed, GROUP4.packed)
    assert kind == "vrrp"


def test_carp_with_bad_checksum_stays_carp() -> None:
    body = bytearray(advert().pack())
    body[7] ^= 0xFF
    assert classify(bytes(body), 4, SRC4.packed, GROUP4.packed)[0] == "carp"


def test_carp_header_with_wrong_version_is_other() -> None:
    body = advert(version=1).pack()
    assert classify(body, 4, SRC4.packed, GROUP4.packed)[0] == "other"


def test_decode_frame_ignores_non_ip() -> None:
    assert decode_frame(b"\x00" * 60, 1, 0, 0.0, None) is None
    assert decode_frame(b"", 113, 0, 0.0, None) is None
    assert decode_frame(b"\x45", 101, 0, 0.0, None) is None
    assert decode_frame(eth4(ipv4(advert().pack())), 105, 0, 0.0, None) is None


def test_capture_without_protocol_112(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_pcap(tmp_path / "arp.pcap", [build_frame(MAC4, SRC_MAC, 0x0806, bytes(28))])
    code, out, _ = run(capsys, str(path))
    assert code == 0
    assert out.splitlines()[0] == "1 frames, 0 protocol-112 packets: 0 carp, 0 vrrp, 0 other"
    assert "verdicts:" not in out
    assert run_json(capsys, str(path)) == []


# --- the IP layer before carp ----------------------------------------------------------------


def fix4(packet: bytes | bytearray) -> bytes:
    raw = bytearray(packet)
    raw[10:12] = b"\0\0"
    raw[10:12] = inet_checksum(bytes(raw[:20])).to_bytes(2, "big")
    return bytes(raw)


def eth6(ip: bytes) -> bytes:
    return build_frame(MAC6, SRC_MAC, 0x86DD, ip)


def ipv6_with(kinds_and_bodies: list[tuple[int, bytes]]) -> bytes:
    """An IPv6 advertisement behind extension headers (kind, bytes after next header/length)."""
    packet = build_ipv6(IPv6Address("fe80::1"), advert().pack())
    kinds = [kind for kind, _ in kinds_and_bodies] + [112]
    chain = b"".join(
        bytes((nxt, (len(body) + 2) // 8 - 1)) + body
        for (_, body), nxt in zip(kinds_and_bodies, kinds[1:], strict=True)
    )
    fixed = bytearray(packet[:40])
    fixed[6] = kinds[0]
    fixed[4:6] = (len(chain) + 36).to_bytes(2, "big")
    return bytes(fixed) + chain + packet[40:]


def test_ip_layer_drops_are_reported_with_their_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = advert().pack()
    bad_ip_sum = bytearray(ipv4(good))
    bad_ip_sum[10] ^= 0x10
    fragment = bytearray(ipv4(good))
    fragment[6] = 0x20  # MF
    padded = eth4(ipv4(good)) + bytes(12)
    frames = [
        eth4(bytes(bad_ip_sum)),  # 0
        eth4(fix4(fragment)),  # 1
        eth4(build_ipv4(IPv4Address("224.0.0.9"), GROUP4, good, 1)),  # 2 multicast source
        eth4(build_ipv4(SRC4, IPv4Address("198.51.100.77"), good, 1)),  # 3 not ours
        eth4(build_ipv4(SRC4, IPv4Address("192.0.2.1"), good, 1)),  # 4 ours (--local)
        padded,  # 5 Ethernet padding after the IP length
        eth6(ipv6_with([(0, bytes((5, 2, 0, 0, 1, 0))), (60, bytes((1, 4, 0, 0, 0, 0)))])),  # 6
        eth6(ipv6_with([(44, bytes(6))])),  # 7 a fragment header
        eth6(ipv6_with([(43, bytes((0, 1, 0, 0, 0, 0)))])),  # 8 RH0
    ]
    path = write_pcap(tmp_path / "ip.pcap", frames)
    argv = ["--pass", "secret", "--vip", "192.0.2.10", "--local", "192.0.2.1"]
    rows = run_json(capsys, *argv, str(path))
    got = {r["index"]: (r["verdict"], r["ip_drop"]) for r in rows}
    assert got == {
        0: ("ipdrop", "badsum"),
        1: ("ipdrop", "fragment"),
        2: ("ipdrop", "badsrc"),
        3: ("ipdrop", "notours"),
        4: ("accept", None),
        5: ("accept", None),
        6: ("accept", None),
        7: ("ipdrop", "fragment"),
        8: ("ipdrop", "badoptions"),
    }
    by_index = {r["index"]: r for r in rows}
    assert "checksum" in by_index[0]["reason"] and by_index[4]["reason"] is None
    assert by_index[6]["vhid"] == 1 and by_index[6]["hmac"] == "ok"
    assert by_index[0]["vhid"] == 1  # the CARP header is still shown
    assert all(r["dst_checked"] for r in rows)
    code, out, _ = run(capsys, *argv, str(path))
    assert code == 0
    lines = out.splitlines()
    assert lines[1].endswith("-> ipdrop:fragment (a fragment: carp never reassembles)")
    assert "ipdrop:fragment 2" in lines[-1] and "ipdrop:notours 1" in lines[-1]
    assert "accept 3" in lines[-1]


def test_destination_unchecked_without_local(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = [
        eth4(build_ipv4(SRC4, IPv4Address("198.51.100.77"), advert().pack(), 1)),
        eth4(build_ipv4(SRC4, GROUP4, advert().pack(), 1)),
    ]
    path = write_pcap(tmp_path / "unicast.pcap", frames)
    rows = run_json(capsys, "--vip", "192.0.2.10", "--pass", "secret", str(path))
    assert [(r["verdict"], r["dst_checked"]) for r in rows] == [("accept", False)] * 2
    code, out, _ = run(capsys, "--vip", "192.0.2.10", "--pass", "secret", str(path))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].endswith("-> accept (destination unchecked)")
    assert lines[1].endswith("-> accept")  # 224.0.0.18 is always ours
    assert any(line.startswith("destination unchecked (no --local)") for line in lines)
    # a multicast --local is a joined group (a multicast carppeer); other groups are not ours
    group = IPv4Address("239.1.1.1")
    frames = [eth4(build_ipv4(SRC4, g, advert().pack(), 1)) for g in (group, GROUP4)]
    frames.append(eth4(build_ipv4(SRC4, IPv4Address("239.1.1.2"), advert().pack(), 1)))
    path = write_pcap(tmp_path / "groups.pcap", frames)
    rows = run_json(capsys, "--local", "239.1.1.1", str(path))
    assert [r["ip_drop"] for r in rows] == [None, None, "notours"]


def test_every_ip_drop_has_a_reason_text() -> None:
    from carp.wire import IpDrop
    from vswitch.decode import IP_DROP_TEXT

    assert set(IP_DROP_TEXT) == set(IpDrop)
