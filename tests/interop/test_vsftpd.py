"""vsftpd (strict same-IP checks) behind the gateway with two external addresses.

vsftpd keeps its defaults pasv_promiscuous=NO and port_promiscuous=NO: a data
connection from another IP than the control connection's is refused, and so is a
PORT/EPRT naming another IP. Every client and mode moves 50 MiB each way, checked by
sha256; vsftpd's log shows which IP each session came from and which data command it
got.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.support import (
    CURL_MODES,
    EXTERNALS,
    Payload,
    Payloads,
    RootFactory,
    ServerLog,
    assertDataVerbs,
    assertSessionsFrom,
    curlDownload,
    curlUpload,
    ftpGateway,
    ftplibDownload,
    ftplibUpload,
    ftpSession,
    gatewayLog,
    gatewayUrl,
    lftpRun,
    waitForLog,
)
from tests.peers import Gateway, Vsftpd, sha256File

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def server(serverRoots: RootFactory, payloads: Payloads) -> Iterator[Vsftpd]:
    root = serverRoots("vsftpd", [payloads.big])
    with Vsftpd(root, writable=True, lifetime=300) as vsftpd:
        # The strict same-IP checks this module is about (vsftpd's defaults).
        settings = vsftpd.settings()
        assert settings["pasv_promiscuous"] == "NO"
        assert settings["port_promiscuous"] == "NO"
        yield vsftpd


@pytest.fixture(scope="module")
def gateway(server: Vsftpd) -> Iterator[Gateway]:
    externals = [arg for ip in EXTERNALS for arg in ("--external-address", ip)]
    with ftpGateway(["--upstream", f"127.0.0.1:{server.port}", *externals]) as running:
        yield running


def assertTransferLogged(log: ServerLog, kind: str, path: str, size: int) -> None:
    """vsftpd logged "OK DOWNLOAD" or "OK UPLOAD" of `path`, `size` bytes, to one of the
    external addresses (its data connection came from the session's address)."""
    text = log.text()
    pattern = rf'OK {kind}: Client "([^"]+)", "{re.escape(path)}", (\d+) bytes'
    found = re.findall(pattern, text)
    assert found, f"vsftpd logged no OK {kind} of {path}:\n{text}"
    assert all(ip in EXTERNALS and int(count) == size for ip, count in found), found


def assertDownloadLogged(log: ServerLog, payload: Payload) -> None:
    """vsftpd logged the download of `payload` as complete."""
    assertTransferLogged(log, "DOWNLOAD", f"/{payload.name}", payload.size)


def assertUploaded(server: Vsftpd, log: ServerLog, remote: str, payload: Payload) -> None:
    """The file vsftpd stored as upload/`remote` is `payload`; then it is removed."""
    stored = server.root / "upload" / remote
    try:
        assert stored.stat().st_size == payload.size
        assert sha256File(stored) == payload.sha256
    finally:
        stored.unlink(missing_ok=True)
    assertTransferLogged(log, "UPLOAD", f"/upload/{remote}", payload.size)


@pytest.mark.parametrize("mode", CURL_MODES)
def test_curlDownload(
    mode: str, server: Vsftpd, gateway: Gateway, payloads: Payloads, out: Path
) -> None:
    log = ServerLog(server)
    curlDownload(gatewayUrl(gateway, payloads.big.name), out, CURL_MODES[mode])
    assert out.stat().st_size == payloads.big.size
    assert sha256File(out) == payloads.big.sha256
    assertDataVerbs(log, [mode])
    assertSessionsFrom(log, EXTERNALS)
    assertDownloadLogged(log, payloads.big)


@pytest.mark.parametrize("mode", CURL_MODES)
def test_curlUpload(mode: str, server: Vsftpd, gateway: Gateway, payloads: Payloads) -> None:
    log = ServerLog(server)
    remote = f"curl-{mode}.bin"
    curlUpload(payloads.bigUpload.path, gatewayUrl(gateway, f"upload/{remote}"), CURL_MODES[mode])
    assertDataVerbs(log, [mode])
    assertSessionsFrom(log, EXTERNALS)
    assertUploaded(server, log, remote, payloads.bigUpload)


@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
def test_lftpDownload(
    passive: bool, server: Vsftpd, gateway: Gateway, payloads: Payloads, out: Path
) -> None:
    log = ServerLog(server)
    lftpRun(gateway, passive, f"get {payloads.big.name} -o {out}")
    assert out.stat().st_size == payloads.big.size
    assert sha256File(out) == payloads.big.sha256
    assertDataVerbs(log, ["PASV" if passive else "PORT"])
    assertSessionsFrom(log, EXTERNALS)
    assertDownloadLogged(log, payloads.big)


@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
def test_lftpUpload(passive: bool, server: Vsftpd, gateway: Gateway, payloads: Payloads) -> None:
    log = ServerLog(server)
    remote = f"lftp-{'passive' if passive else 'active'}.bin"
    lftpRun(gateway, passive, f"put {payloads.bigUpload.path} -o upload/{remote}")
    assertDataVerbs(log, ["PASV" if passive else "PORT"])
    assertSessionsFrom(log, EXTERNALS)
    assertUploaded(server, log, remote, payloads.bigUpload)


@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
def test_ftplibDownloadAndUpload(
    passive: bool, server: Vsftpd, gateway: Gateway, payloads: Payloads
) -> None:
    log = ServerLog(server)
    remote = f"ftplib-{'passive' if passive else 'active'}.bin"
    with ftpSession(*gateway.address, passive=passive) as ftp:
        assert ftplibDownload(ftp, payloads.big.name) == (payloads.big.sha256, payloads.big.size)
        ftplibUpload(ftp, payloads.bigUpload.path, f"upload/{remote}")
    verb = "PASV" if passive else "PORT"
    assertDataVerbs(log, [verb, verb])
    assertSessionsFrom(log, EXTERNALS)
    assertDownloadLogged(log, payloads.big)
    assertUploaded(server, log, remote, payloads.bigUpload)


def test_sessionsTakeTurnsOnTheExternalAddresses(server: Vsftpd, gateway: Gateway) -> None:
    """Consecutive sessions come from 127.0.0.2 and 127.0.0.3, never from the client's IP."""
    log = ServerLog(server)
    for _ in range(4):
        with ftpSession(*gateway.address) as ftp:
            ftp.nlst()
    connects = re.findall(r'CONNECT: Client "([^"]+)"', log.text())
    assert len(connects) == 4, log.text()
    assert set(connects) == set(EXTERNALS), connects
    # Round-robin: no two consecutive sessions share an address.
    assert all(a != b for a, b in zip(connects, connects[1:], strict=False)), connects
    assert assertSessionsFrom(log, EXTERNALS) == set(EXTERNALS)


def test_transferLogEvent(gateway: Gateway, payloads: Payloads, out: Path) -> None:
    """A download is logged by the gateway as one event: file, bytes, result, addresses."""
    since = len(gatewayLog(gateway))
    curlDownload(gatewayUrl(gateway, payloads.big.name), out)
    match = waitForLog(
        gateway,
        rf"ftp download '{re.escape(payloads.big.name)}' (\d+) bytes in [\d.]+ s: (\d{{3}}) .*"
        r"\(client 127\.0\.0\.1:\d+, user anonymous, server 127\.0\.0\.1:\d+, from ([\d.]+)\)",
        since=since,
    )
    assert int(match.group(1)) == payloads.big.size
    assert match.group(2) == "226"
    assert match.group(3) in EXTERNALS
    assert "Traceback" not in gatewayLog(gateway)
