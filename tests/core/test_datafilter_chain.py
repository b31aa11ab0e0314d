"""IDataFilter chains on the primary connection: rewriting, priority order, EOF, close."""

from __future__ import annotations

from collections.abc import Sequence

import pytest_twisted
import support
from support import (
    Network,
    Peer,
    PeerFactory,
    RecordingFilter,
    RecordingSessionFilter,
    recordingSession,
    turns,
    within,
)

from fwxtwisted.interfaces import Direction, FirewallEvent, IDataChannel
from fwxtwisted.relay.datafilter import PassThroughDataFilter

net = support.net

C2S = Direction.CLIENT_TO_SERVER
S2C = Direction.SERVER_TO_CLIENT


class UpperCase(PassThroughDataFilter):
    """Upper-cases what the client sends; the server's bytes pass unchanged."""

    def dataReceived(self, direction: Direction, data: bytes) -> None:
        self.write(direction, data.upper() if direction is C2S else data)


class Counter(PassThroughDataFilter):
    """Counts and keeps what it sees each way, and the half-closes."""

    def __init__(self) -> None:
        self.seen: dict[Direction, bytes] = {C2S: b"", S2C: b""}
        self.eofs: list[Direction] = []
        self.wasDetached = False

    def dataReceived(self, direction: Direction, data: bytes) -> None:
        self.seen[direction] += data
        self.write(direction, data)

    def eofReceived(self, direction: Direction) -> None:
        self.eofs.append(direction)
        self.writeEOF(direction)

    def detached(self) -> None:
        self.wasDetached = True
        super().detached()

    def count(self, direction: Direction) -> int:
        return len(self.seen[direction])


class Tag(PassThroughDataFilter):
    """Puts its tag before the first bytes it passes each way."""

    def __init__(self, tag: bytes) -> None:
        self.tag = tag
        self.tagged: set[Direction] = set()

    def dataReceived(self, direction: Direction, data: bytes) -> None:
        if direction not in self.tagged:
            self.tagged.add(direction)
            data = self.tag + data
        self.write(direction, data)


class CloseOnQuit(PassThroughDataFilter):
    """Ends the whole connection when the client says QUIT."""

    def dataReceived(self, direction: Direction, data: bytes) -> None:
        if direction is C2S and b"QUIT" in data:
            assert self.channel is not None
            self.channel.close("client said QUIT")
            return
        self.write(direction, data)


async def chain(
    net: Network, filters: Sequence[tuple[int, PassThroughDataFilter]]
) -> tuple[Peer, Peer, RecordingSessionFilter, PeerFactory]:
    """A session whose primary carries C{filters}; returns client, upstream peer, filter."""
    recording = RecordingFilter(connectUpstream=True, dataFilters=lambda _: filters)
    upstream, upstreamAddress = net.server()
    running = net.startGateway(recording, upstream=upstreamAddress)
    client, sessionFilter = await net.openSession(running, recording)
    server: Peer = await within(upstream.accepted.get())
    return client, server, sessionFilter, upstream


@pytest_twisted.ensureDeferred
async def test_data_filter_rewrites_client_bytes(net: Network) -> None:
    client, server, _, _ = await chain(net, [(0, UpperCase())])
    client.send(b"hello")
    assert await within(server.waitFor(5)) == b"HELLO"
    server.send(b"reply")
    assert await within(client.waitFor(5)) == b"reply"


@pytest_twisted.ensureDeferred
async def test_lower_priority_sees_client_bytes_first(net: Network) -> None:
    counter = Counter()
    client, server, _, _ = await chain(net, [(10, UpperCase()), (0, counter)])
    client.send(b"hello")
    assert await within(server.waitFor(5)) == b"HELLO"
    assert counter.seen[C2S] == b"hello"


@pytest_twisted.ensureDeferred
async def test_higher_priority_sees_client_bytes_later(net: Network) -> None:
    counter = Counter()
    client, server, _, _ = await chain(net, [(0, UpperCase()), (10, counter)])
    client.send(b"hello")
    assert await within(server.waitFor(5)) == b"HELLO"
    assert counter.seen[C2S] == b"HELLO"
    assert counter.count(C2S) == 5


@pytest_twisted.ensureDeferred
async def test_server_bytes_cross_the_chain_in_reverse_order(net: Network) -> None:
    filters = [(10, Tag(b"[hi]")), (0, Tag(b"[lo]")), (5, Tag(b"[mid]"))]
    client, server, _, _ = await chain(net, filters)
    client.send(b"up")
    assert await within(server.waitFor(15)) == b"[hi][mid][lo]up"
    server.send(b"down")
    assert await within(client.waitFor(17)) == b"[lo][mid][hi]down"


@pytest_twisted.ensureDeferred
async def test_equal_priorities_keep_the_order_of_attachment(net: Network) -> None:
    client, server, _, _ = await chain(net, [(0, Tag(b"[first]")), (0, Tag(b"[second]"))])
    client.send(b"x")
    assert await within(server.waitFor(16)) == b"[second][first]x"


@pytest_twisted.ensureDeferred
async def test_eof_passes_through_the_chain_each_way(net: Network) -> None:
    counter = Counter()
    client, server, sessionFilter, _ = await chain(net, [(0, counter), (5, UpperCase())])
    server.closeOnEOF = False
    client.send(b"bye")
    client.shutdownWrite()
    assert await within(server.eof) == b"BYE"
    assert counter.eofs == [C2S]
    server.send(b"see you")
    server.shutdownWrite()
    assert await within(client.eof) == b"see you"
    assert counter.eofs == [C2S, S2C]
    await within(sessionFilter.session.whenClosed())
    assert counter.wasDetached


@pytest_twisted.ensureDeferred
async def test_data_filter_can_close_the_connection(net: Network) -> None:
    client, server, sessionFilter, _ = await chain(net, [(0, CloseOnQuit())])
    client.send(b"QUIT")
    await within(client.lost)
    await within(server.lost)
    ending = await within(sessionFilter.waitFor(FirewallEvent.CONNECTION_TERMINATING))
    assert ending.reason == "client said QUIT"
    assert server.received == b""


class Greeter(PassThroughDataFilter):
    """Greets each peer as soon as it is attached, before either leg is connected."""

    def attached(self, channel: IDataChannel) -> None:
        super().attached(channel)
        self.write(S2C, b"hello client;")
        self.write(C2S, b"hello server;")


@pytest_twisted.ensureDeferred
async def test_bytes_written_before_either_leg_connects_reach_both_peers(net: Network) -> None:
    sessionFilter = await recordingSession(net)
    target, address = net.server()
    redirection = await within(
        sessionFilter.session.redirectConnections([address], dataFilterFactory=lambda: [Greeter()])
    )
    client: Peer = await net.connect(redirection.internalAddress)
    server: Peer = await within(target.accepted.get())
    assert await within(client.waitFor(13)) == b"hello client;"
    assert await within(server.waitFor(13)) == b"hello server;"
    client.send(b"up")
    assert await within(server.waitFor(15)) == b"hello server;up"
    server.send(b"down")
    assert await within(client.waitFor(17)) == b"hello client;down"


@pytest_twisted.ensureDeferred
async def test_a_channel_is_not_writable_while_its_peer_does_not_drain(net: Network) -> None:
    """A filter that writes of its own accord learns when its peer stops reading, and
    again when it drains."""
    writer = PassThroughDataFilter()
    upstream, upstreamAddress = net.server()
    recording = RecordingFilter(connectUpstream=True, dataFilters=lambda _: [(0, writer)])
    running = net.startGateway(recording, upstream=upstreamAddress)
    client, sessionFilter = await net.openSession(running, recording)
    await within(sessionFilter.upstream)  # type: ignore[arg-type]
    assert writer.channel is not None
    assert writer.channel.writable(S2C)
    client.transport.pauseProducing()  # type: ignore[union-attr]
    chunk = b"x" * 65536
    written = 0
    for _ in range(2000):  # at most 128 MiB; the socket buffers fill long before
        if not writer.channel.writable(S2C):
            break
        writer.channel.write(S2C, chunk)
        written += len(chunk)
        await turns(1)
    assert not writer.channel.writable(S2C)
    assert writer.channel.writable(C2S)
    client.transport.resumeProducing()  # type: ignore[union-attr]
    await within(client.waitFor(written))
    for _ in range(200):
        if writer.channel.writable(S2C):
            break
        await turns(1)
    assert writer.channel.writable(S2C)
