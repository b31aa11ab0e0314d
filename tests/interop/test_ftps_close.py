"""How FTPS sessions end: a close under TLS is a TLS close (close_notify, no traceback),
and a connection stalled in its TLS handshake is aborted by the timeouts and at the
end of the shutdown grace, not left to hold a session slot (or the process) forever."""

from __future__ import annotations

import contextlib
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.support import (
    LIFETIME,
    SOCKET_TIMEOUT,
    FakeFTPServer,
    RootFactory,
    assertCleanLog,
    curlDownload,
    ftpGateway,
    gatewayLog,
    gatewayUrl,
    waitForLog,
)
from tests.peers import TlsFiles, Vsftpd, freePort, makeTlsFiles, runGateway

pytestmark = pytest.mark.peers

LOGIN = {
    "USER": b"331 password please\r\n",
    "PASS": b"230 Login successful.\r\n",
    "QUIT": b"221 bye\r\n",
}


@pytest.fixture(scope="module")
def tlsFiles(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return makeTlsFiles(tmp_path_factory.mktemp("ftps-close"))


@pytest.fixture
def fakeServer() -> Iterator[FakeFTPServer]:
    with FakeFTPServer(LOGIN) as server:
        yield server


def readLine(sock: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        byte = sock.recv(1)
        if not byte:
            break
        line += byte
    return line


def stalledAfterAuth(address: tuple[str, int]) -> socket.socket:
    """A client that sends AUTH TLS, reads the 234, and never starts its handshake."""
    sock = socket.create_connection(address, timeout=SOCKET_TIMEOUT)
    assert readLine(sock).startswith(b"220")
    sock.sendall(b"AUTH TLS\r\n")
    assert readLine(sock).startswith(b"234")
    return sock


def closedByPeer(sock: socket.socket, within: float) -> bool:
    """True when the gateway closes (or resets) `sock` within `within` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def gatewayTLSOptions(upstreamPort: int, tlsFiles: TlsFiles, *extra: str) -> list[str]:
    return [
        "--upstream",
        f"127.0.0.1:{upstreamPort}",
        "--upstream-tls",
        "never",
        "--tls-cert",
        str(tlsFiles.cert),
        "--tls-key",
        str(tlsFiles.key),
        *extra,
    ]


# -- stalled handshakes ----------------------------------------------------------------------


def test_stalledHandshakesAreAbortedAtTheLoginTimeoutAndFreeTheirSlots(
    fakeServer: FakeFTPServer, tlsFiles: TlsFiles
) -> None:
    options = gatewayTLSOptions(
        fakeServer.port, tlsFiles, "--login-timeout", "1", "--max-sessions", "2"
    )
    with ftpGateway(options) as gateway:
        stalled = [stalledAfterAuth(gateway.address) for _ in range(2)]
        try:
            started = time.monotonic()
            for sock in stalled:
                assert closedByPeer(sock, within=5.0), "a stalled handshake was left open"
            assert time.monotonic() - started < 4.0
            # The slots are free: a new client is served.
            with socket.create_connection(gateway.address, timeout=SOCKET_TIMEOUT) as fresh:
                assert readLine(fresh).startswith(b"220")
                fresh.sendall(b"QUIT\r\n")
                assert readLine(fresh).startswith(b"221")
        finally:
            for sock in stalled:
                sock.close()
        waitForLog(gateway, r"closing: login timeout")
        assertCleanLog(gateway)


def test_silentConnectionsToAnImplicitListenerAreAbortedAtTheLoginTimeout(
    fakeServer: FakeFTPServer, tlsFiles: TlsFiles
) -> None:
    port = freePort()
    listen = f"ssl:{port}:interface=127.0.0.1:privateKey={tlsFiles.key}:certKey={tlsFiles.cert}"
    argv = [
        "ftp",
        "--listen",
        listen,
        "--upstream",
        f"127.0.0.1:{fakeServer.port}",
        "--upstream-tls",
        "never",
        "--login-timeout",
        "1",
        "--max-sessions",
        "1",
    ]
    with runGateway(argv, ("127.0.0.1", port), lifetime=LIFETIME) as gateway:
        with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as silent:
            assert closedByPeer(silent, within=5.0), "a silent TLS connection was left open"
        context = ssl.create_default_context(cafile=str(tlsFiles.caCert))
        context.check_hostname = False
        with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as raw:
            with context.wrap_socket(raw) as client:
                assert readLine(client).startswith(b"220")  # type: ignore[arg-type]
        assertCleanLog(gateway)


def test_sigtermWithStalledHandshakesExitsWithinTheGrace(
    fakeServer: FakeFTPServer, tlsFiles: TlsFiles
) -> None:
    options = gatewayTLSOptions(fakeServer.port, tlsFiles, "--shutdown-grace", "2")
    with ftpGateway(options) as gateway:
        stalled = [stalledAfterAuth(gateway.address) for _ in range(5)]
        try:
            process = gateway.process
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=2 + 5)
            assert time.monotonic() - started < 2 + 5
        finally:
            for sock in stalled:
                sock.close()
        log = gatewayLog(gateway)
        assert "Main loop terminated" in log
        assertCleanLog(gateway)


# -- closes under TLS ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plainVsftpd(
    serverRoots: RootFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Vsftpd]:
    root = serverRoots("vsftpd-plain-close", [])
    (root / "hello.txt").write_bytes(b"hello\n")
    (root / "hello.txt").chmod(0o644)
    with Vsftpd(root, lifetime=LIFETIME) as vsftpd:
        yield vsftpd


@pytest.fixture(scope="module")
def ftpsVsftpd(serverRoots: RootFactory, tlsFiles: TlsFiles) -> Iterator[Vsftpd]:
    root = serverRoots("vsftpd-ftps-close", [])
    with Vsftpd(root, tls=tlsFiles, lifetime=LIFETIME) as vsftpd:
        yield vsftpd


def test_ftpsClientWithAPlainServerLegClosesWithoutATraceback(
    plainVsftpd: Vsftpd, tlsFiles: TlsFiles, tmp_path: Path
) -> None:
    options = gatewayTLSOptions(plainVsftpd.port, tlsFiles, "--external-address", "127.0.0.1")
    with ftpGateway(options) as gateway:
        for _ in range(3):
            out = tmp_path / "hello.txt"
            curlDownload(
                gatewayUrl(gateway, "hello.txt"),
                out,
                ["--ssl-reqd", "--cacert", str(tlsFiles.caCert)],
            )
            assert out.read_bytes() == b"hello\n"
        waitForLog(gateway, r"s3: .* closed")
        assertCleanLog(gateway)


def test_plainClientLeavingWithoutQuitClosesTheServersTLSCleanly(
    ftpsVsftpd: Vsftpd, tlsFiles: TlsFiles
) -> None:
    options = [
        "--upstream",
        f"127.0.0.1:{ftpsVsftpd.port}",
        "--upstream-tls",
        "always",
        "--upstream-ca",
        str(tlsFiles.caCert),
    ]
    with ftpGateway(options) as gateway:
        with socket.create_connection(gateway.address, timeout=SOCKET_TIMEOUT) as client:
            assert readLine(client).startswith(b"220")
            client.sendall(b"USER anonymous\r\n")
            assert readLine(client)[:1] in (b"2", b"3")
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_WR)
            assert closedByPeer(client, within=10.0)
        waitForLog(gateway, r"s1: .* closed")
        log = gatewayLog(gateway)
        # A FIN under the TLS layer made vsftpd answer with an alert (decode error).
        assert "alert" not in log
        assertCleanLog(gateway)
