"""Graceful shutdown: SIGTERM to a gateway (twistd, --shutdown-grace N) in front of
vsftpd stops accepting at once, tells idle sessions 421 at once, lets a running transfer
finish (its bytes complete, then 421), closes a transfer still running when the grace
period ends (421 on its control connection), and the process exits within the grace
period and a small margin.

The clients read their data connections at a pace the test sets, from sockets with a
small receive buffer, and the file (128 MiB) is far larger than what the kernel buffers
along the way can hold: at SIGTERM the server is still sending.
"""

from __future__ import annotations

import hashlib
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from fwxtwisted.interfaces import FirewallEvent
from fwxtwisted.settings import GatewaySettings
from tests.core.support import Network, RecordingFilter, turns, within
from tests.interop.support import Payload, ftpGateway, gatewayLog
from tests.peers import Gateway
from tests.reliability.conftest import Files, Upstream
from tests.reliability.support import (
    SOCKET_TIMEOUT,
    RawFtp,
    readAll,
)

BIG = 128 * 1024 * 1024
GRACE = 5.0
#: How late the process may exit after the grace period, in seconds.
MARGIN = 2.0
SHUTTING_DOWN = "421 the gateway is shutting down; try again later"


@pytest.fixture
def big(files: Files) -> Payload:
    assert files.large.size == BIG
    return files.large


@dataclass
class Download:
    """A RETR read at `rate` bytes/s in a thread; what happened, with times."""

    client: RawFtp
    rate: float
    size: int
    received: int = 0
    digest: str = ""
    dataEnded: float = 0.0
    dataError: str | None = None
    replies: list[tuple[float, str]] = field(default_factory=list)
    controlEnded: float = 0.0
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, name: str) -> None:
        client = self.client
        assert client.command("TYPE I")[0] == 200
        data = client.dataConnection(client.pasv())
        data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        client.send(f"RETR {name}")
        assert client.reply()[0] == 150
        self.threads = [
            threading.Thread(target=self._readData, args=(data,), daemon=True),
            threading.Thread(target=self._readControl, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _readData(self, data: socket.socket) -> None:
        digest = hashlib.sha256()
        began = time.monotonic()
        try:
            with data:
                while chunk := data.recv(256 * 1024):
                    digest.update(chunk)
                    self.received += len(chunk)
                    ahead = began + self.received / self.rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
        except OSError as error:
            self.dataError = repr(error)
        self.digest = digest.hexdigest()
        self.dataEnded = time.monotonic()

    def _readControl(self) -> None:
        try:
            while True:
                _, text = self.client.reply()
                self.replies.append((time.monotonic(), text))
        except (EOFError, OSError):
            pass
        self.controlEnded = time.monotonic()

    def join(self, timeout: float) -> None:
        for thread in self.threads:
            thread.join(timeout)
            assert not thread.is_alive(), "a client was still reading"

    def texts(self) -> list[str]:
        return [text for _, text in self.replies]


@pytest.fixture
def clients() -> Iterator[list[RawFtp]]:
    """RawFtp clients of the test, all closed at its end."""
    made: list[RawFtp] = []
    yield made
    for client in made:
        client.close()


def connect(gateway: Gateway, clients: list[RawFtp]) -> RawFtp:
    client = RawFtp(gateway.address)
    clients.append(client)
    client.login()
    return client


def assertNoLongerAccepting(gateway: Gateway) -> None:
    """New connections are refused (the listener is closed)."""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(gateway.address, timeout=SOCKET_TIMEOUT).close()


@pytest.mark.peers
def test_sigtermDrainsThenCloses(upstream: Upstream, big: Payload, clients: list[RawFtp]) -> None:
    options = ["--upstream", upstream.address, "--shutdown-grace", f"{GRACE:g}"]
    with ftpGateway(options) as gateway:
        assert gateway.process is not None
        idle = connect(gateway, clients)
        # Finishes about 2 s after SIGTERM, well within the grace period.
        finishing = Download(connect(gateway, clients), rate=BIG / 2.5, size=BIG)
        # Needs about 20 s: still running when the grace period ends.
        running = Download(connect(gateway, clients), rate=BIG / 20, size=BIG)
        finishing.start(big.name)
        running.start(big.name)
        time.sleep(0.5)
        assert 0 < finishing.received < BIG / 2
        assert 0 < running.received < BIG / 2

        sigterm = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)

        # The idle session is told at once, and closed.
        assert idle.reply()[1] == SHUTTING_DOWN
        assert time.monotonic() - sigterm < 1.0
        assert readAll(idle.sock) == b""
        # By then the gateway accepts nothing new.
        assertNoLongerAccepting(gateway)

        exitCode = gateway.process.wait(GRACE + MARGIN + 5)
        exited = time.monotonic()
        log = gatewayLog(gateway)
        finishing.join(SOCKET_TIMEOUT)
        running.join(SOCKET_TIMEOUT)

    # twistd ends a clean shutdown by re-raising the signal that asked for it.
    assert exitCode == -signal.SIGTERM, log
    assert "Server Shut Down." in log
    assert exited - sigterm < GRACE + MARGIN, f"exited {exited - sigterm:.1f} s after SIGTERM"

    # The transfer that could finish did, whole, after SIGTERM; then 421 and the close.
    assert (finishing.received, finishing.digest) == (BIG, big.sha256), finishing.dataError
    assert finishing.texts() == ["226 Transfer complete.", SHUTTING_DOWN], finishing.replies
    # The server was still sending at SIGTERM: its 226 came after.
    assert sigterm < finishing.replies[0][0]
    assert finishing.dataEnded < sigterm + GRACE
    # The 421 as soon as the data connection was over.
    assert abs(finishing.replies[1][0] - finishing.dataEnded) < 1.0

    # The one still running when the grace period ended: 421 then, and the close of
    # both its connections, its bytes incomplete.
    assert running.texts() == [SHUTTING_DOWN], running.replies
    told = running.replies[0][0]
    assert sigterm + GRACE - 0.1 < told < sigterm + GRACE + 1.0
    assert running.received < BIG
    assert running.dataEnded < exited + 1.0

    # Each transfer is logged once, with the bytes that went through the gateway.
    logged = sorted(
        (result, int(size))
        for size, result in re.findall(
            rf"ftp download '{big.name}' (\d+) bytes in [\d.]+ s: (.*?) \(client", log
        )
    )
    assert [result for result, _ in logged] == [
        "226 Transfer complete.",
        "aborted: session closed",
    ], log
    assert logged[0][1] == BIG
    assert running.received <= logged[1][1] < BIG

    assert f"stopping: 3 session(s) get {GRACE:g} s to finish" in log
    assert "stopping: closing 1 session(s) still running" in log
    assert "Traceback" not in log and "Unhandled" not in log, log


@pytest.mark.peers
def test_sigtermWithNothingRunningExitsAtOnce(upstream: Upstream) -> None:
    """With no session left, the grace period (30 s here) is not waited for."""
    with ftpGateway(["--upstream", upstream.address, "--shutdown-grace", "30"]) as gateway:
        assert gateway.process is not None
        # One session comes and goes first: the reactor runs (twistd handles SIGTERM
        # from then on; before, the signal's default action ends the process).
        with RawFtp(gateway.address) as client:
            client.login()
            client.quit()
        sigterm = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(10) == -signal.SIGTERM
        assert time.monotonic() - sigterm < 2.0
        assert "Server Shut Down." in gatewayLog(gateway)
        assertNoLongerAccepting(gateway)


@pytest_twisted.ensureDeferred
async def test_sessionsAreToldOnceTheListenerIsClosed(net: Network) -> None:
    """In process: when a session hears of the shutdown, the listening socket is closed
    already (a client told 421 that reconnects at once is refused, not queued on a
    listener about to reset it); at the end of the grace period it is closed."""
    recording = RecordingFilter()
    clock = Clock()
    running = net.startGateway(recording, GatewaySettings(shutdownGrace=5.0), clock)
    client, sessionFilter = await net.openSession(running, recording)
    ports = list(running.service.ports)
    listening: list[list[bool]] = []
    told = sessionFilter.waitFor(FirewallEvent.GATEWAY_SHUTDOWN)
    told.addCallback(lambda _: listening.append([port.connected for port in ports]))

    stopped = running.service.stopService()
    finished: list[object] = []
    stopped.addCallback(finished.append)
    await within(told)
    assert listening == [[False]]
    assert [n.reason for n in sessionFilter.events(FirewallEvent.GATEWAY_SHUTDOWN)] == ["draining"]
    assert finished == []  # the session still has its grace period
    await turns()  # (the await above resumed inside the notification)
    clock.advance(5.0)
    assert [n.reason for n in sessionFilter.events(FirewallEvent.GATEWAY_SHUTDOWN)] == [
        "draining",
        "grace period over",
    ]
    await within(client.lost)
    assert len(finished) == 1
    assert sessionFilter.session.closed


@pytest_twisted.ensureDeferred
async def test_sessionIsOverOnlyWithItsDataConnections(net: Network) -> None:
    """In process: whenClosed (what a stopping gateway waits for) fires once the
    connections of the session's permissions have ended too, not merely when the
    primary closes: the process does not exit under them."""
    recording = RecordingFilter(connectUpstream=True)
    _, upstreamAddress = net.server()
    running = net.startGateway(recording, upstream=upstreamAddress)
    _, sessionFilter = await net.openSession(running, recording)
    assert sessionFilter.upstream is not None
    await within(sessionFilter.upstream)
    session = sessionFilter.session
    targets, target = net.server()
    granted = await within(session.redirectConnections([target]))
    dataClient = await net.connect(granted.internalAddress)
    dataServer = await within(targets.accepted.get())
    await within(sessionFilter.waitFor(FirewallEvent.ESTABLISHED_CONNECTION))
    await turns()

    closed = session.whenClosed()
    seen: list[tuple[object, ...]] = []
    sessionFilter.detached.addCallback(lambda _: seen.append(tuple(session.actions)))
    closed.addCallback(lambda _: seen.append(tuple(session.actions)))
    session.close("test")
    await within(closed)
    # When the primary closed, the data connection was still being ended; when
    # whenClosed fired, it was over.
    assert [len(actions) for actions in seen] == [1, 0]
    await within(dataClient.lost)
    await within(dataServer.lost)
