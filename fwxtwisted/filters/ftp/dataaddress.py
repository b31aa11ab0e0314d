"""Codecs for FTP data-channel addresses: PORT, EPRT, and the 227 and 229 reply texts.

These are pure syntax: a parsed address may still be one the filter must refuse (a
third party's IP, a privileged port); that policy is the filter's.  Hosts come back in
the canonical form of L{fwxtwisted.address.normalizeHost}, IPv4-mapped IPv6 folded to
IPv4.
"""

from __future__ import annotations

import ipaddress
import re

from fwxtwisted.address import Address, normalizeHost

_PASV_NUMBERS = re.compile(
    r"(?<![0-9])([0-9]{1,3})" + r"[ \t]*,[ \t]*([0-9]{1,3})" * 5 + r"(?![0-9])"
)
# RFC 2428: "(<d><d><d><tcp-port><d>)", the same delimiter four times.
_EPSV_PORT = re.compile(r"\(([\x21-\x7e])\1\1([0-9]{1,5})\1\)")
_DECIMAL = re.compile(r"[0-9]{1,5}\Z")


class DataAddressError(ValueError):
    """A data-channel address is malformed or cannot be expressed in the asked form."""


class UnsupportedNetworkProtocolError(DataAddressError):
    """EPRT named a network protocol other than 1 (IPv4) or 2 (IPv6): reply 522."""


def _show(text: str) -> str:
    return repr(text[:80])


def _byte(text: str, what: str) -> int:
    text = text.strip()
    if not (_DECIMAL.match(text) and int(text) <= 255):
        raise DataAddressError(f"{what}: {_show(text)} is not a number from 0 to 255")
    return int(text)


def _port(text: str, what: str) -> int:
    if not (_DECIMAL.match(text) and int(text) <= 65535):
        raise DataAddressError(f"{what}: {_show(text)} is not a port number from 0 to 65535")
    return int(text)


def _checkPort(port: int) -> None:
    if not 0 <= port <= 65535:
        raise DataAddressError(f"port {port} is out of range 0-65535")


def _fromNumbers(numbers: list[int]) -> Address:
    return Address(".".join(map(str, numbers[:4])), numbers[4] * 256 + numbers[5])


def _toNumbers(address: Address, what: str) -> str:
    _checkPort(address.port)
    host = normalizeHost(address.host)
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        raise DataAddressError(f"{what} needs an IPv4 address, not {host!r}") from None
    numbers = [*ip.packed, address.port >> 8, address.port & 0xFF]
    return ",".join(map(str, numbers))


def parsePort(arg: str) -> Address:
    """The address of a PORT argument C{h1,h2,h3,h4,p1,p2}; spaces around numbers are fine.

    @raise DataAddressError: not six numbers from 0 to 255.
    """
    fields = arg.split(",")
    if len(fields) != 6:
        raise DataAddressError(f"PORT argument {_show(arg)} is not six comma-separated numbers")
    return _fromNumbers([_byte(field, "PORT argument") for field in fields])


def formatPort(address: Address) -> str:
    """The PORT argument C{h1,h2,h3,h4,p1,p2} for an IPv4 address.

    @raise DataAddressError: the host is not IPv4 or the port is out of range.
    """
    return _toNumbers(address, "PORT")


def parseEprt(arg: str) -> Address:
    """The address of an EPRT argument C{<d>family<d>ip<d>port<d>} (RFC 2428).

    The delimiter is any character from 33 to 126; family 1 is IPv4, 2 is IPv6, and the
    address must be of that family.  Surrounding whitespace is ignored.

    @raise UnsupportedNetworkProtocolError: the family is neither 1 nor 2.
    @raise DataAddressError: anything else is wrong.
    """
    text = arg.strip()
    if not text or not 33 <= ord(text[0]) <= 126:
        raise DataAddressError(f"EPRT argument {_show(arg)} does not start with a delimiter")
    fields = text.split(text[0])
    if len(fields) != 5 or fields[0] or fields[4]:
        raise DataAddressError(f"EPRT argument {_show(arg)} is not <d>family<d>address<d>port<d>")
    family, host, port = fields[1:4]
    if family not in ("1", "2"):
        raise UnsupportedNetworkProtocolError(
            f"EPRT network protocol {_show(family)} is neither 1 (IPv4) nor 2 (IPv6)"
        )
    kind = "IPv4" if family == "1" else "IPv6"
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    try:
        ip = ipaddress.IPv4Address(host) if family == "1" else ipaddress.IPv6Address(host)
    except ValueError:
        raise DataAddressError(f"EPRT address {_show(host)} is not {kind}") from None
    # A scope ID (fe80::1%eth0) names an interface of the sender: meaningless here.
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        raise DataAddressError(f"EPRT address {_show(host)} has a scope ID")
    return Address(normalizeHost(str(ip)), _port(port, "EPRT port"))


def formatEprt(address: Address) -> str:
    """The EPRT argument C{|1|ip|port|} or C{|2|ip|port|} for an IP address.

    @raise DataAddressError: the host is not an IP literal or the port is out of range.
    """
    _checkPort(address.port)
    host = normalizeHost(address.host)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise DataAddressError(f"EPRT needs an IP address, not {host!r}") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        raise DataAddressError(f"EPRT cannot carry the scope of {host!r}")
    return f"|{1 if ip.version == 4 else 2}|{ip}|{address.port}|"


def parsePasvReply(text: str) -> Address:
    """The address in the text of a 227 reply: the first six comma-separated numbers.

    Servers word 227 differently, with or without parentheses, so the text is scanned
    for the numbers as RFC 1123 (4.1.2.6) asks of clients.

    @raise DataAddressError: no six numbers, or one over 255.
    """
    match = _PASV_NUMBERS.search(text)
    if match is None:
        raise DataAddressError(f"no h1,h2,h3,h4,p1,p2 in 227 reply {_show(text)}")
    return _fromNumbers([_byte(number, "227 reply") for number in match.groups()])


def formatPasvReply(address: Address) -> str:
    """The text of a 227 reply: C{Entering Passive Mode (h1,h2,h3,h4,p1,p2).}

    @raise DataAddressError: the host is not IPv4 or the port is out of range.
    """
    return f"Entering Passive Mode ({_toNumbers(address, '227 reply')})."


def parseEpsvReply(text: str) -> int:
    """The port in the text of a 229 reply: C{(|||port|)}, with any delimiter from 33 to 126.

    @raise DataAddressError: no such group, or the port is over 65535.
    """
    match = _EPSV_PORT.search(text)
    if match is None:
        raise DataAddressError(f"no (|||port|) in 229 reply {_show(text)}")
    return _port(match.group(2), "229 reply")


def formatEpsvReply(port: int) -> str:
    """The text of a 229 reply: C{Entering Extended Passive Mode (|||port|)}.

    @raise DataAddressError: the port is out of range.
    """
    _checkPort(port)
    return f"Entering Extended Passive Mode (|||{port}|)"
