"""FTPS through the gateway, with vsftpd forcing TLS for anonymous logins and data.

vsftpd (ssl_enable, force_anon_logins_ssl, force_anon_data_ssl, require_ssl_reuse, and
debug_ssl so that its log names each TLS handshake and whether it resumed) sits behind
gateways with the TLS options under test. Every acceptance download is 50 MiB, checked
by sha256; vsftpd's log shows that the login and the data went over TLS, and that the
gateway's data connections resumed its control session as vsftpd requires.

curl 7.87/7.88 hangs on active-mode FTPS by itself (curl issue 10666): lftp covers
active mode.
"""

from __future__ import annotations

import contextlib
import ftplib
import re
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.support import (
    CLIENT_TIMEOUT,
    LIFETIME,
    SOCKET_TIMEOUT,
    Payload,
    Payloads,
    RootFactory,
    ServerLog,
    assertCleanLog,
    curlDownload,
    ftpGateway,
    gatewayLog,
    gatewayUrl,
    waitForLog,
)
from tests.peers import (
    ClientResult,
    Gateway,
    TlsFiles,
    Vsftpd,
    curl,
    freePort,
    lftp,
    makeTlsFiles,
    runGateway,
    sha256File,
)

pytestmark = pytest.mark.peers

#: The gateway's source address toward vsftpd (which checks data connections by IP).
EXTERNAL = "127.0.0.2"

#: vsftpd (debug_ssl=YES) logs each TLS handshake: its version and whether it resumed.
_HANDSHAKE = re.compile(
    r'DEBUG: Client "([^"]+)", "SSL version: (TLS[^,]+), SSL cipher: [^,]+, (reused|not reused),'
)
#: What curl -v prints when it offers a cached TLS session on a new connection.
_CURL_RESUMES = "SSL re-using session ID"
_REUSE_REFUSAL = "522 SSL connection failed: session reuse required"


@pytest.fixture(scope="module")
def tlsFiles(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA, a certificate for 127.0.0.1/localhost, and one for another name only."""
    return makeTlsFiles(tmp_path_factory.mktemp("ftps-tls"))


@pytest.fixture(scope="module")
def server(serverRoots: RootFactory, payloads: Payloads, tlsFiles: TlsFiles) -> Iterator[Vsftpd]:
    root = serverRoots("vsftpd-ftps", [payloads.big, payloads.small])
    with Vsftpd(root, tls=tlsFiles, extra={"debug_ssl": "YES"}, lifetime=LIFETIME) as vsftpd:
        settings = vsftpd.settings()
        assert settings["force_anon_logins_ssl"] == "YES"
        assert settings["force_anon_data_ssl"] == "YES"
        assert settings["require_ssl_reuse"] == "YES"
        yield vsftpd


def gatewayOptions(server: Vsftpd, tlsFiles: TlsFiles, *extra: str) -> list[str]:
    """Reverse proxy to `server` with the gateway's certificate and the test CA."""
    return [
        "--upstream",
        f"127.0.0.1:{server.port}",
        "--external-address",
        EXTERNAL,
        "--tls-cert",
        str(tlsFiles.cert),
        "--tls-key",
        str(tlsFiles.key),
        "--upstream-ca",
        str(tlsFiles.caCert),
        *extra,
    ]


@pytest.fixture(scope="module")
def gateway(server: Vsftpd, tlsFiles: TlsFiles) -> Iterator[Gateway]:
    with ftpGateway(gatewayOptions(server, tlsFiles)) as running:
        yield running
        assertCleanLog(running)


@pytest.fixture(scope="module")
def reuseGateway(server: Vsftpd, tlsFiles: TlsFiles) -> Iterator[Gateway]:
    with ftpGateway(gatewayOptions(server, tlsFiles, "--require-tls-reuse")) as running:
        yield running
        assertCleanLog(running)


# -- helpers -------------------------------------------------------------------------------


def curlTLS(tlsFiles: TlsFiles, *options: str) -> list[str]:
    """curl options for explicit FTPS checking the gateway's certificate, verbose."""
    return ["-v", "--ssl-reqd", "--cacert", str(tlsFiles.caCert), *options]


def lftpGet(
    gateway: Gateway, tlsFiles: TlsFiles, passive: bool, name: str, out: Path
) -> ClientResult:
    """lftp forcing FTPS on the control and data connections, checking the certificate."""
    script = (
        "set ftp:ssl-force yes; set ftp:ssl-protect-data yes; "
        f"set ftp:ssl-allow-anonymous yes; set ssl:ca-file {tlsFiles.caCert}; "
        "set ssl:verify-certificate yes; "
        f"set ftp:passive-mode {'on' if passive else 'off'}; "
        f"open {gatewayUrl(gateway)}; get {name} -o {out}"
    )
    return lftp(script, timeout=CLIENT_TIMEOUT).check()


def assertDownloaded(out: Path, payload: Payload) -> None:
    assert out.stat().st_size == payload.size
    assert sha256File(out) == payload.sha256


def waitForServerLog(log: ServerLog, pattern: str) -> re.Match[str]:
    """The first match of `pattern` in what vsftpd logged since `log` was made."""
    regex = re.compile(pattern)
    found: list[re.Match[str]] = []

    def seen(_: object) -> bool:
        match = regex.search(log.text())
        if match:
            found.append(match)
        return match is not None

    log.waitFor(seen)
    return found[0]


def assertSessionOverTLS(log: ServerLog, payload: Payload, source: str = EXTERNAL) -> None:
    """vsftpd's log shows one session from `source` wholly over TLS: AUTH TLS before
    USER (which vsftpd refuses in clear for anonymous), PBSZ/PROT P before the
    transfer, a TLS control handshake, a data handshake that resumed it, and the whole
    file sent (vsftpd sends anonymous data only over TLS)."""
    waitForServerLog(log, rf'OK DOWNLOAD: Client "{re.escape(source)}", "/{payload.name}"')
    text = log.text()
    commands = [c for c in log.commands() if c.client == source]
    verbs = [c.verb for c in commands]
    # Only what carries nothing secret may come first (lftp sends FEAT).
    auth = verbs.index("AUTH")
    assert commands[auth].argument == "TLS"
    assert set(verbs[:auth]) <= {"FEAT", "SYST"}, f"{verbs}\n{text}"
    assert verbs[auth + 1] == "USER", f"{verbs}\n{text}"
    prot = verbs.index("PROT")
    assert commands[prot].argument == "P"
    assert verbs.index("PBSZ") < prot < verbs.index("RETR"), verbs
    assert f'OK LOGIN: Client "{source}", anon password' in text
    handshakes = [(ip, reused) for ip, _, reused in _HANDSHAKE.findall(text) if ip == source]
    assert handshakes[0] == (source, "not reused"), handshakes
    assert (source, "reused") in handshakes[1:], handshakes
    size = re.search(
        rf'OK DOWNLOAD: Client "{re.escape(source)}", "/{payload.name}", (\d+) bytes', text
    )
    assert size is not None and int(size.group(1)) == payload.size, text


def dataResumes(result: ClientResult) -> bool:
    """True when curl -v says it offered its TLS session on a data connection (the
    control connection is the first TLS connection: nothing to offer there)."""
    return _CURL_RESUMES in result.stderr


class ResumingFtpTls(ftplib.FTP_TLS):
    """ftplib's FTP_TLS offers no TLS session on data connections; this one offers the
    control connection's, as curl and lftp do."""

    def ntransfercmd(
        self, cmd: str, rest: int | str | None = None
    ) -> tuple[socket.socket, int | None]:
        connection, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:  # type: ignore[attr-defined]
            assert isinstance(self.sock, ssl.SSLSocket)
            connection = self.context.wrap_socket(  # type: ignore[attr-defined]
                connection, server_hostname=self.host, session=self.sock.session
            )
        return connection, size


@contextlib.contextmanager
def ftpsSession(
    gateway: Gateway, tlsFiles: TlsFiles, factory: type[ftplib.FTP_TLS] = ftplib.FTP_TLS
) -> Iterator[ftplib.FTP_TLS]:
    """An FTPS session through `gateway` (AUTH TLS, login, PROT P), always closed."""
    context = ssl.create_default_context(cafile=str(tlsFiles.caCert))
    ftp = factory(context=context, timeout=SOCKET_TIMEOUT)
    try:
        ftp.connect(*gateway.address)
        ftp.auth()
        ftp.login()
        ftp.prot_p()
        yield ftp
    finally:
        with contextlib.suppress(OSError, EOFError, ftplib.Error):
            ftp.quit()
        ftp.close()


# -- explicit FTPS, verified upstream: the acceptance downloads ------------------------------


@pytest.mark.parametrize("mode", ["EPSV", "PASV"])
def test_curlExplicitFTPS(
    mode: str,
    server: Vsftpd,
    gateway: Gateway,
    tlsFiles: TlsFiles,
    payloads: Payloads,
    out: Path,
) -> None:
    log = ServerLog(server)
    options = curlTLS(tlsFiles, *(["--disable-epsv"] if mode == "PASV" else []))
    result = curlDownload(gatewayUrl(gateway, payloads.big.name), out, options)
    assertDownloaded(out, payloads.big)
    # The client's side: AUTH answered by the gateway, its certificate checked by curl.
    assert "< 234 AUTH SSL successful" in result.stderr
    assert "SSL certificate verify ok" in result.stderr
    assert f"> {mode}" in result.stderr
    # The server's side: the gateway's own TLS session, resumed on the data connection.
    assertSessionOverTLS(log, payloads.big)
    assert mode in [c.verb for c in log.dataCommands()]


@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
def test_lftpExplicitFTPS(
    passive: bool,
    server: Vsftpd,
    gateway: Gateway,
    tlsFiles: TlsFiles,
    payloads: Payloads,
    out: Path,
) -> None:
    log = ServerLog(server)
    lftpGet(gateway, tlsFiles, passive, payloads.big.name, out)
    assertDownloaded(out, payloads.big)
    assertSessionOverTLS(log, payloads.big)
    # In active mode vsftpd connects to the gateway yet stays the TLS server, and the
    # gateway (its TLS client) resumed the control session there too.
    assert [c.verb for c in log.dataCommands()] == ["PASV" if passive else "PORT"]


# -- the server's certificate is checked, and no credentials leave before ---------------------


@pytest.fixture
def wrongNameServer(
    serverRoots: RootFactory, payloads: Payloads, tlsFiles: TlsFiles
) -> Iterator[Vsftpd]:
    """vsftpd showing a certificate from the trusted CA, for another name only."""
    root = serverRoots("vsftpd-wrong-name", [payloads.small])
    extra = {
        "rsa_cert_file": str(tlsFiles.wrongCert),
        "rsa_private_key_file": str(tlsFiles.wrongKey),
    }
    with Vsftpd(root, tls=tlsFiles, extra=extra, lifetime=LIFETIME) as vsftpd:
        yield vsftpd


def assertRefusedBeforeCredentials(
    log: ServerLog, gateway: Gateway, tlsFiles: TlsFiles, reason: str
) -> None:
    """A client's explicit FTPS login gets the gateway's 421 naming `reason`; vsftpd saw
    AUTH TLS and nothing after it: no USER, no PASS."""
    result = curl([*curlTLS(tlsFiles), gatewayUrl(gateway, "small.bin")], timeout=CLIENT_TIMEOUT)
    assert not result.ok, result
    assert f"< 421 connection to the server lost: {reason}" in result.stderr, result
    # curl sent USER after its own handshake: the gateway held it.
    assert "> USER anonymous" in result.stderr
    log.waitFor(lambda commands: any(c.verb == "AUTH" for c in commands))
    waitForLog(gateway, rf"the server closed the control connection: {re.escape(reason)}")
    # (vsftpd's own start-up probe may show up too, from 127.0.0.1.)
    verbs = [c.verb for c in log.commands() if c.client == EXTERNAL]
    assert verbs == ["AUTH"], f"{verbs}\n{log.text()}"
    assert "OK LOGIN" not in log.text()
    assertCleanLog(gateway)


def test_upstreamCertificateForAnotherNameIsRefused(
    wrongNameServer: Vsftpd, tlsFiles: TlsFiles
) -> None:
    log = ServerLog(wrongNameServer)
    with ftpGateway(gatewayOptions(wrongNameServer, tlsFiles)) as running:
        assertRefusedBeforeCredentials(
            log, running, tlsFiles, "TLS error: certificate does not match 127.0.0.1"
        )


def test_upstreamCertificateFromAnUntrustedCAIsRefused(server: Vsftpd, tlsFiles: TlsFiles) -> None:
    """Without --upstream-ca the system's roots decide: the test CA is not among them."""
    options = gatewayOptions(server, tlsFiles)
    options = options[: options.index("--upstream-ca")]
    log = ServerLog(server)
    with ftpGateway(options) as running:
        assertRefusedBeforeCredentials(
            log, running, tlsFiles, "TLS error: certificate verify failed"
        )


# -- --require-tls-reuse ------------------------------------------------------------------


def test_curlWithoutSessionReuseIsRefusedWhenReuseIsRequired(
    server: Vsftpd, reuseGateway: Gateway, tlsFiles: TlsFiles, payloads: Payloads, out: Path
) -> None:
    """curl --no-sessionid offers no TLS session on its data connection (its -v output
    has no "SSL re-using session ID"): the gateway refuses that connection.

    curl then reports the cut data connection and does not read the final reply (it
    does the same against vsftpd itself, which closes the connection and answers 522):
    the 522 is seen in the gateway's transfer event, and by ftplib below.
    """
    log = ServerLog(server)
    since = len(gatewayLog(reuseGateway))
    result = curl(
        [*curlTLS(tlsFiles, "--no-sessionid"), "-o", str(out), gatewayUrl(reuseGateway, "big.bin")],
        timeout=CLIENT_TIMEOUT,
    )
    assert not result.ok, result
    assert not dataResumes(result), result.stderr
    assert "< 150 " in result.stderr
    # Not a byte of the file for the refused connection.
    assert not out.exists() or out.stat().st_size == 0
    waitForLog(reuseGateway, r"did not resume the TLS session", since=since)
    event = waitForLog(
        reuseGateway, r"ftp download 'big\.bin' \d+ bytes in [\d.]+ s: (.*) \(client", since=since
    )
    assert event.group(1) == _REUSE_REFUSAL
    # vsftpd answered that RETR: its TLS handshake toward the gateway was not cut
    # short (vsftpd ends the whole session when a data connection's SSL_accept fails).
    assert "SSL_accept failed" not in log.text(), log.text()
    assertCleanLog(reuseGateway)


def test_curlWithSessionReuseWorksWhenReuseIsRequired(
    server: Vsftpd, reuseGateway: Gateway, tlsFiles: TlsFiles, payloads: Payloads, out: Path
) -> None:
    log = ServerLog(server)
    result = curlDownload(gatewayUrl(reuseGateway, payloads.big.name), out, curlTLS(tlsFiles))
    assert dataResumes(result), result.stderr
    assertDownloaded(out, payloads.big)
    assertSessionOverTLS(log, payloads.big)


def test_curlWithoutSessionReuseWorksWhenReuseIsNotRequired(
    server: Vsftpd, gateway: Gateway, tlsFiles: TlsFiles, payloads: Payloads, out: Path
) -> None:
    """The same client through a gateway without the switch: the gateway still resumes
    its own session toward vsftpd, which requires it."""
    log = ServerLog(server)
    result = curlDownload(
        gatewayUrl(gateway, payloads.big.name), out, curlTLS(tlsFiles, "--no-sessionid")
    )
    assert not dataResumes(result), result.stderr
    assertDownloaded(out, payloads.big)
    assertSessionOverTLS(log, payloads.big)


def test_ftplibWithoutSessionReuseGets522AndTheSessionGoesOn(
    server: Vsftpd, reuseGateway: Gateway, tlsFiles: TlsFiles, payloads: Payloads
) -> None:
    """ftplib offers no TLS session on data connections: its RETR ends with the 522
    vsftpd itself would give, no byte of the file comes through, and the control
    session (the gateway's and vsftpd's) goes on."""
    log = ServerLog(server)
    received = 0

    def count(block: bytes) -> None:
        nonlocal received
        received += len(block)

    with ftpsSession(reuseGateway, tlsFiles) as ftp:
        with pytest.raises(ftplib.error_perm) as refused:
            try:
                ftp.retrbinary(f"RETR {payloads.big.name}", count)
            except (OSError, EOFError):
                # The data connection was cut first; the final reply follows.
                ftp.getresp()
        assert str(refused.value) == _REUSE_REFUSAL
        assert received == 0
        assert ftp.voidcmd("NOOP").startswith("200")
    assert "SSL_accept failed" not in log.text(), log.text()
    assert [c.verb for c in log.commands()].count("RETR") == 1


@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
def test_ftplibResumingWorksWhenReuseIsRequired(
    passive: bool,
    server: Vsftpd,
    reuseGateway: Gateway,
    tlsFiles: TlsFiles,
    payloads: Payloads,
) -> None:
    """Short transfers too: the server may be done before the client's TLS handshake."""
    with ftpsSession(reuseGateway, tlsFiles, ResumingFtpTls) as ftp:
        ftp.set_pasv(passive)
        for _ in range(3):
            assert sorted(ftp.nlst()) == sorted([payloads.big.name, payloads.small.name])
        chunks: list[bytes] = []
        ftp.retrbinary(f"RETR {payloads.small.name}", chunks.append)
        data = b"".join(chunks)
        assert len(data) == payloads.small.size
        assert payloads.small.path.read_bytes() == data


# -- a plain client, an FTPS-only server ---------------------------------------------------


def test_plainClientReachesAnFTPSOnlyServerWithUpstreamTLSAlways(
    server: Vsftpd, tlsFiles: TlsFiles, payloads: Payloads, out: Path
) -> None:
    """vsftpd refuses anonymous logins and data in clear: curl without --ssl succeeds
    only because the gateway's leg to it is TLS."""
    options = [
        "--upstream",
        f"127.0.0.1:{server.port}",
        "--external-address",
        EXTERNAL,
        "--upstream-tls",
        "always",
        "--upstream-ca",
        str(tlsFiles.caCert),
    ]
    log = ServerLog(server)
    with ftpGateway(options) as running:
        result = curlDownload(gatewayUrl(running, payloads.big.name), out, ["-v"])
        assert "AUTH" not in result.stderr
        assertDownloaded(out, payloads.big)
        assertSessionOverTLS(log, payloads.big)
        waitForLog(running, r"s1: .* closed")
        assertCleanLog(running)


# -- implicit FTPS ---------------------------------------------------------------------------


def test_implicitFTPS(server: Vsftpd, tlsFiles: TlsFiles, payloads: Payloads, out: Path) -> None:
    """An ssl: listener (no --tls-cert): TLS from the first byte, data channels served
    with the listener's certificate; the server side follows (upstream TLS auto)."""
    port = freePort()
    listen = f"ssl:{port}:interface=127.0.0.1:privateKey={tlsFiles.key}:certKey={tlsFiles.cert}"
    argv = [
        "ftp",
        "--listen",
        listen,
        "--upstream",
        f"127.0.0.1:{server.port}",
        "--external-address",
        EXTERNAL,
        "--upstream-ca",
        str(tlsFiles.caCert),
    ]
    log = ServerLog(server)
    with runGateway(argv, ("127.0.0.1", port), lifetime=LIFETIME) as running:
        url = f"ftps://127.0.0.1:{port}/{payloads.big.name}"
        result = curlDownload(url, out, ["-v", "--cacert", str(tlsFiles.caCert)])
        assert "AUTH" not in result.stderr
        assert "SSL certificate verify ok" in result.stderr
        assertDownloaded(out, payloads.big)
        assertSessionOverTLS(log, payloads.big)
        waitForLog(running, r"s1: .* closed")
        assertCleanLog(running)


# -- a client's failed TLS handshake ---------------------------------------------------------


def test_garbageInsteadOfAClientHandshakeIsLoggedAndContained(
    server: Vsftpd, gateway: Gateway, tlsFiles: TlsFiles, payloads: Payloads, out: Path
) -> None:
    since = len(gatewayLog(gateway))
    with ftpsSession(gateway, tlsFiles) as bystander:
        with socket.create_connection(gateway.address, timeout=SOCKET_TIMEOUT) as raw:
            reader = raw.makefile("rb")
            assert reader.readline().startswith(b"220 ")
            raw.sendall(b"AUTH TLS\r\n")
            assert reader.readline() == b"234 AUTH TLS successful\r\n"
            raw.sendall(b"\x16\x03\x01\x00\x10 this is not a TLS ClientHello\r\n" * 4)
            # A TLS alert at most, then the end of the connection.
            with contextlib.suppress(ConnectionResetError):
                while raw.recv(4096):
                    pass
        waitForLog(
            gateway, r"s\d+: .* closed \(client connection lost: .*SSL routines", since=since
        )
        # The session that was already there goes on, and a new one works.
        assert bystander.voidcmd("NOOP").startswith("200")
        chunks: list[bytes] = []
        bystander.retrbinary(f"RETR {payloads.small.name}", chunks.append)
        assert b"".join(chunks) == payloads.small.path.read_bytes()
    curlDownload(gatewayUrl(gateway, payloads.small.name), out, curlTLS(tlsFiles))
    assertDownloaded(out, payloads.small)
    assertCleanLog(gateway, since)


# -- --upstream-insecure -------------------------------------------------------------------


def test_upstreamInsecureWarnsAtStartAndPerSession(
    server: Vsftpd, payloads: Payloads, out: Path
) -> None:
    options = [
        "--upstream",
        f"127.0.0.1:{server.port}",
        "--upstream-tls",
        "always",
        "--upstream-insecure",
    ]
    with ftpGateway(options) as running:
        waitForLog(running, r"upstream_insecure: the FTP servers' TLS certificates are NOT checked")
        for _ in range(2):
            curlDownload(gatewayUrl(running, payloads.small.name), out)
            assertDownloaded(out, payloads.small)
        perSession = re.findall(
            r"(s\d+): TLS to 127\.0\.0\.1 is not checked \(upstream_insecure\)",
            gatewayLog(running),
        )
        assert len(set(perSession)) == 2, gatewayLog(running)
        assertCleanLog(running)
