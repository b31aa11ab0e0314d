"""Bytes a relay holds for a leg that is not connected yet: order, the limit, the EOF.

Played on in-memory transports: no sockets, no reactor.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.testing import StringTransport

from fwxtwisted.interfaces import Direction, IDataChannel, Side
from fwxtwisted.relay.datafilter import PassThroughDataFilter
from fwxtwisted.relay.heldbytes import HeldBytes
from fwxtwisted.relay.relay import PENDING_LIMIT, Relay, RelayLeg

C2S = Direction.CLIENT_TO_SERVER
S2C = Direction.SERVER_TO_CLIENT


class Transport(StringTransport):
    """Keeps what happened to it in order (bytes written, half-close, close), and unregisters
    a producer that is not there without complaint, as Twisted's TCP transports do."""

    def __init__(self) -> None:
        super().__init__()
        self.happened: list[bytes | str] = []

    def write(self, data: bytes) -> None:
        super().write(data)
        self.happened.append(data)

    def loseConnection(self) -> None:
        super().loseConnection()
        self.happened.append("closed")

    def loseWriteConnection(self) -> None:
        self.happened.append("half-closed")

    def unregisterProducer(self) -> None:
        self.producer = None
        self.streaming = None


def connect(relay: Relay, side: Side) -> tuple[RelayLeg, Transport]:
    leg = relay.makeLeg(side)
    transport = Transport()
    leg.makeConnection(transport)
    return leg, transport


class WritesWhenAttached(PassThroughDataFilter):
    """A data filter that writes to the peers as soon as it is attached."""

    def __init__(self, *writes: tuple[Direction, bytes | None]) -> None:
        self._writes = writes

    def attached(self, channel: IDataChannel) -> None:
        super().attached(channel)
        for direction, data in self._writes:
            if data is None:
                self.writeEOF(direction)
            else:
                self.write(direction, data)


def relayWith(
    *writes: tuple[Direction, bytes | None],
    onLegConnected: Callable[[RelayLeg], None] | None = None,
) -> Relay:
    relay = Relay(onLegConnected=onLegConnected)
    relay.attachDataFilter(WritesWhenAttached(*writes))
    return relay


def test_held_bytes_come_out_in_order_as_one_string() -> None:
    held = HeldBytes()
    held.add(b"one ")
    assert held.add(b"two") == 7
    assert held.take() == b"one two"
    assert held.size == 0
    assert held.take() == b""


def test_bytes_for_a_leg_not_up_reach_it_when_it_connects() -> None:
    relay = Relay()
    client, _ = connect(relay, Side.CLIENT)
    client.dataReceived(b"early ")
    client.dataReceived(b"bytes")
    _, server = connect(relay, Side.SERVER)
    assert server.value() == b"early bytes"


def test_the_sender_is_paused_past_the_limit_and_resumed_when_the_leg_connects() -> None:
    relay = Relay()
    client, clientTransport = connect(relay, Side.CLIENT)
    client.dataReceived(b"x" * PENDING_LIMIT)
    assert clientTransport.producerState == "producing"
    client.dataReceived(b"y")
    assert clientTransport.producerState == "paused"
    _, server = connect(relay, Side.SERVER)
    assert server.value() == b"x" * PENDING_LIMIT + b"y"
    assert clientTransport.producerState == "producing"


def test_a_half_close_held_goes_out_after_the_bytes_held() -> None:
    relay = Relay()
    client, _ = connect(relay, Side.CLIENT)
    client.dataReceived(b"last words")
    client.readConnectionLost()
    _, server = connect(relay, Side.SERVER)
    assert server.happened == [b"last words", "half-closed"]


def test_the_leg_that_connects_first_gets_what_was_held_for_it() -> None:
    relay = relayWith((S2C, b"hello client"), (S2C, None))
    _, client = connect(relay, Side.CLIENT)
    assert client.happened == [b"hello client", "half-closed"]


def test_held_bytes_go_out_before_what_the_owner_writes_on_connect() -> None:
    def greet(leg: RelayLeg) -> None:
        assert leg.transport is not None
        leg.transport.write(b"from the owner;")

    relay = relayWith((S2C, b"held;"), onLegConnected=greet)
    _, client = connect(relay, Side.CLIENT)
    assert client.value() == b"held;from the owner;"


def test_a_relay_closed_by_a_held_half_close_registers_no_producers() -> None:
    relay = relayWith((S2C, b"bye"), (S2C, None))
    client, clientTransport = connect(relay, Side.CLIENT)
    client.readConnectionLost()
    _, server = connect(relay, Side.SERVER)
    assert server.happened == ["half-closed", "closed"]
    assert clientTransport.happened == [b"bye", "half-closed", "closed"]
    assert clientTransport.producer is None
    assert server.producer is None


def test_a_closing_relay_holds_nothing_and_pauses_no_sender() -> None:
    relay = Relay()
    client, clientTransport = connect(relay, Side.CLIENT)
    relay.close("gateway stopping")
    client.dataReceived(b"z" * (PENDING_LIMIT + 1))
    # A peer being closed must be read on, to its close.
    assert clientTransport.producerState == "producing"
    _, server = connect(relay, Side.SERVER)
    assert server.value() == b""
    assert server.disconnecting
