"""Faults: an upstream that refuses, never answers, dies mid-transfer or speaks
garbage; clients that abort a transfer (ABOR) or reset their connections.

The gateway runs in this process (the FTP filter on a FirewallService, real loopback
sockets); clients are ftplib or raw sockets in threads; servers are vsftpd or a scripted
server of the test. After every fault the test checks what the gateway still holds:
each session closed with no permission left, no timer of the gateway pending, no socket
or listener of the gateway left on the reactor, and no traceback in its log.
"""

from __future__ import annotations

import ftplib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

from fwxtwisted.address import Address
from fwxtwisted.interfaces import FirewallEvent
from fwxtwisted.settings import GatewaySettings
from tests.core.support import Network, RecordingFilter, within
from tests.interop.support import ftplibDownload
from tests.reliability.conftest import Files, Upstream
from tests.reliability.support import (
    SOCKET_TIMEOUT,
    FakeControl,
    InProcessFTPGateway,
    LogCapture,
    RawFtp,
    fakeServer,
    readAll,
    resetSocket,
)

T = TypeVar("T")

#: The bound on one client's work in a thread, in seconds (its sockets time out sooner).
THREAD_WAIT = 30.0

Make = Callable[..., InProcessFTPGateway]


async def inThread(function: Callable[..., T], *args: Any) -> T:
    """Run a blocking client in a thread while the reactor goes on."""
    result: T = await within(deferToThread(function, *args), THREAD_WAIT)
    return result


@pytest.fixture
def captured() -> Iterator[LogCapture]:
    """The gateway's log events during the test."""
    with LogCapture().attached() as capture:
        yield capture


@pytest.fixture
def gateways() -> Iterator[Make]:
    """make(upstreams, settings=None, ftpOptions=None): an in-process FTP gateway,
    stopped at the end of the test."""
    made: list[InProcessFTPGateway] = []

    def make(*args: Any, **kwargs: Any) -> InProcessFTPGateway:
        gateway = InProcessFTPGateway(*args, **kwargs)
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        pytest_twisted.blockon(Deferred.fromCoroutine(gateway.stop()))


def everything(address: tuple[str, int]) -> bytes:
    """What a client connecting to `address` receives until the gateway closes."""
    with socket.create_connection(address, timeout=SOCKET_TIMEOUT) as sock:
        return readAll(sock)


def assertNoFailures(captured: LogCapture) -> None:
    failures = captured.failures()
    assert failures == [], "\n".join(failures)


# -- the upstream ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_upstreamRefuses(net: Network, gateways: Make, captured: LogCapture) -> None:
    """A closed upstream port: each client gets 421 naming the refusal, then the close;
    the gateway keeps accepting."""
    closed = net.freePort()
    gateway = gateways({"ftp": ("127.0.0.1", closed)})
    expected = f"421 service not available: connection to 127.0.0.1:{closed} refused\r\n"
    for _ in range(2):
        assert await inThread(everything, gateway.addresses["ftp"]) == expected.encode()
    await gateway.assertReleased()
    assert len(gateway.sessions) == 2
    assert f"connection to 127.0.0.1:{closed} refused" in captured.text()
    assertNoFailures(captured)


@pytest_twisted.ensureDeferred
async def test_upstreamUnreachableTimesOut(
    net: Network, gateways: Make, captured: LogCapture
) -> None:
    """An upstream whose accept queue is full (a listener with backlog 0, filled by one
    connection nobody accepts) drops the gateway's SYNs: with connect_timeout 1 the
    client gets 421 after a second, naming the timeout."""
    silent = net.unresponsive()
    gateway = gateways(
        {"ftp": (silent.host, silent.port)},
        GatewaySettings(connectTimeout=1.0, shutdownGrace=1.0),
    )
    began = time.monotonic()
    received = await inThread(everything, gateway.addresses["ftp"])
    elapsed = time.monotonic() - began
    expected = (
        f"421 service not available: connecting to 127.0.0.1:{silent.port} timed out after 1 s"
    )
    assert received == f"{expected}\r\n".encode()
    assert 0.9 <= elapsed < 4.0
    await gateway.assertReleased()
    assertNoFailures(captured)


@pytest.mark.parametrize(
    "garbage",
    [b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", bytes(range(256)) * 16],
    ids=["ssh-banner", "binary"],
)
@pytest_twisted.ensureDeferred
async def test_garbageFromTheServerGets421(
    garbage: bytes, gateways: Make, captured: LogCapture
) -> None:
    """An upstream that is not an FTP server (an SSH banner, or binary bytes with no
    line end): the client gets 421 and the session ends."""

    def notFtp(control: FakeControl) -> None:
        control.send(garbage)
        control.readCommand()  # until the gateway hangs up

    with fakeServer(notFtp) as fake:
        gateway = gateways({"ftp": fake.address})
        received = await inThread(everything, gateway.addresses["ftp"])
        assert received == b"421 the server sent an invalid reply; closing\r\n"
        await gateway.assertReleased()
    assert "bad reply from server" in captured.text()
    assertNoFailures(captured)


PARTIAL = 512 * 1024


@pytest.mark.peers
@pytest.mark.parametrize("reset", [True, False], ids=["rst", "fin"])
@pytest_twisted.ensureDeferred
async def test_serverDiesMidTransfer(
    reset: bool, upstream: Upstream, files: Files, gateways: Make, captured: LogCapture
) -> None:
    """The server kills its data and control connections in the middle of a RETR: the
    client gets a 421/426 or a clean close (no hang), and the gateway, releasing that
    session whole, goes on serving a session open all along to another server."""
    payload = bytes(range(256)) * (4 * 4096)  # 4 MiB

    def dying(control: FakeControl) -> None:
        def retrieve(control: FakeControl, argument: str) -> bool:
            data = control.acceptData()
            control.send("150 Opening BINARY mode data connection.")
            data.sendall(payload[:PARTIAL])
            time.sleep(0.2)
            control.kill(data, reset=reset)
            return False

        control.serve({}, {"RETR": retrieve})

    with fakeServer(dying) as fake:
        gateway = gateways({"faulty": fake.address, "normal": upstream.server.address})
        bystander = await inThread(loggedIn, gateway.addresses["normal"])
        try:
            outcome = await inThread(retrieveUntilDeath, gateway.addresses["faulty"])
            received, controlSaw = outcome
            assert 0 < received <= PARTIAL
            # A RST gets the client "421 connection to the server lost: ..."; a FIN is
            # passed on as it is (the client sees the server's clean close).
            lost = ("421 connection to the server lost: ", "426 ")
            assert controlSaw == "EOF" or controlSaw.startswith(lost), controlSaw
            # That session is over, all of it, while the other runs.
            faulty = [s for s in gateway.sessions if s.serverAddress == Address(*fake.address)]
            assert len(faulty) == 1
            await waitUntil(lambda: faulty[0].closed and not faulty[0].actions)
            digest = await inThread(ftplibDownload, bystander, files.medium.name)
            assert digest == (files.medium.sha256, files.medium.size)
        finally:
            await inThread(closeQuietly, bystander)
        await gateway.assertReleased()
    assertNoFailures(captured)


async def waitUntil(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll `condition` while the reactor runs; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await task.deferLater(reactor, 0.05, lambda: None)


def loggedIn(address: tuple[str, int]) -> ftplib.FTP:
    ftp = ftplib.FTP(timeout=SOCKET_TIMEOUT)
    ftp.connect(*address)
    ftp.login()
    return ftp


def closeQuietly(ftp: ftplib.FTP) -> None:
    try:
        ftp.quit()
    except (OSError, EOFError, ftplib.Error):
        pass
    finally:
        ftp.close()


def retrieveUntilDeath(address: tuple[str, int]) -> tuple[int, str]:
    """RETR from a server that dies: (bytes received, what the control connection
    said next: a reply line or "EOF")."""
    with RawFtp(address) as client:
        client.login()
        data = client.dataConnection(client.pasv())
        client.send("RETR doomed.bin")
        assert client.reply()[0] == 150
        received = 0
        with data:
            try:
                while chunk := data.recv(1 << 16):
                    received += len(chunk)
            except ConnectionResetError:
                pass
        try:
            code, text = client.reply()
        except (EOFError, ConnectionResetError):
            return received, "EOF"
        # Whatever came, the connection ends after it.
        assert readAll(client.sock) == b""
        return received, text


# -- the client ------------------------------------------------------------------------------


@pytest.mark.peers
@pytest_twisted.ensureDeferred
async def test_clientAbortsWithABOR(
    upstream: Upstream, files: Files, gateways: Make, captured: LogCapture
) -> None:
    """ftplib's abort() (ABOR sent as urgent data) in the middle of a RETR, the client
    still reading the data socket: ABOR reaches the server whole and is answered, the
    session goes on, and another session is unaffected."""
    gateway = gateways({"ftp": upstream.server.address})
    bystander = await inThread(loggedIn, gateway.addresses["ftp"])
    try:
        replies = await inThread(abortRetrieve, gateway.addresses["ftp"], files.medium.name)
        # vsftpd reads commands only between transfers (its async_abor_enable is off):
        # the transfer ends, then ABOR is answered; then the session goes on.
        assert replies == ["226 Transfer complete.", "225 No transfer to ABOR.", "200"]
        digest = await inThread(ftplibDownload, bystander, files.small.name)
        assert digest == (files.small.sha256, files.small.size)
    finally:
        await inThread(closeQuietly, bystander)
    await gateway.assertReleased()
    assertNoFailures(captured)


def abortRetrieve(address: tuple[str, int], name: str) -> list[str]:
    """RETR `name`, then ftplib's abort() while a thread keeps reading the data socket;
    the replies that follow, and NOOP's code."""
    ftp = loggedIn(address)
    try:
        ftp.voidcmd("TYPE I")
        data = ftp.transfercmd(f"RETR {name}")
        data.settimeout(SOCKET_TIMEOUT)
        first = data.recv(1 << 16)
        assert first
        drained = threading.Thread(target=readAll, args=(data,), daemon=True)
        drained.start()
        replies = [ftp.abort()]
        drained.join(SOCKET_TIMEOUT)
        data.close()
        replies.append(ftp.getresp())
        replies.append(ftp.voidcmd("NOOP")[:3])
        ftp.quit()
        return replies
    finally:
        ftp.close()


@pytest.mark.peers
@pytest.mark.parametrize("what", ["data", "data-and-control", "control"])
@pytest_twisted.ensureDeferred
async def test_clientResetsMidTransfer(
    what: str, upstream: Upstream, files: Files, gateways: Make, captured: LogCapture
) -> None:
    """A client resets (SO_LINGER 0) in the middle of a RETR of 128 MiB, the server
    still sending: its data connection, then goes on (and gets the server's 426); or
    its data and control connections; or its control connection only (the gateway then
    ends the data connection). Other sessions continue; the gateway releases everything,
    logs the cut transfer once with the bytes it relayed, and logs no traceback."""
    gateway = gateways({"ftp": upstream.server.address})
    bystander = await inThread(loggedIn, gateway.addresses["ftp"])
    try:
        after = await inThread(resetRetrieve, gateway.addresses["ftp"], files.large.name, what)
        if what == "data":
            assert after[0].startswith("426 "), after
            assert after[1:] == ["200"]
        else:
            assert after == []
            victim = gateway.sessions[-1]
            await waitUntil(lambda: victim.closed and not victim.actions)
        digest = await inThread(ftplibDownload, bystander, files.medium.name)
        assert digest == (files.medium.sha256, files.medium.size)
    finally:
        await inThread(closeQuietly, bystander)
    await gateway.assertReleased()
    cut = [e for e in captured.transfers() if e["path"] == files.large.name]
    assert len(cut) == 1, cut
    assert READ <= cut[0]["bytes"] < files.large.size
    # (After a RST of both, the server's 426 may reach the gateway before the session
    # ends, or not.)
    expected = {
        "data": ("426 ",),
        "data-and-control": ("426 ", "aborted: session closed"),
        "control": ("aborted: session closed",),
    }[what]
    assert cut[0]["result"].startswith(expected), cut[0]["result"]
    assertNoFailures(captured)


READ = 256 * 1024


def resetRetrieve(address: tuple[str, int], name: str, what: str) -> list[str]:
    """RETR `name`, read 256 KiB, then reset `what`: "data" (then read the transfer's
    final reply and NOOP's), "data-and-control", or "control" (then read the data
    connection until the gateway ends it)."""
    client = RawFtp(address)
    try:
        client.login()
        assert client.command("TYPE I")[0] == 200
        data = client.dataConnection(client.pasv())
        client.send(f"RETR {name}")
        assert client.reply()[0] == 150
        assert len(readAll(data, READ)) == READ
        if what == "control":
            client.reset()
            with data:
                try:
                    readAll(data)
                except ConnectionResetError:
                    pass
            return []
        resetSocket(data)
        data.close()
        if what == "data-and-control":
            client.reset()
            return []
        final = client.reply()[1]
        noop = client.command("NOOP")[1][:3]
        client.quit()
        return [final, noop]
    finally:
        client.close()


@pytest_twisted.ensureDeferred
async def test_clientVanishesBeforeTheServerAnswers(
    net: Network, gateways: Make, captured: LogCapture
) -> None:
    """A client that resets its connection while the gateway is still connecting to a
    server that does not answer: the connect is abandoned and nothing is left."""
    silent = net.unresponsive()
    gateway = gateways(
        {"ftp": (silent.host, silent.port)},
        GatewaySettings(connectTimeout=30.0, shutdownGrace=1.0),
    )

    def vanish() -> None:
        sock = socket.create_connection(gateway.addresses["ftp"], timeout=SOCKET_TIMEOUT)
        resetSocket(sock)
        sock.close()

    for _ in range(3):
        await inThread(vanish)
    await waitUntil(lambda: len(gateway.sessions) == 3)
    await gateway.assertReleased()
    assertNoFailures(captured)


@pytest.mark.parametrize("how", ["cancel", "close"])
@pytest_twisted.ensureDeferred
async def test_filterEndsAPermissionAsItsConnectionIsEstablished(
    how: str, net: Network, captured: LogCapture
) -> None:
    """A session filter that cancels a permission (or closes its session) from the
    very notification that the permission's connection is established: both data
    peers are closed, nothing is left, and nothing fails."""
    recording = RecordingFilter(connectUpstream=True)
    _, upstreamAddress = net.server()
    running = net.startGateway(recording, upstream=upstreamAddress)
    _, sessionFilter = await net.openSession(running, recording)
    assert sessionFilter.upstream is not None
    await within(sessionFilter.upstream)
    session = sessionFilter.session
    targets, target = net.server()
    granted = await within(session.redirectConnections([target]))
    action = granted.actions[0]

    def end(_: object) -> None:
        # Synchronously, inside the notification.
        action.cancel() if how == "cancel" else session.close("filter says so")

    sessionFilter.waitFor(FirewallEvent.ESTABLISHED_CONNECTION).addCallback(end)
    dataClient = await net.connect(granted.internalAddress)
    dataServer = await within(targets.accepted.get())
    await within(dataClient.lost)
    await within(dataServer.lost)
    await within(action.whenFinished())
    assert session.actions == ()
    assertNoFailures(captured)
