"""Tests for fwxtwisted.filters.rtsp.setuprewrite: SETUP transport checks and rewrites."""

from __future__ import annotations

import pytest

from fwxtwisted.filters.rtsp.errors import RTSPProtocolError
from fwxtwisted.filters.rtsp.setuprewrite import (
    InterleavedChannels,
    checkClientTransport,
    requestTransportToServer,
    responseTransportToClient,
)
from fwxtwisted.filters.rtsp.transport import TransportSpec

CLIENT = "192.0.2.10"


def spec(text: str) -> TransportSpec:
    return TransportSpec.parse(text)


def refusal(text: str, allowMulticast: bool = False) -> RTSPProtocolError:
    with pytest.raises(RTSPProtocolError) as caught:
        checkClientTransport(spec(text), CLIENT, allowMulticast)
    return caught.value


def test_plainUnicastAccepted() -> None:
    checkClientTransport(spec("RTP/AVP;unicast;client_port=5000-5001"), CLIENT)


def test_interleavedAccepted() -> None:
    checkClientTransport(spec("RTP/AVP/TCP;unicast;interleaved=0-1"), CLIENT)


def test_interleavedWithoutChannelsAccepted() -> None:
    checkClientTransport(spec("RTP/AVP/TCP;unicast"), CLIENT)


def test_destinationOfClientStripped() -> None:
    transport = spec("RTP/AVP;unicast;destination=192.0.2.10;client_port=5000-5001")
    checkClientTransport(transport, CLIENT)
    assert transport.format() == "RTP/AVP;unicast;client_port=5000-5001"


def test_destinationOfClientIPv6Stripped() -> None:
    transport = spec("RTP/AVP;unicast;destination=[2001:DB8::A];client_port=5000-5001")
    checkClientTransport(transport, "2001:db8::a")
    assert not transport.has("destination")


@pytest.mark.parametrize(
    "destination", ["198.51.100.7", "127.0.0.1", "localhost", "192.0.2.10.evil.net", "0"]
)
def test_foreignDestinationRefused(destination: str) -> None:
    error = refusal(f"RTP/AVP;unicast;destination={destination};client_port=5000-5001")
    assert error.status == 461


def test_multicastRefused() -> None:
    assert refusal("RTP/AVP;multicast;ttl=127").status == 461


def test_multicastAllowed() -> None:
    checkClientTransport(spec("RTP/AVP;multicast;ttl=127"), CLIENT, allowMulticast=True)


@pytest.mark.parametrize(
    "ports", ["53-54", "1022-1023", "0-1", "5001-5002", "5000-5002", "5000", "5000-5000"]
)
def test_badClientPortsRefused(ports: str) -> None:
    assert refusal(f"RTP/AVP;unicast;client_port={ports}").status == 461


def test_lowestClientPortAccepted() -> None:
    checkClientTransport(spec("RTP/AVP;unicast;client_port=1024-1025"), CLIENT)


def test_malformedPortIs400() -> None:
    assert refusal("RTP/AVP;unicast;client_port=70000-70001").status == 400


def test_udpWithoutClientPortRefused() -> None:
    assert refusal("RTP/AVP;unicast").status == 461


def test_interleavedNotPairRefused() -> None:
    assert refusal("RTP/AVP/TCP;unicast;interleaved=0-3").status == 461


def test_otherLowerTransportRefused() -> None:
    assert refusal("RTP/AVP/SCTP;unicast").status == 461


def test_nonRTPRefused() -> None:
    assert refusal("x-real-rdt/udp;client_port=6970").status == 461


def test_requestToServer() -> None:
    transport = spec("RTP/AVP;unicast;client_port=5000-5001;mode=PLAY")
    assert requestTransportToServer(transport, 40000).format() == (
        "RTP/AVP;unicast;client_port=40000-40001;mode=PLAY"
    )


def test_requestToServerLeavesOriginal() -> None:
    transport = spec("RTP/AVP;unicast;client_port=5000-5001")
    requestTransportToServer(transport, 40000)
    assert transport.clientPorts == (5000, 5001)


def test_requestToServerAddsUnicast() -> None:
    assert requestTransportToServer(spec("RTP/AVP;client_port=5000-5001"), 40000).format() == (
        "RTP/AVP;unicast;client_port=40000-40001"
    )


def test_requestToServerRemovesDestination() -> None:
    transport = spec("RTP/AVP;unicast;destination=192.0.2.10;client_port=5000-5001")
    assert not requestTransportToServer(transport, 40000).has("destination")


@pytest.mark.parametrize("port", [40001, 0, 65535, 70000])
def test_requestToServerRefusesBadGatewayPort(port: int) -> None:
    with pytest.raises(ValueError):
        requestTransportToServer(spec("RTP/AVP;unicast;client_port=5000-5001"), port)


REPLY = (
    "RTP/AVP;unicast;client_port=40000-40001;server_port=6970-6971;"
    'source=10.0.0.5;ssrc=1234;mode="PLAY"'
)


def test_responseToClient() -> None:
    assert responseTransportToClient(spec(REPLY), 50000, (5000, 5001)).format() == (
        'RTP/AVP;unicast;client_port=5000-5001;server_port=50000-50001;ssrc=1234;mode="PLAY"'
    )


def test_responseToClientRemovesDestination() -> None:
    reply = spec("RTP/AVP;unicast;destination=10.0.0.1;client_port=40000-40001")
    result = responseTransportToClient(reply, 50000, (5000, 5001))
    assert result.format() == "RTP/AVP;unicast;client_port=5000-5001;server_port=50000-50001"


def test_responseToClientRefusesOddPort() -> None:
    with pytest.raises(ValueError):
        responseTransportToClient(spec(REPLY), 50001, (5000, 5001))


def test_channelsKeptWhenFree() -> None:
    channels = InterleavedChannels()
    assert channels.allocate((0, 1), (0, 1)) == (0, 1)
    assert channels.allocate((2, 3), (2, 3)) == (2, 3)
    assert (channels.toClient(2), channels.toServer(3)) == (2, 3)


def test_requestedChannelsPreferred() -> None:
    channels = InterleavedChannels()
    assert channels.allocate((0, 1), (4, 5)) == (4, 5)
    assert channels.toClient(0) == 4
    assert channels.toServer(5) == 1


def test_collidingTrackMoved() -> None:
    channels = InterleavedChannels()
    channels.allocate((2, 3), (0, 1))
    assert channels.allocate((0, 1), (0, 1)) == (2, 3)
    assert channels.toClient(0) == 2
    assert channels.toClient(2) == 0


def test_serverReusingChannelsRefused() -> None:
    channels = InterleavedChannels()
    channels.allocate((0, 1))
    with pytest.raises(RTSPProtocolError) as caught:
        channels.allocate((1, 2))
    assert caught.value.status == 502


def test_wideServerRangeRefused() -> None:
    with pytest.raises(RTSPProtocolError):
        InterleavedChannels().allocate((0, 5))


def test_unknownChannelDropped() -> None:
    channels = InterleavedChannels()
    channels.allocate((0, 1))
    assert channels.toClient(7) is None
    assert channels.toServer(7) is None


def test_releaseFreesChannels() -> None:
    channels = InterleavedChannels()
    channels.allocate((0, 1))
    channels.release((0, 1))
    assert channels.toClient(0) is None
    assert channels.allocate((0, 1)) == (0, 1)


def test_allChannelsUsed() -> None:
    channels = InterleavedChannels()
    for first in range(0, 256, 2):
        channels.allocate((first, first + 1))
    with pytest.raises(RTSPProtocolError):
        channels.allocate((254, 255))
