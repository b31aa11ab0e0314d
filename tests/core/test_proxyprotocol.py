"""The PROXY protocol parser, sans I/O: examples, every split, and fuzzed bytes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fwxtwisted.address import Address
from fwxtwisted.net.proxyprotocol import (
    V1_MAX_LENGTH,
    V2_SIGNATURE,
    HeaderParser,
    ProxyHeader,
    ProxyHeaderError,
    packV2,
)

CLIENT = Address("192.0.2.7", 40001)
VIP = Address("198.51.100.1", 21)


def parseAll(data: bytes, chunks: list[int] | None = None) -> tuple[ProxyHeader | None, bytes]:
    """Feed C{data} in pieces (the sizes in C{chunks}, then the rest)."""
    parser = HeaderParser()
    offset = 0
    for size in [*(chunks or []), len(data)]:
        piece = data[offset : offset + size]
        offset += len(piece)
        header = parser.feed(piece)
        if header is not None:
            return header, parser.rest + data[offset:]
        if offset >= len(data):
            break
    return None, b""


# v1


def test_v1_tcp4() -> None:
    header, rest = parseAll(b"PROXY TCP4 192.0.2.7 198.51.100.1 40001 21\r\nUSER x\r\n")
    assert header == ProxyHeader(1, local=False, source=CLIENT, destination=VIP)
    assert rest == b"USER x\r\n"


def test_v1_tcp6_and_mapped_ipv4_folded() -> None:
    header, _ = parseAll(b"PROXY TCP6 2001:db8::1 ::ffff:198.51.100.1 1 65535\r\n")
    assert header is not None
    assert header.source == Address("2001:db8::1", 1)
    assert header.destination == Address("198.51.100.1", 65535)


def test_v1_unknown_uses_the_real_peer() -> None:
    header, rest = parseAll(b"PROXY UNKNOWN\r\nhi")
    assert header == ProxyHeader(1, local=True)
    assert rest == b"hi"


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 192.0.2.7 198.51.100.1 40001\r\n",  # a field missing
        b"PROXY TCP4 192.0.2.7  198.51.100.1 40001 21\r\n",  # two spaces
        b"PROXY TCP4 2001:db8::1 198.51.100.1 40001 21\r\n",  # family mismatch
        b"PROXY TCP6 192.0.2.7 198.51.100.1 40001 21\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 040001 21\r\n",  # leading zero
        b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 21\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 -1 21\r\n",
        b"PROXY UDP4 192.0.2.7 198.51.100.1 40001 21\r\n",
        b"PROXY TCP4 192.0.2.300 198.51.100.1 40001 21\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 4\xc3\xa9 21\r\n",  # not ASCII
        b"PROXY TCP4 192.0.2.7 198.51.100.1 40001 21\n",  # bare LF
        b"PROXY " + b"x" * V1_MAX_LENGTH,  # no CRLF within 107 bytes
        b"PROXX TCP4",
        b"GET / HTTP/1.0\r\n\r\n",
        b"USER anonymous\r\n",
    ],
)
def test_v1_refused(line: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parseAll(line)


def test_v1_refused_at_the_first_wrong_byte() -> None:
    parser = HeaderParser()
    assert parser.feed(b"PRO") is None
    with pytest.raises(ProxyHeaderError, match="signature"):
        parser.feed(b"Z")


# v2


def test_v2_tcp4_with_tlvs() -> None:
    tlvs = ((0x01, b"ftp"), (0x04, b""), (0xE0, b"\x00" * 300))
    header, rest = parseAll(packV2(CLIENT, VIP, tlvs) + b"after")
    assert header == ProxyHeader(2, local=False, source=CLIENT, destination=VIP, tlvs=tlvs)
    assert rest == b"after"


def test_v2_tcp6() -> None:
    source, destination = Address("2001:db8::7", 5), Address("2001:db8::1", 21)
    header, _ = parseAll(packV2(source, destination))
    assert header is not None
    assert (header.source, header.destination, header.local) == (source, destination, False)


def test_v2_local_is_a_health_check() -> None:
    header, rest = parseAll(packV2(None, None) + b"x")
    assert header == ProxyHeader(2, local=True)
    assert rest == b"x"


def test_v2_local_with_addresses_ignores_them() -> None:
    block = bytes(12)
    data = V2_SIGNATURE + bytes([0x20, 0x11]) + struct.pack("!H", len(block)) + block
    header, _ = parseAll(data)
    assert header == ProxyHeader(2, local=True)


def v2(command: int, family: int, block: bytes, length: int | None = None) -> bytes:
    size = len(block) if length is None else length
    return V2_SIGNATURE + bytes([command, family]) + struct.pack("!H", size) + block


@pytest.mark.parametrize(
    "data",
    [
        v2(0x11, 0x11, bytes(11)),  # address block too short
        v2(0x21, 0x21, bytes(35)),
        v2(0x21, 0x11, bytes(12) + b"\x01\x00"),  # TLV cut in its length
        v2(0x21, 0x11, bytes(12) + b"\x01\x00\x05abc"),  # TLV overruns
        v2(0x22, 0x11, bytes(12)),  # command 2
        v2(0x31, 0x11, bytes(12)),  # version 3
        v2(0x21, 0x12, bytes(12)),  # UDP
        v2(0x21, 0x31, bytes(216)),  # UNIX
        v2(0x21, 0x41, bytes(12)),  # unknown family
        V2_SIGNATURE[:11] + b"X",
    ],
)
def test_v2_refused(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parseAll(data)


def test_v2_bad_version_refused_before_the_length_arrives() -> None:
    parser = HeaderParser()
    with pytest.raises(ProxyHeaderError, match="version"):
        parser.feed(V2_SIGNATURE + b"\x11")


def test_a_first_read_shorter_than_the_signature_waits() -> None:
    """twisted#8287: Twisted's wrapper drops a connection whose first read is short."""
    parser = HeaderParser()
    data = packV2(CLIENT, VIP)
    for byte in data[:-1]:
        assert parser.feed(bytes([byte])) is None
    header = parser.feed(data[-1:])
    assert header is not None and header.source == CLIENT


# Properties.

addresses4 = st.builds(
    Address,
    st.ip_addresses(v=4).map(str),
    st.integers(0, 65535),
)
addresses6 = st.builds(
    Address,
    st.ip_addresses(v=6).filter(lambda ip: ip.ipv4_mapped is None).map(str),
    st.integers(0, 65535),
)
tlvLists = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=4).map(tuple)


@st.composite
def headers(draw: st.DrawFn) -> tuple[bytes, ProxyHeader]:
    kind = draw(st.sampled_from(["v1", "v2", "local"]))
    family = draw(st.sampled_from([addresses4, addresses6]))
    source, destination = draw(family), draw(family)
    if kind == "v1":
        name = "TCP6" if source.isIPv6 else "TCP4"
        line = f"PROXY {name} {source.host} {destination.host} {source.port} {destination.port}"
        return line.encode() + b"\r\n", ProxyHeader(1, False, source, destination)
    tlvs = draw(tlvLists)
    if kind == "local":
        return packV2(None, None, tlvs), ProxyHeader(2, True, tlvs=tlvs)
    return packV2(source, destination, tlvs), ProxyHeader(2, False, source, destination, tlvs)


@settings(max_examples=150, deadline=None)
@given(headers(), st.lists(st.integers(0, 40), max_size=8), st.binary(max_size=20))
def test_any_header_split_anywhere_parses_the_same(
    made: tuple[bytes, ProxyHeader], chunks: list[int], after: bytes
) -> None:
    data, expected = made
    header, rest = parseAll(data + after, chunks)
    assert header == expected
    assert rest == after


def checkFeeding(data: bytes, chunks: list[int]) -> None:
    """Whatever the bytes: a header, a need for more, or ProxyHeaderError; never another
    exception, and never more buffered than the bounds allow."""
    parser = HeaderParser()
    offset = 0
    for size in [*chunks, len(data)]:
        piece = data[offset : offset + size]
        offset += len(piece)
        try:
            header = parser.feed(piece)
        except ProxyHeaderError as e:
            assert str(e)
            return
        if header is not None:
            assert header.local or header.source is not None
            return
        assert offset < V1_MAX_LENGTH or data[:1] == b"\r"
        if offset >= len(data):
            return


@settings(max_examples=250, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(0, 50), max_size=6))
def test_random_bytes_never_break_the_parser(data: bytes, chunks: list[int]) -> None:
    checkFeeding(data, chunks)


@settings(max_examples=250, deadline=None)
@given(st.binary(max_size=120), st.lists(st.integers(0, 50), max_size=6))
def test_random_bytes_after_a_signature_never_break_the_parser(
    data: bytes, chunks: list[int]
) -> None:
    checkFeeding(V2_SIGNATURE + data, chunks)
    checkFeeding(b"PROXY " + data, chunks)


@settings(max_examples=250, deadline=None)
@given(headers(), st.data())
def test_mutated_headers_never_break_the_parser(
    made: tuple[bytes, ProxyHeader], data: st.DataObject
) -> None:
    raw = bytearray(made[0])
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(raw) - 1))
        raw[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    checkFeeding(bytes(raw[:cut]), data.draw(st.lists(st.integers(0, 30), max_size=4)))
