"""Address: an (IP or host, port) pair, with conversions to and from Twisted's addresses."""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

from twisted.internet.address import IPv4Address, IPv6Address

#: A tuple, not a union: a union is built anew on every call.
_TWISTED_IP = (IPv4Address, IPv6Address)


@dataclass(frozen=True, order=True)
class Address:
    """A transport address: a host (an IP literal for anything the gateway binds) and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @property
    def isIPv6(self) -> bool:
        """True when the host is an IPv6 literal."""
        return ":" in self.host

    def withPort(self, port: int) -> Address:
        """The same host with another port."""
        return Address(self.host, port)

    @classmethod
    def fromTwisted(cls, address: object) -> Address:
        """Convert a Twisted IPv4Address or IPv6Address, folding IPv4-mapped IPv6 to IPv4."""
        if not isinstance(address, _TWISTED_IP):
            raise TypeError(f"not an IP address: {address!r}")
        return cls(normalizeHost(address.host), address.port)

    @classmethod
    def parse(cls, text: str, defaultPort: int | None = None) -> Address:
        """Parse ``host:port``, ``[v6]:port`` or (with a default port) a bare host.

        @raise ValueError: the text is not an address.
        """
        text = text.strip()
        host: str
        portText: str | None
        if text.startswith("["):
            end = text.find("]")
            if end < 0:
                raise ValueError(f"unclosed '[' in address {text!r}")
            host = text[1:end]
            rest = text[end + 1 :]
            if rest and not rest.startswith(":"):
                raise ValueError(f"junk after ']' in address {text!r}")
            portText = rest[1:] if rest else None
        elif text.count(":") == 1:
            host, portText = text.split(":")
        else:
            host, portText = text, None
        if not host:
            raise ValueError(f"no host in address {text!r}")
        if portText is None:
            if defaultPort is None:
                raise ValueError(f"no port in address {text!r}")
            return cls(normalizeHost(host), defaultPort)
        return cls(normalizeHost(host), parsePort(portText))


def parsePort(text: str) -> int:
    """A TCP/UDP port number from text. @raise ValueError: not in 0..65535."""
    if not text.isdigit():
        raise ValueError(f"port {text!r} is not a number")
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    return port


# Cached: every connection converts its peers' addresses, and ipaddress parsing costs
# several microseconds a call; a gateway sees few distinct hosts.
@functools.lru_cache(maxsize=4096)
def normalizeHost(host: str) -> str:
    """IP literals in canonical form (IPv4-mapped IPv6 folded to IPv4); names unchanged."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


@functools.lru_cache(maxsize=4096)
def isIPLiteral(host: str) -> bool:
    """True when C{host} is an IPv4 or IPv6 literal rather than a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
