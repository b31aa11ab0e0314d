"""Other FTP servers behind the gateway: pure-ftpd and proftpd, each with its own checks.

Both refuse foreign-address data connections (pure-ftpd by default, proftpd with
AllowForeignAddress off), so the gateway's two external addresses must carry each
session's control and data connections alike. Each server's own log shows the data
command it got and the IP every command came from.
"""

from __future__ import annotations

import ftplib
import os
import pwd
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.interop.support import (
    CURL_MODES,
    EXTERNALS,
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
    gatewayUrl,
)
from tests.peers import FtpServer, Gateway, Proftpd, PureFtpd, curl, sha256File

pytestmark = pytest.mark.peers

SERVERS: dict[str, Callable[..., FtpServer]] = {"pure-ftpd": PureFtpd, "proftpd": Proftpd}


@pytest.fixture(scope="module", params=sorted(SERVERS))
def server(
    request: pytest.FixtureRequest, serverRoots: RootFactory, payloads: Payloads
) -> Iterator[FtpServer]:
    name: str = request.param
    root = serverRoots(name, [payloads.big])
    upload = root / "upload"
    upload.mkdir()
    account = pwd.getpwnam("ftp")
    os.chown(upload, account.pw_uid, account.pw_gid)
    with SERVERS[name](root, lifetime=300) as running:
        yield running


@pytest.fixture(scope="module")
def gateway(server: FtpServer) -> Iterator[Gateway]:
    externals = [arg for ip in EXTERNALS for arg in ("--external-address", ip)]
    with ftpGateway(["--upstream", f"127.0.0.1:{server.port}", *externals]) as running:
        yield running


@pytest.mark.parametrize("mode", CURL_MODES)
def test_curlDownload(
    mode: str, server: FtpServer, gateway: Gateway, payloads: Payloads, out: Path
) -> None:
    log = ServerLog(server)
    curlDownload(gatewayUrl(gateway, payloads.big.name), out, CURL_MODES[mode])
    assert out.stat().st_size == payloads.big.size
    assert sha256File(out) == payloads.big.sha256
    assertDataVerbs(log, [mode])
    assertSessionsFrom(log, EXTERNALS)


@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
def test_ftplibDownload(
    passive: bool, server: FtpServer, gateway: Gateway, payloads: Payloads
) -> None:
    log = ServerLog(server)
    with ftpSession(*gateway.address, passive=passive) as ftp:
        assert ftplibDownload(ftp, payloads.big.name) == (payloads.big.sha256, payloads.big.size)
    assertDataVerbs(log, ["PASV" if passive else "PORT"])
    assertSessionsFrom(log, EXTERNALS)


@pytest.mark.parametrize("client", ["curl-EPSV", "ftplib-active"])
def test_upload(client: str, server: FtpServer, gateway: Gateway, payloads: Payloads) -> None:
    """pure-ftpd takes anonymous uploads into a writable dir: the stored file is the one
    sent. proftpd's configuration here denies every write: its 550 reaches the client."""
    log = ServerLog(server)
    remote = f"{client}.bin"
    source = payloads.bigUpload
    url = gatewayUrl(gateway, f"upload/{remote}")
    stored = server.root / "upload" / remote
    try:
        if isinstance(server, Proftpd):
            if client == "curl-EPSV":
                result = curl(["-T", str(source.path), url])
                assert result.returncode == 25, result  # CURLE_UPLOAD_FAILED
                assert "550" in result.stderr, result
            else:
                with ftpSession(*gateway.address, passive=False) as ftp:
                    with pytest.raises(ftplib.error_perm, match="^550 "):
                        ftplibUpload(ftp, source.path, f"upload/{remote}")
            assert not stored.exists()
        else:
            if client == "curl-EPSV":
                curlUpload(source.path, url)
            else:
                with ftpSession(*gateway.address, passive=False) as ftp:
                    ftplibUpload(ftp, source.path, f"upload/{remote}")
            assert stored.stat().st_size == source.size
            assert sha256File(stored) == source.sha256
    finally:
        stored.unlink(missing_ok=True)
    assertDataVerbs(log, ["EPSV" if client == "curl-EPSV" else "PORT"])
    assertSessionsFrom(log, EXTERNALS)
