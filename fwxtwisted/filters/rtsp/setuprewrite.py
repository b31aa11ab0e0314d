"""The SETUP rewrite: client transports checked, ports swapped, interleaved channels mapped."""

from __future__ import annotations

import copy
import ipaddress

from fwxtwisted.filters.rtsp.errors import RTSPProtocolError
from fwxtwisted.filters.rtsp.transport import TransportSpec

UNSUPPORTED_TRANSPORT = 461
BAD_GATEWAY = 502

#: Ports below this are refused as RTP destinations: a client could otherwise aim the
#: gateway's media at a privileged service (DNS, syslog) on its own host.
MIN_CLIENT_PORT = 1024


def _refuse(reason: str) -> RTSPProtocolError:
    return RTSPProtocolError(UNSUPPORTED_TRANSPORT, reason)


def _sameAddress(text: str, address: str) -> bool:
    try:
        return ipaddress.ip_address(text.strip("[]")) == ipaddress.ip_address(address)
    except ValueError:
        # A host name could resolve anywhere: only an address literal can be checked.
        return False


def _checkPair(name: str, pair: tuple[int, int], minimum: int, evenFirst: bool) -> None:
    first, last = pair
    if last != first + 1:
        raise _refuse(f"{name}={first}-{last} is not a pair of consecutive numbers")
    if evenFirst and first % 2:
        raise _refuse(f"{name}={first}-{last} starts on an odd port")
    if first < minimum:
        raise _refuse(f"{name}={first}-{last} is below {minimum}")


def checkClientTransport(spec: TransportSpec, clientIP: str, allowMulticast: bool = False) -> None:
    """Refuse a transport a client asks for in SETUP unless the gateway can relay it safely.

    A C{destination} naming the client's own address is removed from C{spec} (it says
    nothing the gateway does not know); any other destination is refused, since the
    gateway would send media wherever it names.  Explicit C{multicast} is refused unless
    C{allowMulticast}.  A UDP transport needs C{client_port} as an even port of at least
    1024 and the next one; an C{interleaved} pair must be two consecutive channels.

    @raise RTSPProtocolError: 461 Unsupported Transport, with the reason; 400 for a
        malformed port or channel parameter.
    """
    if spec.protocol.split("/")[0].upper() != "RTP":
        raise _refuse(f"{spec.protocol} is not RTP")
    if spec.has("destination"):
        destination = spec.get("destination")
        if destination is not None and not _sameAddress(destination, clientIP):
            raise _refuse(f"destination={destination[:60]} is not the client's address")
        spec.remove("destination")
    if spec.isMulticast and not allowMulticast:
        raise _refuse("multicast is not relayed")
    lower = spec.lowerTransport
    if lower == "UDP":
        ports = spec.clientPorts
        if ports is None and not spec.isMulticast:
            raise _refuse("a UDP transport without client_port")
        if ports is not None:
            _checkPair("client_port", ports, MIN_CLIENT_PORT, evenFirst=True)
    elif lower == "TCP":
        channels = spec.interleaved
        if channels is not None:
            _checkPair("interleaved", channels, 0, evenFirst=False)
    else:
        raise _refuse(f"lower transport {lower} is not UDP or TCP")


def _rtpPair(rtpPort: int) -> tuple[int, int]:
    if rtpPort % 2 or not 0 < rtpPort < 65535:
        raise ValueError(f"RTP port {rtpPort} is not an even port with a port after it")
    return rtpPort, rtpPort + 1


def requestTransportToServer(spec: TransportSpec, serverFacingRtpPort: int) -> TransportSpec:
    """A checked client transport as the gateway forwards it to the server.

    C{client_port} becomes the gateway's server-facing pair (C{serverFacingRtpPort}, the
    next port), C{destination} is removed (the server sends to whoever asked, the
    gateway), and C{unicast} is added when neither C{unicast} nor C{multicast} is given:
    RFC 2326 defaults to multicast, which the gateway would not receive.

    @raise ValueError: C{serverFacingRtpPort} is odd or out of range.
    """
    result = copy.deepcopy(spec)
    result.remove("destination")
    if not result.has("unicast") and not result.has("multicast"):
        result.params.insert(0, ("unicast", None))
    result.setPair("client_port", _rtpPair(serverFacingRtpPort))
    return result


def responseTransportToClient(
    spec: TransportSpec, clientFacingRtpPort: int, clientPorts: tuple[int, int]
) -> TransportSpec:
    """A server's SETUP-reply transport as the gateway returns it to the client.

    C{server_port} becomes the gateway's client-facing pair, C{client_port} goes back to
    C{clientPorts} (what the client asked for), and C{source} and C{destination} are
    removed: they name the server and the gateway's server-facing address, which the
    client must not use and need not learn.

    @raise ValueError: C{clientFacingRtpPort} is odd or out of range.
    """
    result = copy.deepcopy(spec)
    result.remove("source")
    result.remove("destination")
    result.setPair("server_port", _rtpPair(clientFacingRtpPort))
    result.setPair("client_port", clientPorts)
    return result


class InterleavedChannels:
    """Map the interleaved channels of tracks between the server and client connections.

    A track keeps its server's channels on the client side unless another track already
    holds them there; only then is it moved to the lowest free pair.  Frames are then
    routed with L{toClient} and L{toServer}; a channel of no track gives None (drop).
    """

    def __init__(self) -> None:
        self._toClient: dict[int, int] = {}
        self._toServer: dict[int, int] = {}

    def allocate(
        self, serverPair: tuple[int, int], requested: tuple[int, int] | None = None
    ) -> tuple[int, int]:
        """Record a track the server put on C{serverPair}; return its client-side pair.

        C{requested} is the pair the client asked for, preferred when free.

        @raise RTSPProtocolError: 502 when the server put two tracks on one channel or
            gave more than two channels; 461 when no pair is left for the client.
        """
        width = serverPair[1] - serverPair[0]
        if width not in (0, 1):
            raise RTSPProtocolError(
                BAD_GATEWAY, f"interleaved={serverPair[0]}-{serverPair[1]} is not one track"
            )
        if any(channel in self._toClient for channel in serverPair):
            raise RTSPProtocolError(
                BAD_GATEWAY,
                f"the server reused interleaved channels {serverPair[0]}-{serverPair[1]}",
            )
        candidates = [pair for pair in (requested, serverPair) if pair is not None]
        candidates += [(first, first + width) for first in range(0, 256 - width, 2)]
        for pair in candidates:
            if pair[1] - pair[0] == width and not any(c in self._toServer for c in pair):
                for server, client in zip(serverPair, pair, strict=True):
                    self._toClient[server] = client
                    self._toServer[client] = server
                return pair
        raise RTSPProtocolError(UNSUPPORTED_TRANSPORT, "no interleaved channels left")

    def release(self, serverPair: tuple[int, int]) -> None:
        """Forget the track on C{serverPair} (its stream was torn down or set up again)."""
        for server in serverPair:
            client = self._toClient.pop(server, None)
            if client is not None:
                del self._toServer[client]

    def toClient(self, serverChannel: int) -> int | None:
        """The client-side channel for a frame from the server, or None."""
        return self._toClient.get(serverChannel)

    def toServer(self, clientChannel: int) -> int | None:
        """The server-side channel for a frame from the client, or None."""
        return self._toServer.get(clientChannel)
