"""carp.auth: HMAC vectors of protocol.md §2.6, the ucarp capture, the key rules, inner_words."""

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import dpkt
import pytest

from carp.auth import HmacContexts, carp_key, inner_words, is_scope_embed
from carp.wire import Verdict, parse_ip

COUNTER = bytes.fromhex("0123456789abcdef")
# a copy of shared/vectors/ucarp-vhid1-pass-secret.pcap (see data/README.md)
UCARP_PCAP = Path(__file__).resolve().parent / "data" / "ucarp-vhid1-pass-secret.pcap"


def contexts(passphrase: str, vhid: int, v4: Iterable[str], v6: Iterable[str] = ()) -> HmacContexts:
    return HmacContexts(
        carp_key(passphrase),
        vhid,
        [IPv4Address(a) for a in v4],
        [IPv6Address(a) for a in v6],
    )


@pytest.mark.parametrize(
    ("passphrase", "vhid", "v4", "v6", "expected"),
    [
        pytest.param(
            "mekmitasdigoat",
            1,
            ["192.168.1.10"],
            [],
            "4a56e25fb9b79c9940542d9b83e21d4eaf46ae9a",
            id="1",
        ),
        pytest.param(
            "", 1, ["192.168.1.10"], [], "06c4c283f4a0bd931d91d02b5134925200aa58e5", id="2"
        ),
        pytest.param(
            "secret",
            42,
            ["10.0.0.2", "10.0.0.1", "192.0.2.1"],
            [],
            "ee05bc6e02df01936541e5f10a76e3d059f7e442",
            id="3-unsorted",
        ),
        pytest.param(
            "secret",
            42,
            ["10.0.0.1"],
            ["2001:db8::1", "fe80::200:5eff:fe00:12a"],
            "2635b5d20bf118b93167dbe101792b337bc58ca9",
            id="4a-nov6ll",
        ),
        pytest.param(
            "mekmitasdigoat",
            1,
            ["192.168.1.10"],
            ["2001:db8::10"],
            "927cf9c34650c8bb3a94de113d997de6e05c7d97",
            id="5",
        ),
    ],
)
def test_vectors_generate(
    passphrase: str, vhid: int, v4: list[str], v6: list[str], expected: str
) -> None:
    ctx = contexts(passphrase, vhid, v4, v6)
    md = bytes.fromhex(expected)
    assert ctx.generate(COUNTER) == md
    assert ctx.verify(COUNTER, md)


def test_vector_4b_orig_is_accepted_but_not_sent() -> None:
    ctx = contexts("secret", 42, ["10.0.0.1"], ["2001:db8::1", "fe80::200:5eff:fe00:12a"])
    orig = bytes.fromhex("7d6897a97e7f3fbd4c5b3a29b7a4d792a85a51dd")
    assert ctx.generate_orig(COUNTER) == orig
    assert ctx.generate(COUNTER) != orig
    assert ctx.verify(COUNTER, orig)


def test_vector_4b_orig_with_scope_id_written() -> None:
    ctx = contexts("secret", 42, ["10.0.0.1"], ["2001:db8::1", "fe80::200:5eff:fe00:12a%carp0"])
    assert ctx.generate_orig(COUNTER).hex() == "7d6897a97e7f3fbd4c5b3a29b7a4d792a85a51dd"


def test_vector_v1_ucarp() -> None:
    ctx = contexts("secret", 1, ["192.0.2.10"])
    counter = bytes.fromhex("994c2cffdc92efe7")
    assert ctx.generate(counter).hex() == "1dc570fab040ef5e2b52c692f68cae7aee71851b"


def test_verify_rejects() -> None:
    ctx = contexts("mekmitasdigoat", 1, ["192.168.1.10"])
    md = ctx.generate(COUNTER)
    assert not ctx.verify(COUNTER, bytes(20))
    assert not ctx.verify(COUNTER, md[:-1] + bytes([md[-1] ^ 1]))
    assert not ctx.verify(bytes(8), md)  # the counter is covered
    assert not contexts("mekmitasdigoat", 2, ["192.168.1.10"]).verify(COUNTER, md)
    assert not contexts("mekmitasdigoat", 1, ["192.168.1.11"]).verify(COUNTER, md)
    assert not contexts("wrong", 1, ["192.168.1.10"]).verify(COUNTER, md)
    extra = contexts("mekmitasdigoat", 1, ["192.168.1.10"], ["2001:db8::10"])
    assert not extra.verify(COUNTER, md)  # non-link-local IPv6 set must match


def test_link_local_only_difference_still_verifies() -> None:
    # NOV6LL skips link-locals, so peers whose link-locals differ still agree (§2.3)
    sender = contexts("secret", 5, ["192.0.2.10"], ["fe80::1"])
    receiver = contexts("secret", 5, ["192.0.2.10"], ["fe80::2"])
    assert receiver.verify(COUNTER, sender.generate(COUNTER))
    assert sender.generate(COUNTER) == contexts("secret", 5, ["192.0.2.10"]).generate(COUNTER)


def test_address_order_and_duplicates_do_not_matter() -> None:
    a = contexts("k", 9, ["192.0.2.3", "192.0.2.1", "192.0.2.2"], ["2001:db8::2", "2001:db8::1"])
    b = contexts("k", 9, ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.1"], ["2001:db8::1"] * 2)
    c = contexts("k", 9, ["192.0.2.1", "192.0.2.2", "192.0.2.3"], ["2001:db8::2", "2001:db8::1"])
    assert a.generate(COUNTER) == c.generate(COUNTER)
    assert b.generate(COUNTER) != c.generate(COUNTER)  # b lacks 2001:db8::2
    d = contexts("k", 9, ["192.0.2.2", "192.0.2.1", "192.0.2.2", "192.0.2.3"], ["2001:db8::2"])
    e = contexts("k", 9, ["192.0.2.1", "192.0.2.2", "192.0.2.3"], ["2001:db8::2"])
    assert d.generate(COUNTER) == e.generate(COUNTER)


def test_ipv4_sorted_numerically_not_textually() -> None:
    numeric = contexts("k", 1, ["10.0.0.9", "10.0.0.10"])
    # an independent HMAC over the numerically sorted message
    import hashlib
    import hmac as std_hmac

    msg = bytes((2, 1, 1)) + bytes((10, 0, 0, 9, 10, 0, 0, 10)) + COUNTER
    assert numeric.generate(COUNTER) == std_hmac.new(b"k", msg, hashlib.sha1).digest()


def test_extreme_addresses_are_never_hashed() -> None:
    plain = contexts("k", 1, ["192.0.2.1"], ["2001:db8::1"])
    all_ones = ":".join(["ffff"] * 8)
    extremes = contexts(
        "k", 1, ["0.0.0.0", "192.0.2.1", "255.255.255.255"], ["::", "2001:db8::1", all_ones]
    )
    assert plain.generate(COUNTER) == extremes.generate(COUNTER)
    assert plain.generate_orig(COUNTER) == extremes.generate_orig(COUNTER)


def test_custom_lladdr_changes_the_hmac() -> None:
    key = carp_key("k")
    v4 = [IPv4Address("192.0.2.1")]
    plain = HmacContexts(key, 1, v4, [])
    with_mac = HmacContexts(key, 1, v4, [], lladdr=bytes.fromhex("020000000001"))
    assert plain.generate(COUNTER) != with_mac.generate(COUNTER)
    assert with_mac.verify(COUNTER, with_mac.generate(COUNTER))

    import hashlib
    import hmac as std_hmac

    msg = bytes((2, 1)) + bytes.fromhex("020000000001") + bytes((1, 192, 0, 2, 1)) + COUNTER
    assert with_mac.generate(COUNTER) == std_hmac.new(b"k", msg, hashlib.sha1).digest()


@pytest.mark.parametrize(
    ("address", "scoped"),
    [
        ("fe80::1", True),
        ("febf::1", True),
        ("fec0::1", False),
        ("ff02::1", True),
        ("ff12::1", True),
        ("ff01::1", True),
        ("ff05::1", False),
        ("2001:db8::1", False),
    ],
)
def test_scope_embed(address: str, scoped: bool) -> None:
    assert is_scope_embed(IPv6Address(address)) is scoped


# --- key ---------------------------------------------------------------------------------------


def test_key_is_first_19_bytes_zero_padded() -> None:
    assert carp_key("mekmitasdigoat") == b"mekmitasdigoat".ljust(20, b"\0")
    assert carp_key("a" * 25) == b"a" * 19 + b"\0"
    assert len(carp_key("a" * 25)) == 20


def test_key_no_pass_is_20_zero_bytes() -> None:
    assert carp_key("") == bytes(20)
    assert carp_key(b"") == bytes(20)


def test_key_bytes_and_str_agree_and_nul_ends_it() -> None:
    assert carp_key("pässword") == carp_key("pässword".encode())
    assert carp_key(b"abc\0def") == carp_key("abc")


def test_overlong_raw_key_is_refused() -> None:
    with pytest.raises(ValueError):
        HmacContexts(b"k" * 65, 1, [IPv4Address("192.0.2.1")], [])


def test_key_truncation_shows_in_the_hmac() -> None:
    nineteen = "0123456789abcdefghi"
    longer = contexts(nineteen + "XYZ", 1, ["192.0.2.1"]).generate(COUNTER)
    assert longer == contexts(nineteen, 1, ["192.0.2.1"]).generate(COUNTER)
    assert longer != contexts(nineteen[:18], 1, ["192.0.2.1"]).generate(COUNTER)


# --- the ucarp capture -------------------------------------------------------------------------


def _ucarp_adverts() -> list[bytes]:
    with UCARP_PCAP.open("rb") as stream:
        frames = [bytes(buf) for _ts, buf in dpkt.pcap.Reader(stream)]
    return [f[14:] for f in frames if f[12:14] == b"\x08\x00" and f[23] == 112]


def test_every_ucarp_advertisement_verifies() -> None:
    adverts = _ucarp_adverts()
    assert len(adverts) == 10
    ctx = contexts("secret", 1, ["192.0.2.10"])
    wrong = contexts("wrong", 1, ["192.0.2.10"])
    for packet in adverts:
        parsed = parse_ip(packet)
        assert parsed.verdict is Verdict.ACCEPT
        assert parsed.header is not None
        assert ctx.verify(parsed.header.counter, parsed.header.md)
        assert ctx.generate(parsed.header.counter) == parsed.header.md
        assert not wrong.verify(parsed.header.counter, parsed.header.md)


def test_ucarp_frame_4_documented_values() -> None:
    parsed = parse_ip(_ucarp_adverts()[0])
    assert parsed.header is not None
    assert parsed.header.counter.hex() == "94ad2ee7182ab5e3"
    assert parsed.header.md.hex() == "1979780ee3b987c168f37ec4d4d8f58984ae8969"


# --- inner_words (ARP-balancing hash key, §6.8) ------------------------------------------------

_M = 0xFFFFFFFF


def _reference_carp_hash(inner: tuple[int, int], key: bytes, sha: bytes) -> int:
    """carp_hash of §6.8 (lookup2 mix), written here independently as the test oracle."""
    a = (0x9E3779B9 + int.from_bytes(sha[:4], "little")) & _M
    b = (inner[0] + sha[4] + (sha[5] << 8)) & _M
    c = (inner[1] + int.from_bytes(key[:4], "little")) & _M
    for sa, sb, sc in ((13, 8, 13), (12, 16, 5), (3, 10, 15)):
        a = ((a - b - c) & _M) ^ (c >> sa)
        b = ((b - c - a) & _M) ^ ((a << sb) & _M)
        c = ((c - a - b) & _M) ^ (b >> sc)
    return c


def test_inner_words_check_value() -> None:
    key = carp_key("mekmitasdigoat")
    inner = inner_words(key)
    assert _reference_carp_hash(inner, key, bytes.fromhex("001122334455")) == 0x90793861


def test_inner_words_are_digest_words_little_endian() -> None:
    import hashlib

    key = carp_key("secret")
    digest = hashlib.sha1(bytes(b ^ 0x36 for b in key.ljust(64, b"\0")) + b"\x02\x01").digest()
    w = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    assert inner_words(key) == (w[0] ^ w[1], w[2] ^ w[3])
    assert inner_words(key) != inner_words(carp_key("secreT"))
