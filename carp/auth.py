"""CARP authentication: the key (§2.1) and the HMAC-SHA1 contexts ORIG / NOV6LL (§2.2-2.3).

Built like carp_hmac_prepare_ctx in ip_carp.c: the inner SHA1 state after ipad and the fixed
part of the message is computed once per carpnode, and each packet only copies it and feeds the
8 counter bytes. hashlib's `copy()` plays the part of the kernel's bcopy of the SHA1_CTX.
"""

import hashlib
import hmac
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address

from carp.constants import CARP_ADVERTISEMENT, CARP_KEY_LEN, CARP_VERSION

_BLOCK = 64  # CARP_HMAC_PAD: the SHA1 block size
_IPAD = 0x36
_OPAD = 0x5C


def carp_key(passphrase: str | bytes) -> bytes:
    """sc_key: the passphrase strlcpy'd into 20 zeroed bytes (§2.1, ifconfig setcarp_passwd).

    So at most 19 bytes are kept, a NUL ends it early (strlcpy), and no passphrase gives 20 zero
    bytes. HMAC pads keys with zeros anyway, so the result equals the unpadded 19-byte key.
    """
    raw = passphrase.encode() if isinstance(passphrase, str) else passphrase
    raw = raw.split(b"\x00", 1)[0][: CARP_KEY_LEN - 1]
    return raw.ljust(CARP_KEY_LEN, b"\x00")


def _pad(key: bytes, byte: int) -> bytes:
    return bytes(b ^ byte for b in key.ljust(_BLOCK, b"\x00"))


def _inner_start(key: bytes) -> "hashlib._Hash":
    """SHA1 over ipad || 0x02 || 0x01: version and type as two bytes, not 0x21 (§2.2 steps 1-2)."""
    inner = hashlib.sha1(_pad(key, _IPAD))
    inner.update(bytes((CARP_VERSION, CARP_ADVERTISEMENT)))
    return inner


def _ascending(addresses: Iterable[bytes], width: int) -> list[bytes]:
    """Distinct addresses in ascending order, as the kernel's "smallest one above the last" loop.

    That loop starts strictly above all-zeros and stays strictly below all-ones, so those two
    values can never be hashed (§2.2 notes).
    """
    lowest, highest = b"\x00" * width, b"\xff" * width
    return sorted({a for a in addresses if lowest < a < highest})


def is_scope_embed(address: IPv6Address) -> bool:
    """IN6_IS_SCOPE_EMBED: link-local unicast, or interface-/link-local scoped multicast.

    The multicast test is on the scope nibble, as IN6_IS_ADDR_MC_LINKLOCAL/INTFACELOCAL do.
    """
    raw = address.packed
    if raw[0] == 0xFE and raw[1] & 0xC0 == 0x80:
        return True
    return raw[0] == 0xFF and raw[1] & 0x0F in (0x01, 0x02)


class HmacContexts:
    """The two precomputed inner contexts of one carpnode (carp_hmac_prepare_ctx) and its opad.

    `lladdr` is the carp interface MAC to hash after the type byte; pass it only in the rare case
    of §2.2 step 3 (this vhe is the leader, and the carp MAC is neither its virtual MAC nor the
    parent's real MAC). `v4`/`v6` are the receiver's own addresses, in any order. `key` is
    sc_key as `carp_key` gives it (the kernel pads it into a 64-byte block, never hashes it).
    """

    __slots__ = ("_nov6ll", "_orig", "_outer")

    def __init__(
        self,
        key: bytes,
        vhid: int,
        v4: Iterable[IPv4Address],
        v6: Iterable[IPv6Address],
        lladdr: bytes | None = None,
    ) -> None:
        if len(key) > _BLOCK:
            raise ValueError("a carp key is at most 20 bytes (carp_key)")
        prefix = (lladdr or b"") + bytes((vhid & 0xFF,))
        v4_part = b"".join(_ascending((a.packed for a in v4), 4))
        v6_all = list(v6)
        # HMAC_ORIG hashes scoped addresses with the embedded scope zeroed: the on-wire form,
        # which is what IPv6Address.packed already is
        orig_v6 = b"".join(_ascending((a.packed for a in v6_all), 16))
        nov6ll_v6 = b"".join(_ascending((a.packed for a in v6_all if not is_scope_embed(a)), 16))
        self._orig = _inner_start(key)
        self._orig.update(prefix + v4_part + orig_v6)
        self._nov6ll = _inner_start(key)
        self._nov6ll.update(prefix + v4_part + nov6ll_v6)
        self._outer = hashlib.sha1(_pad(key, _OPAD))

    def _finish(self, inner_ctx: "hashlib._Hash", counter: bytes) -> bytes:
        inner = inner_ctx.copy()
        inner.update(counter)  # the 8 counter bytes exactly as in the header (§2.2 step 7)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def generate(self, counter: bytes) -> bytes:
        """The md of an advertisement we send: always HMAC_NOV6LL (§2.3, carp_prepare_ad)."""
        return self._finish(self._nov6ll, counter)

    def generate_orig(self, counter: bytes) -> bytes:
        """The HMAC_ORIG variant (link-local addresses included), accepted on receive."""
        return self._finish(self._orig, counter)

    def verify(self, counter: bytes, md: bytes) -> bool:
        """carp_hmac_verify: try HMAC_ORIG, then HMAC_NOV6LL, each compared in constant time."""
        if hmac.compare_digest(self._finish(self._orig, counter), md):
            return True
        return hmac.compare_digest(self._finish(self._nov6ll, counter), md)


def inner_words(key: bytes) -> tuple[int, int]:
    """sc_hashkey of the ARP-balancing hash (§6.8): (hk0, hk1) = (w0 ^ w1, w2 ^ w3).

    ip_carp.c (rev 1.263-1.270, carp_hmac_prepare_ctx) copies the leader's SHA1 context after
    ipad || 0x02 || 0x01 and runs SHA1Final on the copy into `u_int32_t kmd[5]`; so w0..w3 are the
    first 16 bytes of the *digest* of those 66 bytes (not the raw intermediate state), read as
    host-order words. The reference is amd64, hence little-endian. This is the same for every
    vhid and address list: the hash key is taken before the vhid is hashed.
    balance.arp_hash(inner_words(key), key, sha) then gives carp_hash; pass `mekmitasdigoat`
    with sender MAC 00:11:22:33:44:55 gives 0x90793861.
    """
    digest = _inner_start(key).digest()
    w0, w1, w2, w3 = (int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4))
    return w0 ^ w1, w2 ^ w3
