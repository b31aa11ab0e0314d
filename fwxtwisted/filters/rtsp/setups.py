"""Setups: a SETUP's transport rewritten each way, and the ports and channels it needs."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred

from fwxtwisted.address import Address
from fwxtwisted.filters.rtsp.errors import RTSPProtocolError
from fwxtwisted.filters.rtsp.message import InterleavedFrame, Request, Response
from fwxtwisted.filters.rtsp.options import RTSPOptions, TransportPolicy
from fwxtwisted.filters.rtsp.protocols import RTP_MEDIA
from fwxtwisted.filters.rtsp.setuprewrite import (
    UNSUPPORTED_TRANSPORT,
    InterleavedChannels,
    checkClientTransport,
    requestTransportToServer,
    responseTransportToClient,
)
from fwxtwisted.filters.rtsp.tracks import TCP, UDP, Track
from fwxtwisted.filters.rtsp.transport import TransportSpec, formatTransport, parseTransport
from fwxtwisted.interfaces import (
    IDatagramPorts,
    ISession,
    ISessionFilter,
    RedirectFlags,
    Redirection,
    Transport,
)

#: Tracks one session may hold: each UDP track holds four ports of the gateway's pool.
MAX_TRACKS = 16

#: Transport parameters copied when a transport is rebuilt for the other lower transport.
_KEPT = ("ssrc", "mode")

FrameWriter = Callable[[InterleavedFrame], None]


class Setups:
    """The tracks of one session and the SETUP rewrites that make them.

    C{toClient} and C{toServer} write an interleaved frame on the client's or the
    server's connection (used when media is translated between UDP and TCP).
    """

    def __init__(
        self,
        session: ISession,
        options: RTSPOptions,
        sessionFilter: ISessionFilter,
        toClient: FrameWriter,
        toServer: FrameWriter,
    ) -> None:
        self.session = session
        self.options = options
        self.sessionFilter = sessionFilter
        self.tracks: list[Track] = []
        self._toClient = toClient
        self._toServer = toServer
        self._channels = InterleavedChannels()
        #: Frames by channel on each connection: (track, 0 for RTP or 1 for RTCP).
        self._byServerChannel: dict[int, tuple[Track, int]] = {}
        self._byClientChannel: dict[int, tuple[Track, int]] = {}

    # Requests.

    def request(self, request: Request) -> Track | None:
        """Rewrite a client's SETUP for the server; the track it starts, or None when
        the transport passes unchanged (multicast, when allowed).

        @raise RTSPProtocolError: the transport is refused (461) or malformed (400).
        """
        header = request.headers.get("Transport")
        if header is None:
            raise RTSPProtocolError(UNSUPPORTED_TRANSPORT, "SETUP without a Transport header")
        specs = parseTransport(header)
        if not specs:
            raise RTSPProtocolError(UNSUPPORTED_TRANSPORT, "empty Transport header")
        # A client may offer several transports; the gateway relays the first, which is
        # the client's preference, and so the server cannot pick one it cannot follow.
        spec = _interleavedOnly(specs)[0] if self.options.transparent else specs[0]
        checkClientTransport(spec, self.session.clientAddress.host, self.options.allowMulticast)
        if spec.isMulticast:
            return None
        for old in [track for track in self.tracks if track.url == request.uri]:
            # A SETUP of a track set up already changes its transport: the old ports go.
            self.drop(old)
        if len(self.tracks) >= MAX_TRACKS:
            raise RTSPProtocolError(453, f"more than {MAX_TRACKS} tracks in one session")
        policy = self.options.transportPolicy
        clientLower = spec.lowerTransport
        if clientLower == UDP:
            serverLower = TCP if policy is TransportPolicy.TCP else UDP
        else:
            serverLower = UDP if policy is TransportPolicy.UDP else TCP
        track = Track(request.uri, clientLower, serverLower)
        if clientLower == UDP:
            track.clientPorts = spec.clientPorts
        else:
            track.clientChannels = spec.interleaved
        if serverLower == UDP:
            track.serverFacing = self._openPorts(None, self._serverIP())
            rtp = track.serverFacing.address.port
            if clientLower == UDP:
                toServer = requestTransportToServer(spec, rtp)
            else:
                toServer = _rebuilt(spec, "RTP/AVP", [("unicast", None)])
                toServer.setPair("client_port", (rtp, rtp + 1))
        elif clientLower == TCP:
            toServer = spec
        else:
            first = self._freeServerChannels()
            track.serverChannels = (first, first + 1)
            toServer = _rebuilt(spec, "RTP/AVP/TCP", [("unicast", None)])
            toServer.setPair("interleaved", track.serverChannels)
        request.headers.set("Transport", formatTransport([toServer]))
        self.tracks.append(track)
        return track

    # Responses.

    def response(self, track: Track, response: Response) -> Deferred[None] | None:
        """Rewrite the server's SETUP response for the client, opening what the track
        needs; a Deferred when that takes a while (the response waits for it).

        @raise RTSPProtocolError: the server's transport cannot be relayed (502).
        """
        if not 200 <= response.status < 300:
            self.drop(track)
            return None
        header = response.headers.get("Transport")
        specs = parseTransport(header) if header else []
        if not specs:
            self.drop(track)
            raise RTSPProtocolError(502, "the server's SETUP response has no Transport")
        spec = specs[0]
        if spec.lowerTransport != track.serverLower:
            self.drop(track)
            raise RTSPProtocolError(
                502, f"the server answered {spec.lowerTransport}, not {track.serverLower}"
            )
        if track.serverLower == UDP:
            track.serverPorts = spec.serverPorts
            if track.serverPorts is None:
                self.drop(track)
                raise RTSPProtocolError(502, "the server's UDP transport has no server_port")
        else:
            track.serverChannels = spec.interleaved or track.serverChannels
            if track.serverChannels is None:
                self.drop(track)
                raise RTSPProtocolError(502, "the server's TCP transport has no interleaved")
        if track.clientLower == UDP and track.serverLower == UDP:
            return self._relayUDP(track, spec, response)
        if track.clientLower == TCP and track.serverLower == TCP:
            assert track.serverChannels is not None
            track.clientChannels = self._channels.allocate(
                track.serverChannels, track.clientChannels
            )
            spec.setPair("interleaved", track.clientChannels)
            self._route(track)
        elif track.clientLower == TCP:
            self._udpServerToTCPClient(track, spec)
        else:
            self._tcpServerToUDPClient(track, spec)
        response.headers.set("Transport", formatTransport([self._forClient(track, spec)]))
        return None

    def _relayUDP(self, track: Track, spec: TransportSpec, response: Response) -> Deferred[None]:
        assert track.serverPorts is not None and track.clientPorts is not None
        server, client = self._serverIP(), self.session.clientAddress.host
        redirecting: Deferred[Redirection] = self.session.redirectConnections(
            [Address(server, port) for port in track.serverPorts],
            internalAddress=None,
            transport=Transport.UDP,
            flags=RedirectFlags.EVEN_PORTS,
            protocolId=RTP_MEDIA.protocolId,
            sessionFilter=self.sessionFilter,
            context=track,
            expectedPeer=client,
            portRange=self.options.rtpPorts,
            outboundPorts=track.serverFacing,
            peerAddresses=[Address(client, port) for port in track.clientPorts],
            # The track lives until TEARDOWN or the session timeout, which counts RTCP:
            # a PAUSE longer than udp_idle_timeout must not close its silent RTP port.
            udpIdleTimeout=0,
        )

        def granted(redirection: Redirection) -> None:
            if track.closed:
                for action in redirection.actions:
                    action.cancel()
                return
            track.actions = list(redirection.actions)
            track.clientFacingPort = redirection.internalAddress.port
            assert track.clientPorts is not None
            toClient = responseTransportToClient(spec, track.clientFacingPort, track.clientPorts)
            response.headers.set("Transport", formatTransport([toClient]))

        return redirecting.addCallback(granted)

    def _udpServerToTCPClient(self, track: Track, spec: TransportSpec) -> None:
        ports = track.serverFacing
        assert track.serverPorts is not None and ports is not None
        server = self._serverIP()
        for index, port in enumerate(track.serverPorts):
            ports.expect(index, Address(server, port))
        if track.clientChannels is None:
            first = self._freeClientChannels()
            track.clientChannels = (first, first + 1)
        channels = track.clientChannels

        def fromServer(index: int, datagram: bytes, source: Address) -> None:
            self._toClient(InterleavedFrame(channels[index], datagram))

        ports.onDatagram = fromServer
        self._route(track)

    def _tcpServerToUDPClient(self, track: Track, spec: TransportSpec) -> None:
        assert track.clientPorts is not None and track.serverChannels is not None
        client = self.session.clientAddress.host
        ports = self._openPorts(self._internalIP(), client)
        track.clientFacing = ports
        track.clientFacingPort = ports.address.port
        for index, port in enumerate(track.clientPorts):
            ports.expect(index, Address(client, port))
        channels = track.serverChannels

        def fromClient(index: int, datagram: bytes, source: Address) -> None:
            self._toServer(InterleavedFrame(channels[index], datagram))

        ports.onDatagram = fromClient
        self._route(track)

    def _forClient(self, track: Track, spec: TransportSpec) -> TransportSpec:
        if track.clientLower == TCP:
            if track.serverLower == TCP:
                return spec
            result = _rebuilt(spec, "RTP/AVP/TCP", [("unicast", None)])
            assert track.clientChannels is not None
            result.setPair("interleaved", track.clientChannels)
            return result
        assert track.clientPorts is not None and track.clientFacingPort is not None
        result = _rebuilt(spec, "RTP/AVP", [("unicast", None)])
        result.setPair("client_port", track.clientPorts)
        port = track.clientFacingPort
        result.setPair("server_port", (port, port + 1))
        return result

    # Frames.

    def frameFromServer(self, frame: InterleavedFrame) -> InterleavedFrame | None:
        """What to do with a frame on the server's connection: the frame to pass to the
        client (its channel mapped), or None once the filter has sent it as a datagram
        or dropped it."""
        found = self._byServerChannel.get(frame.channel)
        if found is None:
            return None
        track, index = found
        track.framesToClient += 1
        track.frameBytesToClient += len(frame.payload)
        if track.clientLower == TCP:
            assert track.clientChannels is not None
            return InterleavedFrame(track.clientChannels[index], frame.payload)
        if track.clientFacing is not None and track.clientPorts is not None:
            client = self.session.clientAddress.host
            track.clientFacing.send(index, frame.payload, Address(client, track.clientPorts[index]))
        return None

    def frameFromClient(self, frame: InterleavedFrame) -> InterleavedFrame | None:
        """The same for a frame on the client's connection, toward the server."""
        found = self._byClientChannel.get(frame.channel)
        if found is None:
            return None
        track, index = found
        track.framesToServer += 1
        track.frameBytesToServer += len(frame.payload)
        if track.serverLower == TCP:
            assert track.serverChannels is not None
            return InterleavedFrame(track.serverChannels[index], frame.payload)
        if track.serverFacing is not None and track.serverPorts is not None:
            track.serverFacing.send(
                index, frame.payload, Address(self._serverIP(), track.serverPorts[index])
            )
        return None

    # Teardown.

    def teardown(self, url: str) -> None:
        """A TEARDOWN of C{url} succeeded: end that track, or all for the aggregate."""
        matching = [track for track in self.tracks if track.url == url]
        for track in matching or list(self.tracks):
            self.drop(track)

    def drop(self, track: Track) -> None:
        """End C{track}: its ports back to the pool, its channels free."""
        track.close()
        if track in self.tracks:
            self.tracks.remove(track)
        for table in (self._byServerChannel, self._byClientChannel):
            for channel in [c for c, (t, _) in table.items() if t is track]:
                del table[channel]
        if track.serverLower == TCP and track.clientLower == TCP and track.serverChannels:
            self._channels.release(track.serverChannels)

    def closeAll(self) -> None:
        """The session is over: end every track."""
        for track in list(self.tracks):
            self.drop(track)

    # Helpers.

    def _route(self, track: Track) -> None:
        for table, channels in (
            (self._byServerChannel, track.serverChannels),
            (self._byClientChannel, track.clientChannels),
        ):
            if channels is not None:
                for index, channel in enumerate(channels):
                    table[channel] = (track, index)

    def _openPorts(self, host: str | None, peer: str) -> IDatagramPorts:
        return self.session.openDatagramPorts(
            2, host, evenBase=True, expectedPeer=peer, portRange=self.options.rtpPorts
        )

    def _serverIP(self) -> str:
        server = self.session.serverAddress or self.session.defaultUpstream
        assert server is not None
        host: str = server.host
        return host

    def _internalIP(self) -> str:
        internal = self.session.internalAddress
        assert internal is not None
        host: str = internal.host
        return host

    def _freeServerChannels(self) -> int:
        used = set(self._byServerChannel)
        used.update(c for t in self.tracks for c in (t.serverChannels or ()))
        return _firstFreePair(used)

    def _freeClientChannels(self) -> int:
        used = set(self._byClientChannel)
        used.update(c for t in self.tracks for c in (t.clientChannels or ()))
        return _firstFreePair(used)


def _interleavedOnly(specs: list[TransportSpec]) -> list[TransportSpec]:
    """The interleaved transports of a SETUP on a transparent listener.  A player there
    believes it talks to the server: it would send its UDP (RTCP, hole punching) to the
    server's address, past the gateway, and expect RTP from the server's.

    @raise RTSPProtocolError: 461 when none is offered (players then retry interleaved).
    """
    interleaved = [spec for spec in specs if spec.lowerTransport == TCP]
    if not interleaved:
        raise RTSPProtocolError(
            UNSUPPORTED_TRANSPORT,
            "only interleaved transports (RTP/AVP/TCP) pass this transparent gateway",
        )
    return interleaved


def _firstFreePair(used: set[int]) -> int:
    for first in range(0, 255, 2):
        if first not in used and first + 1 not in used:
            return first
    raise RTSPProtocolError(UNSUPPORTED_TRANSPORT, "no interleaved channels left")


def _rebuilt(
    spec: TransportSpec, protocol: str, params: list[tuple[str, str | None]]
) -> TransportSpec:
    result = TransportSpec(protocol, params)
    for name in _KEPT:
        if spec.has(name):
            result.set(name, spec.get(name))
    return result
