"""Destination allow-lists: ``CIDR[:PORTS]`` entries and the check an address passes.

The same syntax as the FTP filter's explicit-mode C{allow_destinations}
(filters/ftp/options.py keeps its own copy until that filter's refactor lands).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from fwxtwisted.address import Address, parsePort


@dataclass(frozen=True)
class Destination:
    """One entry of an allow-list: a network and optional port ranges."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    #: Inclusive port ranges; empty means any port.
    ports: tuple[tuple[int, int], ...] = ()

    def allows(self, address: Address) -> bool:
        """True when C{address} (an IP literal and port) is inside this entry."""
        try:
            ip = ipaddress.ip_address(address.host)
        except ValueError:
            return False
        if ip.version != self.network.version or ip not in self.network:
            return False
        return not self.ports or any(lo <= address.port <= hi for lo, hi in self.ports)

    def __str__(self) -> str:
        ports = ",".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in self.ports)
        return f"{self.network}:{ports}" if ports else str(self.network)


def allowedBy(entries: Iterable[Destination], address: Address) -> bool:
    """True when some entry allows C{address}."""
    return any(entry.allows(address) for entry in entries)


def parseDestination(text: str) -> Destination:
    """``CIDR[:PORTS]``: ``10.0.0.0/8``, ``192.0.2.7:21``, ``::1/128:21,2121``,
    ``[2001:db8::]/32:2000-2100``.  @raise ValueError."""
    text = text.strip()
    portsText = ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in {text!r}")
        network, rest = text[1:end], text[end + 1 :]
        if rest.startswith("/"):
            prefix, _, portsText = rest[1:].partition(":")
            network += "/" + prefix
        elif rest.startswith(":"):
            portsText = rest[1:]
        elif rest:
            raise ValueError(f"junk after ']' in {text!r}")
    elif "/" in text:
        network, _, rest = text.partition("/")
        prefix, _, portsText = rest.partition(":")
        network += "/" + prefix
    elif text.count(":") == 1:
        network, _, portsText = text.partition(":")
    else:
        network = text
    try:
        net = ipaddress.ip_network(network, strict=False)
    except ValueError:
        raise ValueError(f"{network!r} is not an IP network") from None
    return Destination(net, _parsePorts(portsText) if portsText else ())


def _parsePorts(text: str) -> tuple[tuple[int, int], ...]:
    if text == "*":
        return ()
    ranges = []
    for part in text.split(","):
        low, sep, high = part.partition("-")
        lo = parsePort(low.strip())
        hi = parsePort(high.strip()) if sep else lo
        if lo < 1 or hi < lo:
            raise ValueError(f"{part!r} is not a port or a range LOW-HIGH of ports 1-65535")
        ranges.append((lo, hi))
    return tuple(ranges)
