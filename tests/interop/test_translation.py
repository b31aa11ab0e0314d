"""Mode translation: --data-policy passive and active in front of vsftpd.

An active client (PORT/EPRT) through --data-policy passive makes the gateway connect to
both the client and the server's passive port; a passive client (PASV/EPSV) through
--data-policy active makes it listen for both. vsftpd's log must show the other mode
than the client used, and the bytes must arrive intact both ways.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.support import (
    CURL_MODES,
    Payloads,
    RootFactory,
    ServerLog,
    assertDataVerbs,
    assertSessionsFrom,
    curlDownload,
    ftpGateway,
    ftplibDownload,
    ftplibUpload,
    ftpSession,
    gatewayLog,
    gatewayUrl,
    retrieveAfterIntruder,
    waitForRefusalLogged,
)
from tests.peers import Gateway, Vsftpd, sha256File

pytestmark = pytest.mark.peers

#: The gateway's source address toward vsftpd (vsftpd checks every data connection).
EXTERNAL = "127.0.0.4"

#: What vsftpd must see for each client mode, by data policy.
TRANSLATED = {
    "passive": {"EPRT": "EPSV", "PORT": "PASV"},
    "active": {"EPSV": "EPRT", "PASV": "PORT"},
}


@pytest.fixture(scope="module")
def server(serverRoots: RootFactory, payloads: Payloads) -> Iterator[Vsftpd]:
    root = serverRoots("vsftpd-translation", [payloads.small])
    with Vsftpd(root, writable=True, lifetime=300) as vsftpd:
        yield vsftpd


@pytest.fixture(scope="module")
def policy(request: pytest.FixtureRequest) -> str:
    """The gateway's --data-policy (parametrized indirectly by each test)."""
    return str(request.param)


@pytest.fixture(scope="module")
def gateway(server: Vsftpd, policy: str) -> Iterator[Gateway]:
    options = ["--upstream", f"127.0.0.1:{server.port}", "--external-address", EXTERNAL]
    with ftpGateway([*options, "--data-policy", policy]) as running:
        yield running


@pytest.mark.parametrize(
    ("policy", "mode"),
    [(policy, mode) for policy in sorted(TRANSLATED) for mode in sorted(TRANSLATED[policy])],
    indirect=["policy"],
)
def test_curlDownloadTranslated(
    policy: str,
    mode: str,
    server: Vsftpd,
    gateway: Gateway,
    payloads: Payloads,
    out: Path,
) -> None:
    """curl in each mode the policy translates; vsftpd sees the translated command."""
    log = ServerLog(server)
    curlDownload(gatewayUrl(gateway, payloads.small.name), out, CURL_MODES[mode])
    assert sha256File(out) == payloads.small.sha256
    assertDataVerbs(log, [TRANSLATED[policy][mode]])
    assertSessionsFrom(log, [EXTERNAL])


@pytest.mark.parametrize("policy", sorted(TRANSLATED), indirect=True)
def test_ftplibTranslated(
    policy: str, server: Vsftpd, gateway: Gateway, payloads: Payloads
) -> None:
    """ftplib in the mode the policy does not use downloads and uploads intact."""
    passive = policy == "active"  # the client's mode is the opposite of the policy
    clientVerb = "PASV" if passive else "PORT"
    log = ServerLog(server)
    remote = f"ftplib-{policy}.bin"
    stored = server.root / "upload" / remote
    try:
        with ftpSession(*gateway.address, passive=passive) as ftp:
            assert ftplibDownload(ftp, payloads.small.name) == (
                payloads.small.sha256,
                payloads.small.size,
            )
            ftplibUpload(ftp, payloads.smallUpload.path, f"upload/{remote}")
        assert stored.stat().st_size == payloads.smallUpload.size
        assert sha256File(stored) == payloads.smallUpload.sha256
    finally:
        stored.unlink(missing_ok=True)
    translated = TRANSLATED[policy][clientVerb]
    assertDataVerbs(log, [translated, translated])
    assertSessionsFrom(log, [EXTERNAL])


@pytest.mark.parametrize("policy", ["active"], indirect=True)
@pytest.mark.parametrize("verb", ["PASV", "EPSV"])
def test_joinRefusesHijack(
    verb: str, policy: str, server: Vsftpd, gateway: Gateway, payloads: Payloads
) -> None:
    """Passive client, active server (a join): another IP connecting first to the port
    offered to the client is closed without a byte; the client's transfer goes on."""
    log = ServerLog(server)
    since = len(gatewayLog(gateway))
    with ftpSession(*gateway.address) as ftp:
        offered, received = retrieveAfterIntruder(ftp, verb, payloads.small.name, "127.0.0.5")
    assert offered[0] == "127.0.0.1"
    assert len(received) == payloads.small.size
    assert hashlib.sha256(received).hexdigest() == payloads.small.sha256
    assertDataVerbs(log, [TRANSLATED[policy][verb]])
    waitForRefusalLogged(gateway, "127.0.0.5", offered, "127.0.0.1", since)
