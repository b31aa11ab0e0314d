"""The value types fwxtwisted's interfaces speak in: enums and frozen dataclasses.

Private: every name is re-exported by L{fwxtwisted.interfaces}, the public module (the
objects are the same), so import them from there.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fwxtwisted.address import Address

__all__ = [
    "ActionState",
    "ByteCounts",
    "Connect",
    "DatagramCounts",
    "Direction",
    "FirewallEvent",
    "FirewallNotification",
    "LegSpec",
    "LegTLS",
    "Listen",
    "ProtocolDefinition",
    "RedirectFlags",
    "Redirection",
    "Side",
    "SocketCounts",
    "TLS_UNFINISHED",
    "Transport",
]


class _Enum(enum.Enum):
    # Members are singletons: identity hashing is exact, and much cheaper than Enum's
    # hash of the name (relays look sides and directions up on every event).
    __hash__ = object.__hash__


class Transport(enum.Enum):
    """The transport of a protocol or of a redirection (the SDK's FWX_PROTOCOL_TCP/UDP)."""

    TCP = "tcp"
    UDP = "udp"


class RedirectFlags(enum.Flag):
    """Options of L{ISession.redirectConnections} (the SDK's FWX_FLAG_* values)."""

    NONE = 0
    #: Keep accepting connections until cancelled or the session ends; by default a
    #: permission takes one connection and its listener closes.
    ALLOW_MULTIPLE = enum.auto()
    #: Expire the permission if nobody uses it within the redirect timeout (default 60 s).
    TIMEOUT = enum.auto()
    #: Never move this redirection's bytes on the zero-copy fast path (TCP: splice),
    #: nor its datagrams on the kernel UDP path (kernel_udp): the gateway relays them.
    NO_KERNEL_MODE = enum.auto()
    #: The run of N internal ports starts on an even port (RTP even, RTCP odd: RTSP
    #: and RFC 3550 pairs).  An explicit internal port that is odd is refused
    #: (C{PortUnavailable}); an odd bound of the range is passed over.
    EVEN_PORTS = enum.auto()


class FirewallEvent(_Enum):
    """What happened to a permission or one of its connections (the SDK's FwxFirewallEventType)."""

    #: The gateway connected out to a connect address (the outbound leg is up).
    CONNECT_TCP = "connect-tcp"
    #: The outbound connect failed or timed out; the accepted leg is closed.
    CONNECT_FAILED = "connect-failed"
    #: A listener accepted the expected peer.
    ACCEPTED_CONNECTION = "accepted-connection"
    #: A peer other than the expected one tried a listener and was refused.
    REFUSED_CONNECTION = "refused-connection"
    #: Both legs are up; bytes flow.
    ESTABLISHED_CONNECTION = "established-connection"
    #: The connection is over; the notification carries the bytes moved each way.
    CONNECTION_TERMINATING = "connection-terminating"
    #: A UDP mapping was made: datagrams from the peer now go to the connect address.
    UDP_DESTINATION = "udp-destination"
    #: An unused permission reached its timeout; its listener is closed.
    PERMISSION_EXPIRED = "permission-expired"
    #: One leg closed while the other is still up (C{side} says which, C{reason} why);
    #: the other leg closes next, after what is written to it now.
    LEG_CLOSED = "leg-closed"
    #: The gateway is stopping (for the primary connection, action None).  C{reason}
    #: "draining": finish what runs, take nothing new; "grace period over": the session
    #: is closed right after this notification.
    GATEWAY_SHUTDOWN = "gateway-shutdown"


class ActionState(_Enum):
    """Where a permission (L{IFirewallAction}) is in its life."""

    LISTENING = "listening"
    #: Single-use and used: the listener is closed, its connection may still be live.
    USED = "used"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class Direction(_Enum):
    """Which way bytes flow through a relayed connection.

    The I{client} of a connection is the peer that connected to the gateway; the
    I{server} is the peer the gateway connected to.  For an active-mode FTP data channel
    the client is therefore the FTP server.
    """

    CLIENT_TO_SERVER = "c2s"
    SERVER_TO_CLIENT = "s2c"

    @property
    def reverse(self) -> Direction:
        """The other direction."""
        if self is Direction.CLIENT_TO_SERVER:
            return Direction.SERVER_TO_CLIENT
        return Direction.CLIENT_TO_SERVER


class Side(_Enum):
    """One end of a relayed connection: CLIENT connected to the gateway (or, in a join,
    the first leg), SERVER is the peer the gateway connected to (the second leg)."""

    CLIENT = "client"
    SERVER = "server"


@dataclass(frozen=True)
class LegTLS:
    """TLS on one leg of a relayed connection, started as soon as the leg is up.

    @ivar creator: a Twisted TLS connection creator (or context factory).
    @ivar asServer: True when the gateway is the TLS server on this leg, whichever
        side opened the TCP connection (FTPS data channels keep the FTP client as the
        TLS client in active mode too).
    @ivar check: called with the pyOpenSSL connection once the handshake is done;
        a returned reason aborts the connection (e.g. a session that was not resumed).
    """

    creator: object
    asServer: bool
    check: Callable[[object], str | None] | None = None


#: In a CONNECTION_TERMINATING reason ("client left before its TLS handshake ended"):
#: a peer closed its TLS leg before the handshake was over, so nothing it sent or was
#: sent was protected or whole, however cleanly its TCP connection ended.
TLS_UNFINISHED = "left before its TLS handshake ended"


@dataclass(frozen=True)
class ProtocolDefinition:
    """A protocol a filter handles (the SDK's RegisterProtocolForFilter)."""

    protocolId: uuid.UUID
    name: str
    transport: Transport = Transport.TCP
    #: The well-known primary port, or None for a secondary-only protocol (FTP data).
    defaultPort: int | None = None


@dataclass(frozen=True)
class ByteCounts:
    """Bytes received from each peer of one relayed connection."""

    fromClient: int = 0
    fromServer: int = 0


@dataclass(frozen=True)
class DatagramCounts:
    """What one UDP permission (L{IUDPRedirect}) relayed, over all of its mappings.

    The I{peer} sends to the permission's internal port; the I{target} is its connect
    address.  C{dropped}: datagrams from anyone else, on the internal port or on the
    outbound socket, and datagrams that arrived with no mapping to take them.
    """

    packetsFromPeer: int = 0
    bytesFromPeer: int = 0
    packetsFromTarget: int = 0
    bytesFromTarget: int = 0
    dropped: int = 0


@dataclass(frozen=True)
class SocketCounts:
    """What one socket of an L{IDatagramPorts} received (accepted), sent and dropped."""

    packetsIn: int = 0
    bytesIn: int = 0
    packetsOut: int = 0
    bytesOut: int = 0
    dropped: int = 0


@dataclass(frozen=True)
class FirewallNotification:
    """One event delivered to L{ISessionFilter.firewallEvent}."""

    event: FirewallEvent
    #: The permission the event belongs to (an L{IFirewallAction}; None for the primary
    #: connection).  Typed Any: interfaces.py imports this module, not the reverse.
    action: Any
    #: The context the filter gave to redirectConnections.
    context: object = None
    #: The peer that connected to the gateway (accepted leg), when known.
    clientAddress: Address | None = None
    #: The peer the gateway connected to (outbound leg), when known.
    serverAddress: Address | None = None
    counts: ByteCounts = field(default_factory=ByteCounts)
    #: Why, for failures, refusals and closes.
    reason: str | None = None
    #: ESTABLISHED_CONNECTION: True when the relay may take the zero-copy fast path
    #: (it moves there once bulk data flows, see relay.FAST_PATH_AFTER);
    #: CONNECTION_TERMINATING: True when its bytes did move on it.
    fastPath: bool = False
    #: The leg concerned, for LEG_CLOSED.
    side: Side | None = None


@dataclass(frozen=True)
class Redirection:
    """The result of L{ISession.redirectConnections}: every listener is bound."""

    #: Where peers connect: the lowest of N consecutive ports when N > 1.
    internalAddress: Address
    #: One permission (L{IFirewallAction}, typed Any as above) per connect address, in
    #: the same order.
    actions: Sequence[Any]


@dataclass(frozen=True)
class Listen:
    """A leg of L{ISession.joinConnections} that the gateway accepts: on C{host}
    (port 0 = allocate from the range), from C{expectedPeer} only."""

    host: str
    expectedPeer: str
    port: int = 0
    #: Allocate from this inclusive range instead of the one configured for C{host}.
    portRange: tuple[int, int] | None = None


@dataclass(frozen=True)
class Connect:
    """A leg of L{ISession.joinConnections} that the gateway connects: to C{address},
    leaving from C{sourceHost} (None: the OS chooses)."""

    address: Address
    sourceHost: str | None = None


LegSpec = Listen | Connect
