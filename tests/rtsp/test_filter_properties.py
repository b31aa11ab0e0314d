"""Properties of the rtsp session filter, driven without sockets: how the bytes are
split never changes what it writes, and random bytes never open a port."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from zope.interface import implementer

from fwxtwisted.address import Address
from fwxtwisted.filters.rtsp.control import RTSPSessionFilter
from fwxtwisted.filters.rtsp.options import RTSPOptions
from fwxtwisted.interfaces import Direction, ISession
from tests.rtsp.gateway import request, response

GATEWAY = "rtsp://192.0.2.1:554"


class _Ports:
    """Datagram ports that are only numbers."""

    count = 2

    def __init__(self, base: int) -> None:
        self.address = Address("198.51.100.1", base)
        self.onDatagram: Any = None

    def expect(self, index: int, peer: Address | None) -> None:
        pass

    def send(self, index: int, datagram: bytes, to: Address) -> None:
        pass

    def cancel(self) -> None:
        pass


@implementer(ISession)
class _StubSession:
    """Just enough of a session for the filter to run without sockets."""

    sessionId = "p1"
    clientAddress = Address("192.0.2.50", 40000)
    internalAddress = Address("192.0.2.1", 554)
    externalAddress = "198.51.100.1"
    serverAddress = Address("198.51.100.9", 8554)
    defaultUpstream = Address("198.51.100.9", 8554)
    closed = False

    def __init__(self) -> None:
        self.clock = Clock()
        self.opened = 0
        self.closeReason: str | None = None

    def attachDataFilter(self, dataFilter: Any, priority: int = 0) -> None:
        pass

    def connectUpstream(self, address: Address | None = None) -> Deferred[Address]:
        return succeed(self.serverAddress)

    def openDatagramPorts(self, count: int, host: str | None = None, **kwargs: Any) -> _Ports:
        self.opened += 1
        return _Ports(30000 + 2 * self.opened)

    def redirectConnections(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        raise AssertionError("no UDP response is fed in these properties")

    def close(self, reason: str | None = None) -> None:
        self.closed = True
        self.closeReason = reason


class _Channel:
    def __init__(self) -> None:
        self.written: dict[Direction, bytearray] = {d: bytearray() for d in Direction}

    def write(self, direction: Direction, data: bytes) -> None:
        self.written[direction] += data

    def writeEOF(self, direction: Direction) -> None:
        pass

    def close(self, reason: str) -> None:
        pass


def _run(chunks: list[bytes], serverChunks: list[bytes] = ()) -> tuple[_StubSession, _Channel]:  # type: ignore[assignment]
    session = _StubSession()
    channel = _Channel()
    sessionFilter = RTSPSessionFilter(session, RTSPOptions())  # type: ignore[arg-type]
    sessionFilter.attached(channel)  # type: ignore[arg-type]
    sessionFilter.sessionStarted()
    for chunk in chunks:
        sessionFilter.dataReceived(Direction.CLIENT_TO_SERVER, chunk)
    for chunk in serverChunks:
        sessionFilter.dataReceived(Direction.SERVER_TO_CLIENT, chunk)
    return session, channel


CLIENT_STREAM = (
    request("OPTIONS", f"{GATEWAY}/test", 1)
    + request("DESCRIBE", f"{GATEWAY}/test", 2, "Accept: application/sdp")
    + request(
        "SETUP",
        f"{GATEWAY}/test/stream=0",
        3,
        "Transport: RTP/AVP;unicast;client_port=5000-5001",
    )
    + request("SETUP", f"{GATEWAY}/test/stream=1", 4, "Transport: RTP/AVP/TCP;interleaved=2-3")
    + b"$\x02\x00\x03abc"
    + request("PLAY", f"{GATEWAY}/test", 5, "Session: 1")
)
SERVER_STREAM = response(1, "Public: OPTIONS, DESCRIBE, SETUP, PLAY") + response(
    2,
    "Content-Type: application/sdp",
    "Content-Base: rtsp://198.51.100.9:8554/test/",
    body=b"v=0\r\na=control:rtsp://198.51.100.9:8554/test/stream=0\r\n",
)


def _splits(data: bytes) -> st.SearchStrategy[list[bytes]]:
    cuts = st.lists(st.integers(0, len(data)), max_size=12).map(sorted)
    return cuts.map(
        lambda points: [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    )


@given(_splits(CLIENT_STREAM), _splits(SERVER_STREAM))
@settings(max_examples=60, deadline=None)
def test_any_split_gives_the_same_bytes_each_way(
    clientChunks: list[bytes], serverChunks: list[bytes]
) -> None:
    _, whole = _run([CLIENT_STREAM], [SERVER_STREAM])
    _, split = _run(clientChunks, serverChunks)
    assert split.written == whole.written
    toServer = bytes(whole.written[Direction.CLIENT_TO_SERVER])
    assert b"rtsp://198.51.100.9:8554/test/stream=0" in toServer
    assert b"client_port=30002-30003" in toServer
    toClient = bytes(whole.written[Direction.SERVER_TO_CLIENT])
    assert b"a=control:rtsp://192.0.2.1/test/stream=0" in toClient


@given(st.lists(st.binary(max_size=200) | st.sampled_from([b"SETUP ", b"\r\n", b"$"])))
@settings(max_examples=200, deadline=None)
def test_random_bytes_never_open_a_port(chunks: list[bytes]) -> None:
    session, _ = _run(chunks)
    assert session.opened <= b"".join(chunks).count(b"SETUP")
