"""The PROXY protocol (HAProxy's, v1 and v2), sans I/O: a bounded incremental parser and
a v2 header packer.

A load balancer in TCP mode (HAProxy ``send-proxy-v2``, nginx stream ``proxy_protocol``,
AWS NLB) writes one header before the client's bytes naming the client's real address.
L{HeaderParser} takes the bytes as they arrive, split anywhere, and says once whether
they hold a valid header; it never needs more than L{V1_MAX_LENGTH} bytes to refuse a v1
header or 16 + the declared length for a v2 one, and every length inside a v2 header
(the address block, each TLV) is checked against the bytes there before it is used.

Spec: https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from fwxtwisted.address import Address

#: The twelve bytes every v2 header starts with.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
#: The longest v1 line, CRLF included (the spec's 107 bytes).
V1_MAX_LENGTH = 107

_V2_FIXED = 16
_LOCAL, _PROXY = 0x0, 0x1
_UNSPEC, _TCP4, _UDP4, _TCP6, _UDP6, _UNIX_STREAM, _UNIX_DGRAM = (
    0x00,
    0x11,
    0x12,
    0x21,
    0x22,
    0x31,
    0x32,
)
_ADDRESS_BLOCK = {_TCP4: 12, _UDP4: 12, _TCP6: 36, _UDP6: 36, _UNIX_STREAM: 216, _UNIX_DGRAM: 216}


class ProxyHeaderError(ValueError):
    """The bytes are not a valid PROXY protocol header (the message says why)."""


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed header.

    @ivar local: True for a v2 LOCAL command (the balancer's own connection, e.g. a
        health check), a v1 UNKNOWN line or a v2 PROXY with family UNSPEC: the
        connection's real endpoints are to be used, and C{source}/C{destination} are None.
    @ivar tlvs: the v2 type-length-value entries, in order (not interpreted).
    """

    version: int
    local: bool
    source: Address | None = None
    destination: Address | None = None
    tlvs: tuple[tuple[int, bytes], ...] = ()


class HeaderParser:
    """Feed it bytes until it returns a L{ProxyHeader}; then L{rest} holds what followed.

    L{feed} returns None while more bytes are needed and raises L{ProxyHeaderError} as
    soon as the bytes so far cannot start a valid header. After a header or an error it
    must not be fed again.
    """

    def __init__(self) -> None:
        self._buffer = b""
        #: The bytes received after the header (the client's first bytes).
        self.rest = b""

    def feed(self, data: bytes) -> ProxyHeader | None:
        buffer = self._buffer = self._buffer + data
        if buffer[:1] == b"P":
            return self._v1(buffer)
        if buffer[:1] == b"\r":
            return self._v2(buffer)
        if buffer:
            raise ProxyHeaderError("no PROXY protocol signature")
        return None

    def _v1(self, buffer: bytes) -> ProxyHeader | None:
        size = min(len(buffer), len(V1_PREFIX))
        if buffer[:size] != V1_PREFIX[:size]:
            raise ProxyHeaderError("no PROXY protocol signature")
        end = buffer.find(b"\r\n", 0, V1_MAX_LENGTH)
        if end < 0:
            if len(buffer) >= V1_MAX_LENGTH:
                raise ProxyHeaderError(f"v1 line longer than {V1_MAX_LENGTH} bytes")
            if b"\n" in buffer:
                raise ProxyHeaderError("v1 line not ended by CRLF")
            return None
        self.rest = buffer[end + 2 :]
        return parseV1Line(buffer[:end])

    def _v2(self, buffer: bytes) -> ProxyHeader | None:
        size = min(len(buffer), len(V2_SIGNATURE))
        if buffer[:size] != V2_SIGNATURE[:size]:
            raise ProxyHeaderError("no PROXY protocol signature")
        if len(buffer) < _V2_FIXED:
            # Check what the fixed part holds as soon as it is there.
            if len(buffer) > 12:
                _versionCommand(buffer[12])
            return None
        command = _versionCommand(buffer[12])
        family = buffer[13]
        (length,) = struct.unpack_from("!H", buffer, 14)
        if family != _UNSPEC and family not in _ADDRESS_BLOCK:
            raise ProxyHeaderError(f"v2 unknown address family 0x{family:02x}")
        if len(buffer) < _V2_FIXED + length:
            return None
        self.rest = buffer[_V2_FIXED + length :]
        return parseV2Block(command, family, buffer[_V2_FIXED : _V2_FIXED + length])


def _versionCommand(byte: int) -> int:
    if byte >> 4 != 2:
        raise ProxyHeaderError(f"v2 header of version {byte >> 4}")
    command = byte & 0x0F
    if command not in (_LOCAL, _PROXY):
        raise ProxyHeaderError(f"v2 unknown command {command}")
    return command


def parseV1Line(line: bytes) -> ProxyHeader:
    """A v1 line without its CRLF: C{PROXY TCP4|TCP6 SRC DST SPORT DPORT} or
    C{PROXY UNKNOWN ...}. @raise ProxyHeaderError."""
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("v1 line is not ASCII") from None
    parts = text.split(" ")
    if len(parts) < 2 or parts[0] != "PROXY":
        raise ProxyHeaderError("v1 line does not start with 'PROXY '")
    if parts[1] == "UNKNOWN":
        return ProxyHeader(1, local=True)
    if parts[1] not in ("TCP4", "TCP6") or len(parts) != 6:
        raise ProxyHeaderError("v1 line is not 'PROXY TCP4|TCP6 SRC DST SPORT DPORT'")
    version = 4 if parts[1] == "TCP4" else 6
    source = Address(_v1IP(parts[2], version), _v1Port(parts[4]))
    destination = Address(_v1IP(parts[3], version), _v1Port(parts[5]))
    return ProxyHeader(1, local=False, source=source, destination=destination)


def _v1IP(text: str, version: int) -> str:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyHeaderError(f"v1 address {text!r} is not an IP address") from None
    if ip.version != version:
        raise ProxyHeaderError(f"v1 address {text!r} is not IPv{version}")
    return _folded(ip)


def _v1Port(text: str) -> int:
    if (
        not (text.isascii() and text.isdigit())
        or len(text) > 5
        or (len(text) > 1 and text[0] == "0")
    ):
        raise ProxyHeaderError(f"v1 port {text!r} is not a port number")
    port = int(text)
    if port > 65535:
        raise ProxyHeaderError(f"v1 port {port} is out of range")
    return port


def _folded(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """IPv4-mapped IPv6 folded to IPv4, as L{Address} does everywhere."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def parseV2Block(command: int, family: int, block: bytes) -> ProxyHeader:
    """The part of a v2 header after its 16 fixed bytes. @raise ProxyHeaderError."""
    size = _ADDRESS_BLOCK.get(family, 0)
    if len(block) < size:
        raise ProxyHeaderError(
            f"v2 address block of {len(block)} bytes, family 0x{family:02x} needs {size}"
        )
    tlvs = parseTLVs(block[size:])
    if command == _LOCAL or family == _UNSPEC:
        return ProxyHeader(2, local=True, tlvs=tlvs)
    if family not in (_TCP4, _TCP6):
        raise ProxyHeaderError(f"v2 family 0x{family:02x} is not TCP over IPv4 or IPv6")
    width = 4 if family == _TCP4 else 16
    source = _folded(ipaddress.ip_address(block[:width]))
    destination = _folded(ipaddress.ip_address(block[width : 2 * width]))
    sourcePort, destinationPort = struct.unpack_from("!HH", block, 2 * width)
    return ProxyHeader(
        2,
        local=False,
        source=Address(source, sourcePort),
        destination=Address(destination, destinationPort),
        tlvs=tlvs,
    )


def parseTLVs(data: bytes) -> tuple[tuple[int, bytes], ...]:
    """Type (1 byte), length (2), value; each must fit in C{data}. @raise ProxyHeaderError."""
    tlvs: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 3:
            raise ProxyHeaderError("v2 TLV truncated in its type and length")
        kind = data[offset]
        (length,) = struct.unpack_from("!H", data, offset + 1)
        start = offset + 3
        if start + length > len(data):
            raise ProxyHeaderError(f"v2 TLV 0x{kind:02x} of {length} bytes overruns the header")
        tlvs.append((kind, data[start : start + length]))
        offset = start + length
    return tuple(tlvs)


def packV2(
    source: Address | None,
    destination: Address | None,
    tlvs: tuple[tuple[int, bytes], ...] = (),
) -> bytes:
    """A v2 header: PROXY over TCP for C{source} -> C{destination} (same family), or
    LOCAL when either is None."""
    extra = b"".join(struct.pack("!BH", kind, len(value)) + value for kind, value in tlvs)
    if source is None or destination is None:
        command, family, block = _LOCAL, _UNSPEC, b""
    else:
        src = ipaddress.ip_address(source.host)
        dst = ipaddress.ip_address(destination.host)
        if src.version != dst.version:
            # Keep the family of the connection: map the IPv4 one into IPv6.
            src, dst = (
                ipaddress.IPv6Address(f"::ffff:{ip}") if ip.version == 4 else ip
                for ip in (src, dst)
            )
        family = _TCP4 if src.version == 4 else _TCP6
        command = _PROXY
        block = src.packed + dst.packed + struct.pack("!HH", source.port, destination.port)
    payload = block + extra
    return (
        V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(payload)) + payload
    )
