"""The zero-copy fast path: taken when it should be, refused when it must be, lossless."""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

import pytest
import pytest_twisted
import support
from support import (
    LOCAL,
    Network,
    Peer,
    RecordingFilter,
    RecordingSessionFilter,
    recordingSession,
    within,
)
from test_relay import HashingUpstream
from twisted.internet import reactor, ssl
from twisted.internet.error import ConnectionLost

from fwxtwisted.filters.tcp import tcpFilter
from fwxtwisted.interfaces import (
    ByteCounts,
    FirewallEvent,
    FirewallNotification,
    LegTLS,
    RedirectFlags,
    Side,
)
from fwxtwisted.net.tls import ServerTLSSettings
from fwxtwisted.relay import splice
from fwxtwisted.relay.datafilter import PassThroughDataFilter
from fwxtwisted.relay.relay import FAST_PATH_AFTER
from fwxtwisted.settings import GatewaySettings
from tests.peers import makeTlsFiles

net = support.net

MIB = 1 << 20
#: Enough to move a relay to the fast path.
BULK = 4 * FAST_PATH_AFTER
BULK_WAIT = 60.0

needsSplice = pytest.mark.skipif(not splice.available(), reason="no splice(2) on this OS")


async def established(sessionFilter: RecordingSessionFilter) -> FirewallNotification:
    return await within(sessionFilter.waitFor(FirewallEvent.ESTABLISHED_CONNECTION))


async def exchangeThrough(
    net: Network, sessionFilter: RecordingSessionFilter, size: int, **kwargs: object
) -> tuple[bool, bool]:
    """Open a redirect with C{kwargs}, send C{size} bytes up and a reply down, close.

    @return: whether the relay could take the fast path when established, and whether
        its bytes did move on it.
    """
    target, address = net.server()
    redirection = await within(sessionFilter.session.redirectConnections([address], **kwargs))
    client: Peer = await net.connect(redirection.internalAddress, peer=Peer(closeOnEOF=False))
    payload = bytes(range(256)) * (size // 256)
    client.send(payload)
    server: Peer = await within(target.accepted.get())
    assert await within(server.waitFor(size)) == payload
    server.send(b"pong")
    assert await within(client.waitFor(4)) == b"pong"
    client.shutdownWrite()
    await within(client.eof)
    closed = await within(sessionFilter.waitFor(FirewallEvent.CONNECTION_TERMINATING))
    assert closed.counts == ByteCounts(size, 4)
    return (await established(sessionFilter)).fastPath, closed.fastPath


@needsSplice
@pytest_twisted.ensureDeferred
async def test_100_mib_through_a_redirect_on_the_fast_path_arrive_intact(net: Network) -> None:
    sessionFilter = await recordingSession(net)
    target, address = net.server(makePeer=HashingUpstream)
    redirection = await within(sessionFilter.session.redirectConnections([address]))
    payload = b"".join(hashlib.sha256(bytes([i])).digest() * 32768 for i in range(100))
    assert len(payload) == 100 * MIB
    client: Peer = await net.connect(redirection.internalAddress, peer=Peer(closeOnEOF=False))
    client.send(payload)
    client.shutdownWrite()
    reply = await within(client.eof, BULK_WAIT)
    assert reply[MIB:].decode() == hashlib.sha256(payload).hexdigest()
    assert (await established(sessionFilter)).fastPath is True
    closed = await within(sessionFilter.waitFor(FirewallEvent.CONNECTION_TERMINATING))
    assert closed.fastPath is True
    assert closed.counts.fromClient == 100 * MIB
    assert closed.counts.fromServer == MIB + 64


@needsSplice
@pytest_twisted.ensureDeferred
async def test_bulk_through_an_unfiltered_redirect_moves_to_the_fast_path(net: Network) -> None:
    sessionFilter = await recordingSession(net)
    assert await exchangeThrough(net, sessionFilter, BULK) == (True, True)


@needsSplice
@pytest_twisted.ensureDeferred
async def test_a_short_exchange_never_leaves_user_mode(net: Network) -> None:
    sessionFilter = await recordingSession(net)
    assert await exchangeThrough(net, sessionFilter, 256) == (True, False)


@pytest_twisted.ensureDeferred
async def test_switched_off_gateway_never_takes_the_fast_path(net: Network) -> None:
    sessionFilter = await recordingSession(net, GatewaySettings(fastPath=False))
    assert await exchangeThrough(net, sessionFilter, BULK) == (False, False)


@pytest_twisted.ensureDeferred
async def test_a_data_filter_keeps_a_redirect_in_user_mode(net: Network) -> None:
    sessionFilter = await recordingSession(net)
    moved = await exchangeThrough(
        net, sessionFilter, BULK, dataFilterFactory=lambda: [PassThroughDataFilter()]
    )
    assert moved == (False, False)


@pytest_twisted.ensureDeferred
async def test_no_kernel_mode_keeps_a_redirect_in_user_mode(net: Network) -> None:
    sessionFilter = await recordingSession(net)
    flags = RedirectFlags.TIMEOUT | RedirectFlags.NO_KERNEL_MODE
    assert await exchangeThrough(net, sessionFilter, BULK, flags=flags) == (False, False)


@pytest_twisted.ensureDeferred
async def test_a_data_filter_keeps_the_primary_in_user_mode(net: Network) -> None:
    recording = RecordingFilter(
        connectUpstream=True, dataFilters=lambda _: [(0, PassThroughDataFilter())]
    )
    upstream, upstreamAddress = net.server()
    running = net.startGateway(recording, upstream=upstreamAddress)
    client, sessionFilter = await net.openSession(running, recording)
    client.send(b"through the filter")
    server: Peer = await within(upstream.accepted.get())
    assert await within(server.waitFor(18)) == b"through the filter"
    assert sessionFilter.session.primary.onFastPath is False


async def primaryThrough(net: Network, size: int) -> bool:
    """Send C{size} bytes through a tcp-filter session; is it on the fast path then?"""
    upstream, upstreamAddress = net.server()
    running = net.startGateway(tcpFilter, upstream=upstreamAddress)
    client: Peer = await net.connect(running.address)
    payload = bytes(range(256)) * (size // 256)
    client.send(payload)
    server: Peer = await within(upstream.accepted.get())
    assert await within(server.waitFor(size)) == payload
    [session] = running.service.sessions
    return session.primary.onFastPath


@needsSplice
@pytest_twisted.ensureDeferred
async def test_bulk_through_the_primary_without_a_filter_moves_to_the_fast_path(
    net: Network,
) -> None:
    assert await primaryThrough(net, BULK) is True


@pytest_twisted.ensureDeferred
async def test_a_short_primary_exchange_builds_no_pipes(net: Network) -> None:
    assert await primaryThrough(net, FAST_PATH_AFTER - 256) is False


@pytest_twisted.ensureDeferred
async def test_a_tls_leg_keeps_a_redirect_in_user_mode(net: Network, tmp_path: Path) -> None:
    files = makeTlsFiles(tmp_path)
    serverOptions = ServerTLSSettings(str(files.cert), str(files.key)).makeOptions()
    sessionFilter = await recordingSession(net)
    target, address = net.server()
    redirection = await within(
        sessionFilter.session.redirectConnections(
            [address], tls={Side.CLIENT: LegTLS(serverOptions, asServer=True)}
        )
    )
    client: Peer = await net.connect(redirection.internalAddress)
    trust = ssl.Certificate.loadPEM(files.caCert.read_bytes())
    client.transport.startTLS(ssl.optionsForClientTLS(LOCAL, trustRoot=trust))  # type: ignore[union-attr]
    client.send(b"over tls")
    server: Peer = await within(target.accepted.get())
    assert await within(server.waitFor(8)) == b"over tls"
    server.send(b"in clear")
    assert await within(client.waitFor(8)) == b"in clear"
    assert (await established(sessionFilter)).fastPath is False


@needsSplice
@pytest_twisted.ensureDeferred
async def test_without_pipes_a_relay_stays_in_user_mode_and_loses_nothing(
    net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    def spent() -> tuple[int, int]:
        raise splice.PipeUnavailable("pipes are 4096 bytes (the user's pipe quota is spent)")

    monkeypatch.setattr(splice, "openPipe", spent)
    sessionFilter = await recordingSession(net)
    assert await exchangeThrough(net, sessionFilter, BULK) == (True, False)


@needsSplice
def test_a_pipe_below_the_minimum_is_refused_and_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(splice, "MIN_PIPE_SIZE", splice.PIPE_SIZE * 2)
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(splice.PipeUnavailable, match=r"pipes are \d+ bytes"):
        splice.openPipe()
    assert len(os.listdir("/proc/self/fd")) == before


@needsSplice
def test_a_pipe_gets_the_full_size() -> None:
    readFd, writeFd = splice.openPipe()
    try:
        assert fcntl.fcntl(writeFd, 1032) >= splice.MIN_PIPE_SIZE  # F_GETPIPE_SZ
    finally:
        os.close(readFd)
        os.close(writeFd)


@needsSplice
@pytest_twisted.ensureDeferred
async def test_a_socket_the_reactor_drops_ends_the_relay(net: Network) -> None:
    """The reactor disconnects a descriptor that hangs up without data to read; a
    spliced socket must end its relay then, not leave it hanging."""
    upstream, upstreamAddress = net.server()
    running = net.startGateway(tcpFilter, upstream=upstreamAddress)
    client: Peer = await net.connect(running.address, peer=Peer(closeOnEOF=False))
    payload = bytes(range(256)) * (BULK // 256)
    client.send(payload)
    server: Peer = await within(upstream.accepted.get())
    assert await within(server.waitFor(BULK)) == payload
    [session] = running.service.sessions
    relay = session.primary
    assert relay._fast is not None
    end = relay._fast._client
    reactor._disconnectSelectable(end, ConnectionLost(), False)  # type: ignore[attr-defined]
    await within(session.whenClosed())
    assert relay._fast is None
    assert "connection lost on the fast path" in (relay._closeReason or "")


@needsSplice
def test_a_refused_resize_keeps_a_default_pipe_that_is_big_enough(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    realFcntl = fcntl.fcntl

    def quotaSpent(fd: int, command: int, *args: int) -> int:
        if command == splice._F_SETPIPE_SZ:  # refused above the user's pipe quota
            raise PermissionError(1, "Operation not permitted")
        return realFcntl(fd, command, *args)

    monkeypatch.setattr(fcntl, "fcntl", quotaSpent)
    readFd, writeFd = splice.openPipe()
    try:
        # Linux's default pipe, 64 KiB, is the minimum the fast path takes.
        assert realFcntl(writeFd, splice._F_GETPIPE_SZ) == splice.MIN_PIPE_SIZE
    finally:
        os.close(readFd)
        os.close(writeFd)
