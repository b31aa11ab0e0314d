"""FTPOptions: an FTP listener's settings, from TOML keys or the command line."""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from fwxtwisted.address import Address, parsePort
from fwxtwisted.config import parsePortRange
from fwxtwisted.errors import ConfigError


class DataPolicy(enum.Enum):
    """How the gateway opens data channels toward the server."""

    #: The same mode as the client used.
    CLIENT = "client"
    #: Always PASV/EPSV toward the server (for servers behind a firewall of their own).
    PASSIVE = "passive"
    #: Always PORT/EPRT toward the server.
    ACTIVE = "active"


@dataclass(frozen=True)
class Destination:
    """One entry of an explicit proxy's allow-list: a network and optional ports."""

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
        if "-" in part:
            ranges.append(parsePortRange(part))
        else:
            port = parsePort(part.strip())
            ranges.append((port, port))
    return tuple(ranges)


@dataclass(frozen=True)
class FTPOptions:
    """Everything an FTP listener can be told."""

    explicit: bool = False
    allowDestinations: tuple[Destination, ...] = ()
    dataPolicy: DataPolicy = DataPolicy.CLIENT
    #: The IP written into 227 replies instead of the client-facing one (behind NAT).
    advertiseAddress: str | None = None
    #: Ports for client-facing passive listeners; the gateway's range when None.
    passivePorts: tuple[int, int] | None = None
    #: Seconds without control traffic (and no transfer running) before closing.
    idleTimeout: float = 900.0
    #: Allow PORT/EPRT to name another host or a port below 1024 (FXP).
    allowFxp: bool = False
    #: The longest control line accepted from either side.
    maxLineLength: int = 2048

    def allows(self, address: Address) -> bool:
        """True when the explicit-proxy allow-list lets sessions reach C{address}."""
        return any(entry.allows(address) for entry in self.allowDestinations)


_KEYS = {
    "explicit",
    "allow_destinations",
    "data_policy",
    "advertise_address",
    "passive_ports",
    "idle_timeout",
    "allow_fxp",
    "max_line_length",
}


def parseFTPOptions(raw: Mapping[str, object], hasUpstream: bool | None = None) -> FTPOptions:
    """Validate an FTP listener's keys.  @raise ConfigError: C{"key: why"}."""
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ConfigError(f"{unknown[0]}: not an option of the ftp filter")
    explicit = raw.get("explicit", False)
    if not isinstance(explicit, bool):
        raise ConfigError("explicit: must be true or false")
    destinations = raw.get("allow_destinations", [])
    if not isinstance(destinations, list) or not all(isinstance(d, str) for d in destinations):
        raise ConfigError('allow_destinations: must be a list of "CIDR[:PORTS]" strings')
    try:
        allow = tuple(parseDestination(d) for d in destinations)
    except ValueError as e:
        raise ConfigError(f"allow_destinations: {e}") from None
    if explicit and not allow:
        raise ConfigError(
            "allow_destinations: explicit mode needs an allow-list of destination networks "
            "(refusing to run an open FTP proxy)"
        )
    if not explicit and allow:
        raise ConfigError("allow_destinations: only meaningful with explicit = true")
    if hasUpstream is not None and explicit == hasUpstream:
        raise ConfigError(
            "upstream: give either an upstream (reverse proxy) or explicit = true, not "
            + ("both" if explicit else "neither")
        )
    policyText = raw.get("data_policy", "client")
    try:
        policy = DataPolicy(policyText)
    except ValueError:
        raise ConfigError("data_policy: must be one of client, passive, active") from None
    advertise = raw.get("advertise_address")
    if advertise is not None:
        try:
            advertise = str(ipaddress.IPv4Address(str(advertise)))
        except ValueError:
            raise ConfigError("advertise_address: must be an IPv4 address") from None
    passive = raw.get("passive_ports")
    passivePorts = None
    if passive is not None:
        try:
            passivePorts = parsePortRange(str(passive))
        except ValueError as e:
            raise ConfigError(f"passive_ports: {e}") from None
    idle = raw.get("idle_timeout", 900.0)
    if isinstance(idle, bool) or not isinstance(idle, int | float) or idle <= 0:
        raise ConfigError("idle_timeout: must be a number of seconds > 0")
    fxp = raw.get("allow_fxp", False)
    if not isinstance(fxp, bool):
        raise ConfigError("allow_fxp: must be true or false")
    maxLine = raw.get("max_line_length", 2048)
    if isinstance(maxLine, bool) or not isinstance(maxLine, int) or not 512 <= maxLine <= 65536:
        raise ConfigError("max_line_length: must be a whole number from 512 to 65536")
    return FTPOptions(
        explicit=explicit,
        allowDestinations=allow,
        dataPolicy=policy,
        advertiseAddress=advertise,
        passivePorts=passivePorts,
        idleTimeout=float(idle),
        allowFxp=fxp,
        maxLineLength=maxLine,
    )
