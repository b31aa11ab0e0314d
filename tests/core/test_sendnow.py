"""Bytes and FINs sent at once on an idle plain TCP transport, queued otherwise; a
connect cancelled from another connection's event closes its socket a turn later."""

from __future__ import annotations

import hashlib
import select
import socket
from typing import Any

import pytest_twisted
import support
from support import Network, Peer, turns, within
from twisted.internet import reactor, ssl
from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionDone

from fwxtwisted.net.connect import connectFrom
from fwxtwisted.net.sendnow import closeNow, shutWritingNow, writeNow

net = support.net

#: Far more than loopback socket buffers hold: a send takes only part of it.
LARGE = 32 * 1024 * 1024


async def acceptedBy(net: Network) -> tuple[Peer, socket.socket]:
    """A Twisted server-side peer, and the blocking raw socket connected to it."""
    server, address = net.server(makePeer=lambda: Peer(closeOnEOF=False))
    raw = socket.create_connection((address.host, address.port), timeout=support.WAIT)
    net._sockets.append(raw)
    peer: Peer = await within(server.accepted.get())
    return peer, raw


def readableNow(raw: socket.socket) -> bool:
    """True when C{raw} has bytes or an EOF waiting, without the reactor running."""
    readable, _, _ = select.select([raw], [], [], 1.0)
    return bool(readable)


@pytest_twisted.ensureDeferred
async def test_bytes_reach_the_peer_before_the_reactor_runs_again(net: Network) -> None:
    peer, raw = await acceptedBy(net)
    writeNow(peer.transport, b"now")
    assert readableNow(raw)
    assert raw.recv(16) == b"now"
    assert peer.transport not in reactor.getWriters()


@pytest_twisted.ensureDeferred
async def test_bytes_behind_queued_ones_wait_their_turn(net: Network) -> None:
    peer, raw = await acceptedBy(net)
    transport: Any = peer.transport
    transport.write(b"first ")
    writeNow(transport, b"second")
    await turns()
    assert raw.recv(64) == b"first second"


@pytest_twisted.ensureDeferred
async def test_what_the_socket_does_not_take_is_queued_in_order(net: Network) -> None:
    peer, raw = await acceptedBy(net)
    data = bytes(range(256)) * (LARGE // 256)
    writeNow(peer.transport, data)
    writeNow(peer.transport, b"tail")
    received = hashlib.sha256()
    size = 0
    raw.setblocking(False)
    while size < len(data) + 4:
        try:
            chunk = raw.recv(1 << 20)
        except BlockingIOError:
            await turns(1)
            continue
        received.update(chunk)
        size += len(chunk)
    assert size == len(data) + 4
    assert received.hexdigest() == hashlib.sha256(data + b"tail").hexdigest()


@pytest_twisted.ensureDeferred
async def test_fin_now_keeps_the_other_direction_open(net: Network) -> None:
    peer, raw = await acceptedBy(net)
    assert shutWritingNow(peer.transport)
    assert readableNow(raw)
    assert raw.recv(16) == b""
    raw.sendall(b"still heard")
    assert await within(peer.waitFor(11)) == b"still heard"


@pytest_twisted.ensureDeferred
async def test_fin_waits_for_queued_bytes(net: Network) -> None:
    peer, raw = await acceptedBy(net)
    peer.transport.write(b"queued")  # type: ignore[union-attr]
    assert not shutWritingNow(peer.transport)
    peer.transport.loseWriteConnection()  # type: ignore[union-attr]
    await turns()
    assert raw.recv(16) == b"queued"
    assert raw.recv(16) == b""


@pytest_twisted.ensureDeferred
async def test_close_now_needs_the_writing_half_shut(net: Network) -> None:
    peer, raw = await acceptedBy(net)
    assert not closeNow(peer.transport)
    raw.shutdown(socket.SHUT_WR)
    assert await within(peer.eof) == b""
    assert shutWritingNow(peer.transport)
    assert closeNow(peer.transport)
    assert isinstance(await within(peer.lost), ConnectionDone)
    assert raw.recv(16) == b""
    assert peer.transport not in reactor.getReaders()


@pytest_twisted.ensureDeferred
async def test_a_tls_transport_is_left_to_twisted(net: Network) -> None:
    peer, _ = await acceptedBy(net)
    transport: Any = peer.transport
    transport.startTLS(ssl.CertificateOptions(), False)
    assert not shutWritingNow(transport)
    assert not closeNow(transport)


class _Leg(Peer):
    onConnected: Any = None


@pytest_twisted.ensureDeferred
async def test_a_cancelled_connect_fails_at_once_and_closes_its_socket_a_turn_later(
    net: Network,
) -> None:
    # Closing the socket at once, from another connection's event, would free its
    # descriptor for a socket opened later in the same poll round: the reactor would
    # then hand the new socket this one's pending readiness.
    target = net.unresponsive()
    attempt = connectFrom(reactor, target, None, _Leg(), 30.0)
    await turns(1)
    connecting = [
        w for w in reactor.getWriters() if getattr(w, "addr", None) == (target.host, target.port)
    ]
    assert len(connecting) == 1
    outcome: list[Any] = []
    attempt.addErrback(outcome.append)
    attempt.cancel()
    assert outcome and outcome[0].check(CancelledError)
    assert connecting[0].socket.fileno() != -1
    await turns(2)
    assert connecting[0] not in reactor.getWriters()
    assert not hasattr(connecting[0], "socket") or connecting[0].socket.fileno() == -1
