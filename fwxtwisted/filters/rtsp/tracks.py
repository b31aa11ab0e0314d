"""Track: one media stream of an RTSP session, its transports each side and its ports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fwxtwisted.interfaces import IFirewallAction

UDP = "UDP"
TCP = "TCP"


@dataclass(eq=False)
class Track:
    """What one SETUP made: the media's transport toward the client and toward the
    server, and the gateway's ports, channels and permissions that carry it.

    Index 0 of every pair is RTP, index 1 RTCP.
    """

    #: The track's URL as the server knows it (the SETUP's request URI).
    url: str
    #: UDP or TCP (interleaved) toward the client, and toward the server.
    clientLower: str
    serverLower: str
    #: The client's own RTP/RTCP ports (its client_port), for a UDP client.
    clientPorts: tuple[int, int] | None = None
    #: Interleaved channels on the client's connection, for a TCP client.
    clientChannels: tuple[int, int] | None = None
    #: Interleaved channels on the server's connection, for a TCP server.
    serverChannels: tuple[int, int] | None = None
    #: The server's RTP/RTCP ports (its server_port), for a UDP server.
    serverPorts: tuple[int, int] | None = None
    #: The gateway's pair on its external address, toward a UDP server.
    serverFacing: Any = None
    #: The gateway's pair on its client-facing address, toward a UDP client, when the
    #: filter itself carries the datagrams (translation); for UDP on both sides the
    #: relay's own permissions hold that pair.
    clientFacing: Any = None
    #: The client-facing RTP port the client was told (its server_port).
    clientFacingPort: int | None = None
    #: The UDP relay's permissions (UDP on both sides).
    actions: list[IFirewallAction] = field(default_factory=list)
    closed: bool = False
    #: Interleaved frames (and their payload bytes) the filter passed each way.
    framesToClient: int = 0
    frameBytesToClient: int = 0
    framesToServer: int = 0
    frameBytesToServer: int = 0

    @property
    def established(self) -> bool:
        """Whether the SETUP's response has come and the media may flow."""
        return self.clientFacingPort is not None or self.clientChannels is not None

    def describe(self) -> str:
        """How the media travels, as one log word per side (udp/tcp)."""
        return f"{self.clientLower.lower()}<->{self.serverLower.lower()}"

    def close(self) -> None:
        """Return every port of the track and stop its relays."""
        self.closed = True
        for action in self.actions:
            action.cancel()
        for ports in (self.serverFacing, self.clientFacing):
            if ports is not None:
                ports.cancel()
