"""A gateway with the rtsp filter in front of a scripted RTSP server, on loopback."""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.error import CannotListenError

from fwxtwisted.address import Address
from fwxtwisted.filters.rtsp.filter import rtspFilter
from fwxtwisted.filters.rtsp.message import Response
from fwxtwisted.filters.rtsp.options import RTSPOptions
from fwxtwisted.filters.rtsp.parser import MessageParser, Role
from fwxtwisted.settings import GatewaySettings
from tests.core.support import Network, Peer, RunningGateway, UDPPeer, within

EXTERNAL = "127.0.0.2"


@dataclass
class Scene:
    """The gateway, the client connected to it and the server connection it made."""

    running: RunningGateway
    client: Peer
    server: Peer
    serverAddress: Address

    @property
    def gatewayURL(self) -> str:
        return f"rtsp://{self.running.address.host}:{self.running.address.port}"

    @property
    def serverURL(self) -> str:
        return f"rtsp://{self.serverAddress.host}:{self.serverAddress.port}"


async def scene(
    net: Network, options: RTSPOptions | None = None, settings: GatewaySettings | None = None
) -> Scene:
    """A session through the gateway: the client connected, its upstream accepted."""
    factory, upstream = net.server()
    running = net.startGateway(
        rtspFilter,
        settings or GatewaySettings(externalAddresses=(EXTERNAL,)),
        upstream=upstream,
        options=options or RTSPOptions(),
    )
    client = await net.connect(running.address)
    server = await within(factory.accepted.get())
    return Scene(running, client, server, upstream)


async def readMessages(peer: Peer, count: int, role: Role = Role.SERVER) -> list[object]:
    """The first C{count} messages or frames C{peer} has received (waits for them)."""
    size = 1
    while True:
        data = await within(peer.waitFor(size))
        events = MessageParser(role).feed(data)
        if len(events) >= count:
            return events[:count]
        size = len(data) + 1


def request(method: str, url: str, cseq: int, *headers: str, body: bytes = b"") -> bytes:
    """A request's bytes."""
    lines = [f"{method} {url} RTSP/1.0", f"CSeq: {cseq}", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def response(cseq: int, *headers: str, status: str = "200 OK", body: bytes = b"") -> bytes:
    """A response's bytes."""
    lines = [f"RTSP/1.0 {status}", f"CSeq: {cseq}", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def asResponse(event: object) -> Response:
    assert isinstance(event, Response), event
    return event


def udpPair(net: Network, host: str = "127.0.0.1", low: int = 41000) -> tuple[UDPPeer, UDPPeer]:
    """Two UDP sockets on an even port and the next one (an RTP/RTCP pair)."""
    for base in range(low, low + 2000, 2):
        rtp, rtcp = UDPPeer(), UDPPeer()
        try:
            net.listenUDP(rtp, host, base)
        except CannotListenError:
            continue
        try:
            net.listenUDP(rtcp, host, base + 1)
        except CannotListenError:
            continue
        return rtp, rtcp
    raise AssertionError("no free UDP pair")


def portOf(peer: UDPPeer) -> int:
    assert peer.transport is not None
    port: int = peer.transport.getHost().port  # type: ignore[attr-defined]
    return port
