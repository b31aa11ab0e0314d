"""Sending at once on an idle plain TCP transport, and falling back when it is not idle."""

from __future__ import annotations

import pytest_twisted
import support
from support import Network, Peer, within

from fwxtwisted.sendnow import halfCloseNow, writeNow

net = support.net


def buffered(transport: object) -> int:
    """Bytes a Twisted transport holds, not yet sent."""
    return len(transport.dataBuffer) + transport._tempDataLen  # type: ignore[attr-defined]


async def pair(net: Network) -> tuple[Peer, Peer]:
    target, address = net.server()
    client: Peer = await net.connect(address, peer=Peer(closeOnEOF=False))
    server: Peer = await within(target.accepted.get())
    return client, server


@pytest_twisted.ensureDeferred
async def test_an_idle_transport_sends_without_buffering(net: Network) -> None:
    client, server = await pair(net)
    writeNow(client.transport, b"at once")
    assert buffered(client.transport) == 0
    assert await within(server.waitFor(7)) == b"at once"


@pytest_twisted.ensureDeferred
async def test_bytes_behind_buffered_ones_keep_their_order(net: Network) -> None:
    client, server = await pair(net)
    assert client.transport is not None
    client.transport.write(b"first ")
    writeNow(client.transport, b"second")
    assert buffered(client.transport) == 12
    assert await within(server.waitFor(12)) == b"first second"


@pytest_twisted.ensureDeferred
async def test_what_the_kernel_refuses_is_buffered_in_order(net: Network) -> None:
    client, server = await pair(net)
    server.transport.pauseProducing()  # type: ignore[union-attr]
    payload = bytes(range(256)) * (64 * 1024)  # 16 MiB: more than loopback buffers hold
    writeNow(client.transport, payload)
    assert 0 < buffered(client.transport) < len(payload)
    writeNow(client.transport, b"tail")
    server.transport.resumeProducing()  # type: ignore[union-attr]
    assert await within(server.waitFor(len(payload) + 4), 30.0) == payload + b"tail"


@pytest_twisted.ensureDeferred
async def test_half_close_on_an_idle_transport_is_immediate(net: Network) -> None:
    client, server = await pair(net)
    writeNow(client.transport, b"bye")
    halfCloseNow(client.transport)
    assert client.transport._writeDisconnected is True  # type: ignore[union-attr]
    assert await within(server.eof) == b"bye"
    server.send(b"still open")
    assert await within(client.waitFor(10)) == b"still open"


@pytest_twisted.ensureDeferred
async def test_half_close_waits_for_buffered_bytes(net: Network) -> None:
    client, server = await pair(net)
    assert client.transport is not None
    client.transport.write(b"queued")
    halfCloseNow(client.transport)
    assert client.transport._writeDisconnected is False  # type: ignore[attr-defined]
    assert await within(server.eof) == b"queued"
