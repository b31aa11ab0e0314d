"""Transparent interception at the socket level: a connection's original destination
(after an nftables C{redirect} or C{tproxy}), whether an IP is the gateway's own, and
listening sockets with C{IP_TRANSPARENT} set before they are bound."""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable
from typing import Any

from twisted.internet.protocol import Protocol, ServerFactory

from fwxtwisted.address import Address, normalizeHost
from fwxtwisted.logs import Logger
from fwxtwisted.net.quietport import QuietPort

log = Logger()

#: linux/netfilter_ipv4.h SO_ORIGINAL_DST; linux/netfilter_ipv6/ip6_tables.h
#: IP6T_SO_ORIGINAL_DST has the same value at level SOL_IPV6.
SO_ORIGINAL_DST = 80
#: linux/in.h IP_TRANSPARENT, linux/in6.h IPV6_TRANSPARENT.
IP_TRANSPARENT = 19
IPV6_TRANSPARENT = 75

_SOL_IPV6 = getattr(socket, "SOL_IPV6", 41)


def originalDestination(handle: socket.socket) -> Address:
    """Where the peer of an accepted socket meant to connect.

    After an nftables C{redirect} (NAT) the kernel's conntrack entry holds it
    (C{SO_ORIGINAL_DST}); after C{tproxy}, or when the connection was not rewritten
    at all, it is the socket's own local address (which for a C{tproxy}ed socket is
    the original destination, the packets were never changed).
    """
    try:
        if handle.family == socket.AF_INET6 and not _mappedV4(handle):
            raw = handle.getsockopt(_SOL_IPV6, SO_ORIGINAL_DST, 28)
            port = struct.unpack("!H", raw[2:4])[0]
            host = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        else:
            raw = handle.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
            port = struct.unpack("!H", raw[2:4])[0]
            host = socket.inet_ntop(socket.AF_INET, raw[4:8])
        return Address(normalizeHost(host), port)
    except OSError as e:
        # ENOENT: no conntrack entry (tproxy without NAT, conntrack off); ENOPROTOOPT:
        # no conntrack in this kernel.  The local address is then the answer.
        if e.errno not in (errno.ENOENT, errno.ENOPROTOOPT, errno.EINVAL):
            raise
    local = handle.getsockname()
    return Address(normalizeHost(local[0]), local[1])


def _mappedV4(handle: socket.socket) -> bool:
    return str(handle.getsockname()[0]).startswith("::ffff:")


def isLocalAddress(host: str) -> bool:
    """True when C{host} is an address of this host (its network namespace): binding
    it without C{IP_TRANSPARENT} or C{IP_FREEBIND} succeeds only then."""
    host = normalizeHost(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
    except OSError as e:
        if e.errno == errno.EADDRNOTAVAIL:
            return False
        raise
    return True


def setTransparent(handle: socket.socket) -> bool:
    """Set C{IP_TRANSPARENT} (C{IPV6_TRANSPARENT}) so a C{tproxy} rule may hand the
    socket connections to addresses that are not the host's.  Needs CAP_NET_ADMIN;
    False (and nothing set) without it: C{redirect} rules still work then."""
    try:
        if handle.family == socket.AF_INET6:
            handle.setsockopt(_SOL_IPV6, IPV6_TRANSPARENT, 1)
        else:
            handle.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
    except OSError as e:
        if e.errno in (errno.EPERM, errno.EACCES, errno.ENOPROTOOPT):
            return False
        raise
    return True


class TransparentPort(QuietPort):
    """A listening TCP port whose socket gets C{IP_TRANSPARENT} before C{bind}
    (Twisted's C{listenTCP} offers no hook between socket creation and bind), and,
    for IPv6, C{IPV6_V6ONLY} when C{v6only}."""

    v6only = False
    #: True once the socket could be made transparent (tproxy-capable).
    transparent = False

    def createInternetSocket(self) -> socket.socket:
        handle: socket.socket = super().createInternetSocket()
        if handle.family == socket.AF_INET6 and self.v6only:
            handle.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        self.transparent = setTransparent(handle)
        return handle


def listenTransparent(
    reactor: Any,
    port: int,
    factory: ServerFactory,
    interface: str,
    backlog: int = 50,
    v6only: bool = False,
) -> TransparentPort:
    """Listen like C{reactor.listenTCP}, on a socket made transparent before bind.

    @raise CannotListenError: the address is taken or cannot be bound.
    """
    listening = TransparentPort(port, factory, backlog, interface, reactor)
    listening.v6only = v6only
    listening.startListening()
    if not listening.transparent:
        log.warn(
            "listener {interface}:{port}: IP_TRANSPARENT refused (CAP_NET_ADMIN needed): "
            "nftables tproxy rules cannot reach it, redirect rules can",
            interface=interface,
            port=port,
        )
    return listening


def parseTCPServerEndpoint(description: str) -> tuple[int, str, int]:
    """C{tcp:PORT[:interface=IP][:backlog=N]} (or C{tcp6:}) to (port, interface,
    backlog).  @raise ValueError: another kind of endpoint, or another argument."""
    kind, _, rest = description.partition(":")
    if kind not in ("tcp", "tcp6"):
        raise ValueError(f"a transparent listener is a tcp or tcp6 endpoint, not {kind!r}")
    interface = "::" if kind == "tcp6" else "0.0.0.0"
    backlog = 50
    port: int | None = None
    for arg in _split(rest):
        key, eq, value = arg.partition("=")
        if not eq and port is None:
            port = int(key)
        elif key == "port":
            port = int(value)
        elif key == "interface":
            interface = value
        elif key == "backlog":
            backlog = int(value)
        else:
            raise ValueError(f"unsupported argument {arg!r} in {description!r}")
    if port is None:
        raise ValueError(f"no port in {description!r}")
    return port, interface, backlog


def _split(text: str) -> list[str]:
    parts, current, escaped = [], "", False
    for char in text:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p]


class Interception(Protocol):
    """The first protocol of an intercepted connection: once it is made, reads the
    original destination and asks C{decide} for the protocol that takes over (or
    None: the connection is aborted).  The switch happens before any byte is read."""

    def __init__(self, peer: Address, decide: Callable[[Address, Address], Protocol | None]):
        self._peer = peer
        self._decide = decide

    def connectionMade(self) -> None:
        transport: Any = self.transport
        decide, self._decide = self._decide, None  # type: ignore[assignment]
        try:
            destination = originalDestination(transport.getHandle())
        except OSError as e:
            log.warn(
                "refused {peer}: no original destination ({error})", peer=str(self._peer), error=e
            )
            transport.abortConnection()
            return
        protocol = decide(self._peer, destination)
        if protocol is None:
            transport.abortConnection()
            return
        transport.protocol = protocol
        protocol.makeConnection(transport)


__all__ = [
    "Interception",
    "TransparentPort",
    "isLocalAddress",
    "listenTransparent",
    "originalDestination",
    "parseTCPServerEndpoint",
    "setTransparent",
]
