"""STARTTLS through a real gateway, with a scripted (and hostile) FTP server on
loopback: what a client pipelines behind AUTH TLS, and what a server pipelines behind
its 234, never crosses the switch to TLS."""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
from collections.abc import Iterator

import pytest

from tests.interop.support import (
    CLIENT_TIMEOUT,
    SOCKET_TIMEOUT,
    FakeFTPServer,
    assertCleanLog,
    ftpGateway,
    waitForLog,
)
from tests.peers import TlsFiles, makeTlsFiles, requirePeer

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def tlsFiles(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return makeTlsFiles(tmp_path_factory.mktemp("starttls"))


def clientContext(tlsFiles: TlsFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(tlsFiles.caCert))
    context.check_hostname = False
    return context


def readReply(sock: socket.socket | ssl.SSLSocket) -> bytes:
    """One single-line reply, read a byte at a time (nothing behind it is consumed)."""
    line = b""
    while not line.endswith(b"\n"):
        byte = sock.recv(1)
        if not byte:
            break
        line += byte
    return line


LOGIN = {
    "USER": b"331 password please\r\n",
    "PASS": b"230 Login successful.\r\n",
    "PWD": b'257 "/"\r\n',
    "QUIT": b"221 bye\r\n",
}


@pytest.fixture
def plainServer() -> Iterator[FakeFTPServer]:
    with FakeFTPServer(LOGIN) as server:
        yield server


def test_clientCommandsPipelinedBehindAuthTLSAreNotExecuted(
    plainServer: FakeFTPServer, tlsFiles: TlsFiles
) -> None:
    options = [
        "--upstream",
        f"127.0.0.1:{plainServer.port}",
        "--upstream-tls",
        "never",
        "--tls-cert",
        str(tlsFiles.cert),
        "--tls-key",
        str(tlsFiles.key),
        "--require-tls",
    ]
    with ftpGateway(options) as gateway:
        with socket.create_connection(gateway.address, timeout=SOCKET_TIMEOUT) as raw:
            assert readReply(raw).startswith(b"220")
            raw.sendall(b"AUTH TLS\r\nUSER anonymous\r\nPASS x\r\n")
            assert readReply(raw).startswith(b"234")
            with clientContext(tlsFiles).wrap_socket(raw) as secure:
                secure.sendall(b"PWD\r\n")
                assert readReply(secure) == b'257 "/"\r\n'
                secure.sendall(b"QUIT\r\n")
                assert readReply(secure).startswith(b"221")
        waitForLog(gateway, r"discarded 24 bytes the client sent in clear after AUTH TLS")
        assert plainServer.verbs() == ["PWD", "QUIT"]
        assertCleanLog(gateway)


def test_serverRepliesPipelinedBehindIts234AreNotDelivered(tlsFiles: TlsFiles) -> None:
    replies = {**LOGIN, "AUTH": b"234 go ahead\r\n230 INJECTED\r\n"}
    with FakeFTPServer(replies, tls=(tlsFiles.cert, tlsFiles.key)) as server:
        options = [
            "--upstream",
            f"127.0.0.1:{server.port}",
            "--upstream-tls",
            "always",
            "--upstream-ca",
            str(tlsFiles.caCert),
        ]
        with ftpGateway(options) as gateway:
            with socket.create_connection(gateway.address, timeout=SOCKET_TIMEOUT) as client:
                assert readReply(client).startswith(b"220")
                client.sendall(b"USER anonymous\r\n")
                assert readReply(client) == b"331 password please\r\n"
                client.sendall(b"QUIT\r\n")
                assert readReply(client).startswith(b"221")
            waitForLog(gateway, r"discarded 14 bytes the server sent in clear after its 234")
            assert server.commands[0] == ("AUTH", False)
            assert server.commands[1:] == [("USER", True), ("QUIT", True)]
            assertCleanLog(gateway)


# -- the default TLS policy (openssl s_client -starttls ftp) ------------------------------------


def sClient(gateway: object, *options: str) -> subprocess.CompletedProcess[str]:
    host, port = gateway.address  # type: ignore[attr-defined]
    return subprocess.run(
        [requirePeer("openssl"), "s_client", "-starttls", "ftp", "-connect", f"{host}:{port}"]
        + list(options),
        input="",
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
    )


def negotiated(result: subprocess.CompletedProcess[str]) -> str | None:
    """The cipher s_client negotiated, None when the handshake failed."""
    match = re.search(r"Cipher is (\S+)", result.stdout)
    if result.returncode != 0 or match is None or match.group(1) == "(NONE)":
        return None
    return match.group(1)


@pytest.fixture(scope="module")
def policyServer() -> Iterator[FakeFTPServer]:
    with FakeFTPServer(LOGIN) as server:
        yield server


def policyGateway(server: FakeFTPServer, tlsFiles: TlsFiles, *extra: str) -> list[str]:
    return [
        "--upstream",
        f"127.0.0.1:{server.port}",
        "--upstream-tls",
        "never",
        "--tls-cert",
        str(tlsFiles.cert),
        "--tls-key",
        str(tlsFiles.key),
        *extra,
    ]


def test_defaultPolicyRefusesTLS12WithoutForwardSecrecyAndOldVersions(
    policyServer: FakeFTPServer, tlsFiles: TlsFiles
) -> None:
    with ftpGateway(policyGateway(policyServer, tlsFiles)) as gateway:
        assert negotiated(sClient(gateway, "-tls1_2", "-cipher", "AES128-SHA")) is None
        assert negotiated(sClient(gateway, "-tls1_2", "-cipher", "AES256-GCM-SHA384")) is None
        good = sClient(gateway, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
        assert negotiated(good) == "ECDHE-RSA-AES128-GCM-SHA256", good.stdout
        assert negotiated(sClient(gateway, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")) is None
        assert negotiated(sClient(gateway, "-tls1_3")) is not None
        assertCleanLog(gateway)


def test_tlsOptionsChangeThePolicy(policyServer: FakeFTPServer, tlsFiles: TlsFiles) -> None:
    options = policyGateway(
        policyServer, tlsFiles, "--tls-min-version", "1.3", "--tls-ciphers", "ECDHE+AESGCM"
    )
    with ftpGateway(options) as gateway:
        refused = sClient(gateway, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
        assert negotiated(refused) is None
        assert negotiated(sClient(gateway, "-tls1_3")) is not None
        assertCleanLog(gateway)
    options = policyGateway(policyServer, tlsFiles, "--tls-ciphers", "AES128-SHA")
    with ftpGateway(options) as gateway:
        # Explicitly asked for: the operator's choice wins.
        assert negotiated(sClient(gateway, "-tls1_2", "-cipher", "AES128-SHA")) == "AES128-SHA"
