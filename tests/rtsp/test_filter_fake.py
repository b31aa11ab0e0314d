"""The rtsp filter on FakeSession: a UDP track and a translated track, with no sockets."""

from __future__ import annotations

from fwxtwisted.address import Address
from fwxtwisted.filters.rtsp.control import RTSPSessionFilter
from fwxtwisted.filters.rtsp.filter import rtspFilter
from fwxtwisted.filters.rtsp.message import InterleavedFrame
from fwxtwisted.filters.rtsp.transport import parseTransport
from fwxtwisted.interfaces import Direction, RedirectFlags, Transport
from fwxtwisted.testing import DEFAULT_UPSTREAM, FakeSession, SentDatagram
from tests.rtsp.gateway import request, response

GATEWAY = "rtsp://192.0.2.1:554"


def _setup(session: FakeSession, transport: str) -> None:
    session.clientSends(request("SETUP", f"{GATEWAY}/test/stream=0", 1, f"Transport: {transport}"))


def test_a_udp_setup_asks_for_even_pairs_and_symmetric_ports() -> None:
    session = FakeSession.forFilter(rtspFilter, autoGrant=True, firstPort=30001)
    session.succeedUpstream()
    _setup(session, "RTP/AVP;unicast;client_port=5000-5001")
    (serverFacing,) = session.datagramPorts
    assert serverFacing.address.port % 2 == 0
    assert serverFacing.address.host == session.externalAddress
    (spec,) = parseTransport(session.toServer.split(b"Transport: ")[1].split(b"\r\n")[0].decode())
    assert spec.clientPorts == (serverFacing.address.port, serverFacing.address.port + 1)
    session.serverSends(
        response(1, "Transport: RTP/AVP;unicast;client_port=1-2;server_port=6970-6971")
    )
    (call,) = session.redirectCalls
    assert call.transport is Transport.UDP
    assert RedirectFlags.EVEN_PORTS in call.flags
    assert call.outboundPorts is serverFacing
    assert call.udpIdleTimeout == 0  # the track's lifetime is the filter's to end
    client = session.clientAddress.host
    assert call.peerAddresses == (Address(client, 5000), Address(client, 5001))
    server = DEFAULT_UPSTREAM.host
    assert tuple(call.connectAddresses) == (Address(server, 6970), Address(server, 6971))
    assert b"server_port=" in session.toClient and b"client_port=5000-5001" in session.toClient


def test_policy_udp_turns_server_datagrams_into_frames() -> None:
    session = FakeSession.forFilter(
        rtspFilter, {"transport_policy": "udp"}, autoGrant=True, firstPort=30000
    )
    session.succeedUpstream()
    _setup(session, "RTP/AVP/TCP;unicast;interleaved=0-1")
    (ports,) = session.datagramPorts
    session.serverSends(response(1, "Transport: RTP/AVP;unicast;server_port=6970-6971"))
    server = DEFAULT_UPSTREAM.host
    assert not ports.receive(0, b"spoofed", Address(server, 9999))
    assert ports.receive(0, b"rtp", Address(server, 6970))
    assert session.toClient.endswith(InterleavedFrame(0, b"rtp").serialize())
    session.clientSends(InterleavedFrame(1, b"rtcp").serialize())
    assert ports.sent == [SentDatagram(1, b"rtcp", Address(server, 6971))]
    assert ports.dropped == 1


def test_frames_made_of_datagrams_are_dropped_while_the_client_does_not_drain() -> None:
    session = FakeSession.forFilter(
        rtspFilter, {"transport_policy": "udp"}, autoGrant=True, firstPort=30000
    )
    session.succeedUpstream()
    _setup(session, "RTP/AVP/TCP;unicast;interleaved=0-1")
    (ports,) = session.datagramPorts
    session.serverSends(response(1, "Transport: RTP/AVP;unicast;server_port=6970-6971"))
    server = Address(DEFAULT_UPSTREAM.host, 6970)
    session.backedUp.add(Direction.SERVER_TO_CLIENT)
    before = len(session.toClient)
    assert ports.receive(0, b"lost", server)
    assert len(session.toClient) == before
    session.backedUp.clear()
    assert ports.receive(0, b"kept", server)
    assert session.toClient.endswith(InterleavedFrame(0, b"kept").serialize())
    sessionFilter = session.sessionFilter
    assert isinstance(sessionFilter, RTSPSessionFilter)
    assert sessionFilter.report.congestionDrops == 1
