"""Decode CARP/VRRP (IP protocol 112) packets in a pcap or pcapng capture and judge them.

For every IPv4/IPv6 packet carrying protocol 112 this says what it is (carp, vrrp or other), its
fields, whether its checksum holds, whether its HMAC holds (given the virtual addresses), and the
verdict a carp(4) host would reach: `accept` or the carpstats counter it would bump.

Kind, decided by the packet's own consistency (CARP and VRRPv2 share protocol 112 and byte 0x21):
* VRRPv2 layout: IPv4, version 2, type 1, a length of exactly 16 + 4 * count (count = byte 3,
  the number of addresses, at least 1), auth type 0..2.
* VRRPv3 layout: version 3, type 1, a length of exactly 8 + 4 * count (IPv4) or 8 + 16 * count
  (IPv6).
* CARP layout: at least 36 bytes; it is `carp` with version 2 and type 1, else `other`.
When both the CARP and a VRRP layout fit, the checksums decide (CARP's over 36 bytes without a
pseudo-header, VRRP's over the whole message, with the pseudo-header for v3); if both or neither
hold, 0x21 with authlen 7 (what carp(4) sends) says CARP, anything else VRRP. A packet fitting
no layout is `other`.

The verdict is what carp(4) would do whatever the kind (a VRRP packet reaching a carp host is
usually `badlen`), in the kernel's order. First `ipdrop` with its reason when OpenBSD's IP layer
would drop the packet before carp sees it (a broken or cut IP header, a bad IPv4 header checksum,
a bad source, a destination not ours, a fragment, a refused IPv6 option or routing header);
then badttl, badlen, badsum, badver, badauth. The destination is judged against --local (the
receiving carpdev's addresses and any multicast carppeer; the CARP groups always count); without
--local it is `unchecked`. The HMAC is checked with the key of --pass (no --pass: carp(4)'s
all-zero key) and the addresses of --vip; without --vip it is `unchecked` and the verdict is the
best one reachable without it. vhid matching needs a host's configuration and is not judged.
IPv6 advertisements behind hop-by-hop, routing or destination options headers are found.
"""

import argparse
import json
import struct
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, BinaryIO

import dpkt

from carp.auth import HmacContexts, carp_key
from carp.checksum import inet_checksum
from carp.constants import CARP_AUTHLEN, CARP_HEADER_LEN, ETH_P_IP, ETH_P_IPV6, IPPROTO_CARP
from carp.wire import (
    CARP_GROUPS,
    IPV6_HDRNESTLIMIT,
    CarpHeader,
    IpDrop,
    Receiver,
    Verdict,
    check_common,
    parse_ip,
    receiver_of,
)

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
VLAN_ETHERTYPES = frozenset({0x8100, 0x88A8, 0x9100})

PCAP_MAGICS = frozenset(
    {
        b"\xa1\xb2\xc3\xd4",
        b"\xd4\xc3\xb2\xa1",
        b"\xa1\xb2\x3c\x4d",
        b"\x4d\x3c\xb2\xa1",
        b"\xa1\xb2\xcd\x34",
        b"\x34\xcd\xb2\xa1",
    }
)
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"

HMAC_OK, HMAC_BAD, HMAC_UNCHECKED = "ok", "bad", "unchecked"
DECODE_FORMAT = 1  # "format" of a --json line: raised when a key changes meaning or goes away
CARP_GROUP_NAMES = frozenset(str(group) for group in CARP_GROUPS)

# why the IP layer drops a packet, with the OpenBSD counter it would bump
IP_DROP_TEXT = {
    IpDrop.TOOSMALL: "shorter than the IP header (ips_toosmall)",
    IpDrop.BADHLEN: "IPv4 header length below 20 or beyond the data (ips_badhlen)",
    IpDrop.BADSRC: "source multicast, broadcast, unspecified, loopback or mis-scoped",
    IpDrop.BADSUM: "IPv4 header checksum wrong (ips_badsum)",
    IpDrop.BADLEN: "IPv4 total length below the header length (ips_badlen)",
    IpDrop.TOOSHORT: "IP length beyond the bytes captured (ips_tooshort)",
    IpDrop.NOTOURS: "destination neither a CARP group nor a --local address (ips_notmember)",
    IpDrop.BADOPTIONS: "IPv6 option or routing header refused (ip6s_badoptions)",
    IpDrop.TOOMANYHDR: f"more than {IPV6_HDRNESTLIMIT} IPv6 headers (ip6s_toomanyhdr)",
    IpDrop.FRAGMENT: "a fragment: carp never reassembles",
}


class CaptureError(Exception):
    """The file cannot be read as a capture."""


@dataclass(frozen=True)
class Auth:
    """What the HMAC is checked against: the receiver's key and virtual addresses."""

    key: bytes
    v4: tuple[IPv4Address, ...] = ()
    v6: tuple[IPv6Address, ...] = ()
    contexts: dict[int, HmacContexts] = field(default_factory=dict, compare=False)

    @property
    def checkable(self) -> bool:
        return bool(self.v4 or self.v6)

    def verify(self, header: CarpHeader) -> bool:
        ctx = self.contexts.get(header.vhid)
        if ctx is None:
            ctx = HmacContexts(self.key, header.vhid, self.v4, self.v6)
            self.contexts[header.vhid] = ctx
        return ctx.verify(header.counter, header.md)


@dataclass(frozen=True)
class Vrrp:
    """The fields of a VRRP advertisement (RFC 3768 v2, RFC 5798 v3)."""

    version: int
    vrid: int
    priority: int
    count: int
    adver_int: int  # v2: seconds; v3: centiseconds
    auth_type: int | None  # v2 only
    addresses: tuple[str, ...]
    checksum_ok: bool


@dataclass(frozen=True)
class Report:
    """One protocol-112 packet of the capture."""

    index: int
    time: float
    kind: str  # carp | vrrp | other
    af: int
    src: str | None
    dst: str | None
    ttl: int
    header: CarpHeader | None  # the first 36 bytes read as CARP, when present
    checksum_ok: bool
    hmac: str
    verdict: Verdict
    vrrp: Vrrp | None = None
    length: int = 0  # bytes after the IP header(s)
    ip_drop: IpDrop | None = None  # why the IP layer drops it (verdict ipdrop)
    dst_checked: bool = False  # judged against --local

    @property
    def label(self) -> str:
        """The verdict, with the reason of an IP-layer drop: `ipdrop:fragment`."""
        return f"{self.verdict}:{self.ip_drop}" if self.ip_drop else str(self.verdict)

    @property
    def reason(self) -> str | None:
        return IP_DROP_TEXT[self.ip_drop] if self.ip_drop else None

    def as_json(self) -> dict[str, Any]:
        h = self.header
        out: dict[str, Any] = {
            "format": DECODE_FORMAT,  # "version" is the header's
            "index": self.index,
            "time": self.time,
            "kind": self.kind,
            "af": self.af,
            "src": self.src,
            "dst": self.dst,
            "ttl": self.ttl,
            "length": self.length,
            "version": h.version if h else None,
            "type": h.type if h else None,
            "vhid": h.vhid if h else None,
            "advbase": h.advbase if h else None,
            "advskew": h.advskew if h else None,
            "demote": h.demote if h else None,
            "authlen": h.authlen if h else None,
            "counter": h.counter.hex() if h else None,
            "md": h.md.hex() if h else None,
            "checksum_ok": self.checksum_ok,
            "hmac": self.hmac,
            "dst_checked": self.dst_checked,
            "verdict": str(self.verdict),
            "ip_drop": None if self.ip_drop is None else str(self.ip_drop),
            "reason": self.reason,
        }
        if self.vrrp is not None:
            v = self.vrrp
            out["vrrp"] = {
                "version": v.version,
                "vrid": v.vrid,
                "priority": v.priority,
                "count": v.count,
                "adver_int": v.adver_int,
                "auth_type": v.auth_type,
                "addresses": list(v.addresses),
                "checksum_ok": v.checksum_ok,
            }
        return out

    def human(self) -> str:
        head = f"#{self.index} {self.src or '?'} -> {self.dst or '?'} ttl {self.ttl}"
        if self.kind == "vrrp" and self.vrrp is not None:
            v = self.vrrp
            body = (
                f"VRRPv{v.version} vrid {v.vrid} prio {v.priority} adver {v.adver_int}"
                f" addrs {','.join(v.addresses)} cksum {'ok' if v.checksum_ok else 'bad'}"
            )
        elif self.header is not None:
            h = self.header
            name = "CARP" if self.kind == "carp" else f"other (v{h.version} type {h.type})"
            body = (
                f"{name} vhid {h.vhid} advbase {h.advbase} advskew {h.advskew}"
                f" demote {h.demote} counter {h.counter.hex()}"
                f" cksum {'ok' if self.checksum_ok else 'bad'} hmac {self.hmac}"
            )
        else:
            body = f"{self.kind} ({self.length} bytes, shorter than a CARP header)"
        verdict = self.label
        if self.reason is not None:
            verdict += f" ({self.reason})"
        elif self.verdict is Verdict.ACCEPT and self.unchecked:
            verdict += f" ({' and '.join(self.unchecked)} unchecked)"
        return f"{head} {body} -> {verdict}"

    @property
    def unchecked(self) -> list[str]:
        """What the verdict could not judge: the HMAC (no --vip), the destination (no --local,
        and neither 224.0.0.18 nor ff02::12)."""
        out = [] if self.hmac != HMAC_UNCHECKED else ["HMAC"]
        if not self.dst_checked and self.dst not in CARP_GROUP_NAMES:
            out.append("destination")
        return out


def _ip_end(packet: bytes, af: int) -> int:
    """Where the IP packet ends: its length field, bounded by the bytes captured."""
    if af == 4:
        return min(int.from_bytes(packet[2:4], "big"), len(packet))
    return min(40 + int.from_bytes(packet[4:6], "big"), len(packet))


def _vrrp(payload: bytes, af: int, src: bytes, dst: bytes) -> Vrrp | None:
    """Read `payload` as VRRP if its layout is self-consistent, else None."""
    if len(payload) < 8 or payload[0] & 0x0F != 1:
        return None
    version, count = payload[0] >> 4, payload[3]
    if version == 2 and af == 4:
        if count < 1 or len(payload) != 16 + 4 * count or payload[4] > 2:
            return None
        addrs = payload[8 : 8 + 4 * count]
        return Vrrp(
            version=2,
            vrid=payload[1],
            priority=payload[2],
            count=count,
            adver_int=payload[5],
            auth_type=payload[4],
            addresses=tuple(str(IPv4Address(addrs[i : i + 4])) for i in range(0, len(addrs), 4)),
            checksum_ok=inet_checksum(payload) == 0,
        )
    width = 4 if af == 4 else 16
    if version != 3 or len(payload) != 8 + width * count:
        return None
    # RFC 5798 5.2.8: the checksum covers a pseudo-header, as for UDP
    if af == 4:
        pseudo = src + dst + bytes((0, IPPROTO_CARP)) + len(payload).to_bytes(2, "big")
    else:
        pseudo = src + dst + len(payload).to_bytes(4, "big") + bytes((0, 0, 0, IPPROTO_CARP))
    addrs = payload[8:]
    make = IPv4Address if af == 4 else IPv6Address
    return Vrrp(
        version=3,
        vrid=payload[1],
        priority=payload[2],
        count=count,
        adver_int=int.from_bytes(payload[4:6], "big") & 0x0FFF,
        auth_type=None,
        addresses=tuple(str(make(addrs[i : i + width])) for i in range(0, len(addrs), width)),
        checksum_ok=inet_checksum(pseudo + payload) == 0,
    )


def classify(payload: bytes, af: int, src: bytes, dst: bytes) -> tuple[str, Vrrp | None]:
    """carp, vrrp or other, by the rules of the module docstring."""
    vrrp = _vrrp(payload, af, src, dst)
    carp_shaped = len(payload) >= CARP_HEADER_LEN
    if vrrp is not None and carp_shaped:
        carp_sum = inet_checksum(payload[:CARP_HEADER_LEN]) == 0
        if carp_sum != vrrp.checksum_ok:  # a checksum that holds one way only decides
            carp_shaped = carp_sum
        else:
            carp_shaped = payload[0] == 0x21 and payload[3] == CARP_AUTHLEN
    if vrrp is not None and not carp_shaped:
        return "vrrp", vrrp
    if carp_shaped and payload[0] == 0x21:  # version 2, type 1
        return "carp", None
    return "other", None


def decode_ip(
    packet: bytes, index: int, time: float, auth: Auth | None, receiver: Receiver | None = None
) -> Report | None:
    """Report on one IPv4/IPv6 packet; None unless it carries protocol 112. Never raises.

    `receiver`: the destinations taken as ours; None leaves the destination unchecked."""
    parsed = parse_ip(packet, receiver)
    if not parsed.carp:
        return None
    src, dst = parsed.src, parsed.dst
    payload = packet[parsed.offset : _ip_end(packet, parsed.af)] if parsed.offset else b""
    kind, vrrp = classify(
        payload, parsed.af, src.packed if src else b"", dst.packed if dst else b""
    )
    header = parsed.header
    hmac = HMAC_UNCHECKED
    verdict = parsed.verdict
    if header is not None and auth is not None and auth.checkable:
        hmac = HMAC_OK if auth.verify(header) else HMAC_BAD
    if verdict is Verdict.ACCEPT and header is not None:
        hmac_ok = None if hmac == HMAC_UNCHECKED else hmac == HMAC_OK
        verdict = check_common(header, hmac_ok)
    return Report(
        index=index,
        time=time,
        kind=kind,
        af=parsed.af,
        src=None if src is None else str(src),
        dst=None if dst is None else str(dst),
        ttl=parsed.ttl,
        header=header,
        checksum_ok=parsed.cksum_ok,
        hmac=hmac,
        verdict=verdict,
        vrrp=vrrp,
        length=len(payload),
        ip_drop=parsed.ip_drop,
        dst_checked=receiver is not None,
    )


def _strip_vlans(ethertype: int, data: bytes, offset: int) -> tuple[int, int]:
    while ethertype in VLAN_ETHERTYPES and offset + 4 <= len(data):
        ethertype = int.from_bytes(data[offset + 2 : offset + 4], "big")
        offset += 4
    return ethertype, offset


def ip_from_frame(frame: bytes, linktype: int) -> bytes | None:
    """The IPv4/IPv6 packet inside a captured frame, or None (802.1Q/QinQ tags are skipped)."""
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            return None
        ethertype, offset = _strip_vlans(int.from_bytes(frame[12:14], "big"), frame, 14)
    elif linktype == LINKTYPE_LINUX_SLL:
        if len(frame) < 16:
            return None
        ethertype, offset = _strip_vlans(int.from_bytes(frame[14:16], "big"), frame, 16)
    elif linktype == LINKTYPE_LINUX_SLL2:
        if len(frame) < 20:
            return None
        ethertype, offset = _strip_vlans(int.from_bytes(frame[0:2], "big"), frame, 20)
    elif linktype == LINKTYPE_RAW:
        return frame if frame[:1] and frame[0] >> 4 in (4, 6) else None
    else:
        return None
    if ethertype in (ETH_P_IP, ETH_P_IPV6):
        return frame[offset:]
    return None


def decode_frame(
    frame: bytes,
    linktype: int,
    index: int,
    time: float,
    auth: Auth | None,
    receiver: Receiver | None = None,
) -> Report | None:
    ip = ip_from_frame(frame, linktype)
    return None if ip is None else decode_ip(ip, index, time, auth, receiver)


SUPPORTED_LINKTYPES = frozenset(
    {LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2}
)


@dataclass
class Capture:
    linktype: int
    frames: Iterator[tuple[float, bytes]]
    truncated: list[str] = field(default_factory=list)


def open_capture(stream: BinaryIO) -> Capture:
    """A pcap or pcapng reader over `stream`; CaptureError if it is neither."""
    magic = stream.read(4)
    stream.seek(0)
    try:
        if magic in PCAP_MAGICS:
            reader: Any = dpkt.pcap.Reader(stream)
        elif magic == PCAPNG_MAGIC:
            reader = dpkt.pcapng.Reader(stream)
        else:
            raise CaptureError("not a pcap or pcapng capture")
        linktype = int(reader.datalink())
    except (ValueError, struct.error, dpkt.UnpackError) as exc:
        raise CaptureError(f"not a readable capture ({exc})") from exc
    if linktype not in SUPPORTED_LINKTYPES:
        raise CaptureError(f"unsupported link type {linktype}")
    capture = Capture(linktype, iter(()))

    def frames() -> Iterator[tuple[float, bytes]]:
        # a capture cut short (a writer killed mid-record) still yields what it has
        try:
            for ts, buf in reader:
                yield float(ts), bytes(buf)
        except (ValueError, struct.error, dpkt.UnpackError) as exc:
            capture.truncated.append(str(exc) or type(exc).__name__)

    capture.frames = frames()
    return capture


def _parse_vip(text: str) -> IPv4Address | IPv6Address:
    try:
        return ip_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from exc


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("file", metavar="FILE", help="a pcap or pcapng capture")
    parser.add_argument(
        "--pass",
        dest="passphrase",
        metavar="P",
        help="the carp passphrase (default: none, carp(4)'s all-zero key)",
    )
    parser.add_argument(
        "--vip",
        action="append",
        default=[],
        type=_parse_vip,
        metavar="ADDR",
        help="a virtual address of the carp interface (repeat for each); enables the HMAC check",
    )
    parser.add_argument(
        "--local",
        action="append",
        default=[],
        type=_parse_vip,
        metavar="ADDR",
        help="an address of the receiving carpdev, or a multicast carppeer it joined (repeat for"
        " each); enables the destination check (224.0.0.18 and ff02::12 always count)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def make_auth(passphrase: str | None, vips: Sequence[IPv4Address | IPv6Address]) -> Auth:
    return Auth(
        key=carp_key(passphrase or b""),
        v4=tuple(a for a in vips if isinstance(a, IPv4Address)),
        v6=tuple(a for a in vips if isinstance(a, IPv6Address)),
    )


def _summary(frames: int, reports: list[Report], auth: Auth) -> list[str]:
    kinds = Counter(r.kind for r in reports)
    verdicts = Counter(r.label for r in reports)
    lines = [
        f"{frames} frames, {len(reports)} protocol-112 packets: "
        f"{kinds['carp']} carp, {kinds['vrrp']} vrrp, {kinds['other']} other",
    ]
    if reports:
        lines.append("verdicts: " + ", ".join(f"{k} {n}" for k, n in sorted(verdicts.items())))
    if not auth.checkable:
        lines.append(
            "HMAC unchecked (no --vip): verdicts are the best reachable without it;"
            " give --vip (and --pass if a passphrase is set) to check it"
        )
    if any("destination" in r.unchecked for r in reports):
        lines.append(
            "destination unchecked (no --local): a unicast or other-group destination was taken"
            " as ours; give --local with the receiver's addresses (and any multicast carppeer)"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    auth = make_auth(args.passphrase, args.vip)
    receiver = receiver_of(args.local) if args.local else None  # None: destination unchecked
    try:
        with open(args.file, "rb") as stream:
            capture = open_capture(stream)
            reports: list[Report] = []
            frames = 0
            for index, (ts, frame) in enumerate(capture.frames):
                frames = index + 1
                report = decode_frame(frame, capture.linktype, index, ts, auth, receiver)
                if report is None:
                    continue
                reports.append(report)
                if args.json:
                    print(json.dumps(report.as_json()))
                else:
                    print(report.human())
    except OSError as exc:
        print(f"vswitch decode: {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except CaptureError as exc:
        print(f"vswitch decode: {args.file}: {exc}", file=sys.stderr)
        return 2
    for problem in capture.truncated:
        print(
            f"vswitch decode: {args.file}: capture truncated after {frames} frames ({problem})",
            file=sys.stderr,
        )
    if not args.json:
        for line in _summary(frames, reports, auth):
            print(line)
    return 0
