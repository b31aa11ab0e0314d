"""Bytes a relay holds for a leg that is not connected yet: order, the limit, the EOF.

Played on in-memory transports: no sockets, no reactor.
"""

from __future__ import annotations

from twisted.internet.testing import StringTransport

from fwxtwisted.heldbytes import HeldBytes
from fwxtwisted.interfaces import Side
from fwxtwisted.relay import PENDING_LIMIT, Relay, RelayLeg


class Transport(StringTransport):
    """Unregisters a producer that is not there without complaint, as Twisted's TCP
    transports do (the relay ends a leg before its partner may have registered)."""

    def unregisterProducer(self) -> None:
        self.producer = None
        self.streaming = None


def connect(relay: Relay, side: Side) -> tuple[RelayLeg, Transport]:
    leg = relay.makeLeg(side)
    transport = Transport()
    leg.makeConnection(transport)
    return leg, transport


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


def test_a_half_close_held_follows_the_bytes_held() -> None:
    relay = Relay()
    client, _ = connect(relay, Side.CLIENT)
    client.dataReceived(b"last words")
    client.readConnectionLost()
    _, server = connect(relay, Side.SERVER)
    assert server.value() == b"last words"
    assert server.disconnecting


def test_nothing_is_held_once_the_relay_is_closing() -> None:
    relay = Relay()
    client, _ = connect(relay, Side.CLIENT)
    relay.close("gateway stopping")
    client.dataReceived(b"too late")
    relay.makeLeg(Side.SERVER).makeConnection(server := Transport())
    assert server.value() == b""
    assert server.disconnecting
