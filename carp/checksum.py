"""RFC 1071 Internet checksum (in_cksum), used for the CARP header and the IPv4 header."""

import struct


def inet_checksum(data: bytes) -> int:
    """The 16-bit one's-complement of the one's-complement sum of `data` (RFC 1071).

    An odd trailing byte is padded with a zero byte. Over data that already holds a correct
    checksum the result is 0, which is how carp(4) verifies a received header.
    """
    if len(data) % 2:
        data = data + b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
