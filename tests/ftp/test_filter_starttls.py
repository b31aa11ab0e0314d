"""STARTTLS on FakeSession: bytes read in clear behind AUTH TLS (from the client) or
behind the server's 234 are dropped at the switch, never taken as sent under TLS (the
CVE-2011-0411 class), and the drop is logged once with its size."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.logger import globalLogPublisher

from fwxtwisted.filters.ftp.filter import ftpFilter
from fwxtwisted.filters.ftp.options import FTPOptions, parseFTPOptions
from fwxtwisted.interfaces import Side
from fwxtwisted.testing import DEFAULT_UPSTREAM, FakeSession
from tests.peers import TlsFiles, makeTlsFiles

LogEvent = dict[str, Any]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return makeTlsFiles(tmp_path_factory.mktemp("tls"), hosts=(DEFAULT_UPSTREAM.host,))


@pytest.fixture
def logged() -> Iterator[list[LogEvent]]:
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def options(tls: TlsFiles, upstream: str) -> FTPOptions:
    return parseFTPOptions(
        {
            "tls_cert": str(tls.cert),
            "tls_key": str(tls.key),
            "upstream_ca": str(tls.caCert),
            "upstream_tls": upstream,
        }
    )


def started(opts: FTPOptions, greet: bool = True) -> FakeSession:
    session = FakeSession(options=opts)
    session.attachFilter(ftpFilter)
    session.succeedUpstream()
    if greet:
        session.serverSends(b"220 hi\r\n")
        session.toClient = b""
    return session


def serverHandshakeDone(session: FakeSession) -> None:
    [legTLS] = [t for s, t in session.tlsStarted if s is Side.SERVER]
    assert legTLS.check is not None
    assert legTLS.check(None) is None


def discards(events: list[LogEvent]) -> list[LogEvent]:
    return [e for e in events if "discarded" in e.get("log_format", "")]


# -- the client's bytes behind AUTH TLS ------------------------------------------------------


def test_commandsPipelinedBehindAuthTLSAreDiscarded(tls: TlsFiles, logged: list[LogEvent]) -> None:
    session = started(options(tls, "never"))
    session.clientSends(b"AUTH TLS\r\nUSER anonymous\r\nPASS x\r\n")
    assert session.toClient == b"234 AUTH TLS successful\r\n"
    assert [s for s, _ in session.tlsStarted] == [Side.CLIENT]
    assert session.toServer == b""
    # After the handshake, the first command under TLS is the first the server sees.
    session.clientSends(b"PWD\r\n")
    assert session.toServer == b"PWD\r\n"
    [line] = discards(logged)
    assert line["count"] == len(b"USER anonymous\r\nPASS x\r\n")
    assert line["side"] == "client"


def test_anUnfinishedLineBehindAuthTLSIsDiscarded(tls: TlsFiles, logged: list[LogEvent]) -> None:
    session = started(options(tls, "never"))
    session.clientSends(b"AUTH SSL\r\nDELE x")
    session.clientSends(b"PWD\r\n")
    assert session.toServer == b"PWD\r\n"
    assert [e["count"] for e in discards(logged)] == [len(b"DELE x")]


def test_commandsWaitingBehindAuthTLSAreDiscarded(tls: TlsFiles, logged: list[LogEvent]) -> None:
    """Commands held (here: until the server greets) are dropped at the switch too,
    even those that came in reads of their own before it."""
    session = started(options(tls, "auto"), greet=False)
    session.clientSends(b"AUTH TLS\r\nUSER a\r\n")
    session.clientSends(b"PASS b\r\n")
    assert session.toServer == b""
    session.serverSends(b"220 hi\r\n")
    assert session.toClient == b"220 hi\r\n234 AUTH TLS successful\r\n"
    assert session.toServer == b"AUTH TLS\r\n"
    session.serverSends(b"234 go\r\n")
    serverHandshakeDone(session)
    session.clientSends(b"PWD\r\n")
    assert session.toServer == b"AUTH TLS\r\nPWD\r\n"
    assert [e["count"] for e in discards(logged)] == [len(b"USER a\r\nPASS b\r\n")]


def test_nothingIsLoggedWhenNothingIsDiscarded(tls: TlsFiles, logged: list[LogEvent]) -> None:
    session = started(options(tls, "never"))
    session.clientSends(b"AUTH TLS\r\n")
    session.clientSends(b"PWD\r\n")
    assert session.toServer == b"PWD\r\n"
    assert discards(logged) == []


# -- the server's bytes behind its 234 -------------------------------------------------------


def test_repliesBehindTheServers234AreDiscarded(tls: TlsFiles, logged: list[LogEvent]) -> None:
    session = started(options(tls, "always"))
    assert session.toServer == b"AUTH TLS\r\n"
    session.serverSends(b"234 go ahead\r\n230 INJECTED\r\n")
    assert session.toClient == b""
    serverHandshakeDone(session)
    session.clientSends(b"USER anonymous\r\n")
    assert session.toServer == b"AUTH TLS\r\nUSER anonymous\r\n"
    session.serverSends(b"331 password please\r\n")
    assert session.toClient == b"331 password please\r\n"
    [line] = discards(logged)
    assert line["count"] == len(b"230 INJECTED\r\n")
    assert line["side"] == "server"


def test_anUnfinishedReplyBehindThe234IsDiscarded(tls: TlsFiles, logged: list[LogEvent]) -> None:
    session = started(options(tls, "always"))
    session.serverSends(b"234 go ahead\r\n230-INJECTED\r\nmore\r\n23")
    serverHandshakeDone(session)
    session.clientSends(b"PWD\r\n")
    session.serverSends(b'257 "/"\r\n')
    assert session.toClient == b'257 "/"\r\n'
    assert [e["count"] for e in discards(logged)] == [len(b"230-INJECTED\r\nmore\r\n23")]


# -- properties ------------------------------------------------------------------------------

junk = st.one_of(
    st.binary(max_size=300),
    st.lists(
        st.sampled_from(
            [b"USER a\r\n", b"PASS b\r\n", b"230 x\r\n", b"DELE f\r\n", b"\r\n", b"\n", b"2"]
        ),
        max_size=8,
    ).map(b"".join),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(after=junk)
def test_noByteBehindAuthTLSReachesTheServer(tls: TlsFiles, after: bytes) -> None:
    session = started(options(tls, "never"))
    session.clientSends(b"AUTH TLS\r\n" + after)
    assert session.toServer == b""
    assert session.toClient == b"234 AUTH TLS successful\r\n"
    session.clientSends(b"PWD\r\n")
    assert session.toServer == b"PWD\r\n"
    assert not session.closed


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(after=junk)
def test_noByteBehindThe234ReachesTheClient(tls: TlsFiles, after: bytes) -> None:
    session = started(options(tls, "always"))
    session.serverSends(b"234 go ahead\r\n" + after)
    assert session.toClient == b""
    serverHandshakeDone(session)
    session.clientSends(b"PWD\r\n")
    assert session.toServer == b"AUTH TLS\r\nPWD\r\n"
    session.serverSends(b'257 "/"\r\n')
    assert session.toClient == b'257 "/"\r\n'
    assert not session.closed


# -- policy: --client-ca, PROT C, REIN ---------------------------------------------------------


def policyOptions(tls: TlsFiles, **extra: object) -> FTPOptions:
    table: dict[str, object] = {
        "tls_cert": str(tls.cert),
        "tls_key": str(tls.key),
        "upstream_tls": "never",
    }
    table.update(extra)
    return parseFTPOptions(table)


def test_clientCAImpliesRequireTLS(tls: TlsFiles, logged: list[LogEvent]) -> None:
    opts = policyOptions(tls, client_ca=str(tls.caCert))
    assert opts.requireTLS
    assert any("client_ca: implies require_tls" in e.get("log_format", "") for e in logged)
    session = started(opts)
    session.clientSends(b"USER anonymous\r\nPASS x\r\n")
    assert session.toServer == b""
    assert session.toClient.count(b"530 TLS required") == 2


def test_protCIsRefusedUnderRequireTLS(tls: TlsFiles) -> None:
    session = started(policyOptions(tls, require_tls=True))
    session.clientSends(b"AUTH TLS\r\n")
    session.clientSends(b"PBSZ 0\r\nPROT C\r\nPROT P\r\n")
    assert session.toClient.endswith(
        b"534 PROT C refused: this gateway requires protected data (PROT P)\r\n"
        b"200 PROT now Private\r\n"
    )


def test_aDataChannelWithoutProtPIsRefusedUnderRequireTLS(tls: TlsFiles) -> None:
    # RFC 4217: without PROT the level is Clear, so a client that never sends PROT P
    # would move its data in clear although the operator asked for TLS.
    session = started(policyOptions(tls, require_tls=True))
    session.clientSends(b"AUTH TLS\r\n")
    session.clientSends(b"PBSZ 0\r\nPASV\r\n")
    assert session.toClient.endswith(
        b"521 data connections must be protected: send PROT P first\r\n"
    )
    assert b"PASV" not in session.toServer
    session.clientSends(b"PROT P\r\nEPSV\r\n")
    assert session.toClient.endswith(b"200 PROT now Private\r\n")


def test_protCIsAcceptedUnderRequireTLSWithAllowClearData(tls: TlsFiles) -> None:
    session = started(policyOptions(tls, require_tls=True, allow_clear_data=True))
    session.clientSends(b"AUTH TLS\r\n")
    session.clientSends(b"PBSZ 0\r\nPROT C\r\n")
    assert session.toClient.endswith(b"200 PROT now Clear\r\n")


def test_protCIsAcceptedWithoutRequireTLS(tls: TlsFiles) -> None:
    session = started(policyOptions(tls))
    session.clientSends(b"AUTH TLS\r\n")
    session.clientSends(b"PBSZ 0\r\nPROT C\r\n")
    assert session.toClient.endswith(b"200 PROT now Clear\r\n")


def test_reinIsRefusedOnceTLSIsOn(tls: TlsFiles) -> None:
    session = started(policyOptions(tls))
    session.clientSends(b"AUTH TLS\r\n")
    session.clientSends(b"REIN\r\n")
    assert session.toServer == b""
    assert session.toClient.endswith(
        b"502 REIN refused: it cannot undo TLS; close and reconnect instead\r\n"
    )


def test_reinIsRefusedWhenOnlyTheServerSideIsTLS(tls: TlsFiles) -> None:
    session = started(options(tls, "always"))
    session.serverSends(b"234 go\r\n")
    serverHandshakeDone(session)
    session.clientSends(b"REIN\r\n")
    assert session.toServer == b"AUTH TLS\r\n"
    assert session.toClient.startswith(b"502 REIN refused")


def test_reinIsForwardedWithoutTLS(tls: TlsFiles) -> None:
    session = started(policyOptions(tls))
    session.clientSends(b"REIN\r\n")
    assert session.toServer == b"REIN\r\n"


# -- TLS policy options ------------------------------------------------------------------------


def test_tlsPolicyDefaultsAndOptions(tls: TlsFiles) -> None:
    default = policyOptions(tls)
    assert default.serverTLS is not None
    assert default.serverTLS.policy.minVersion == "1.2"
    assert "ECDHE+AESGCM" in default.serverTLS.policy.ciphers
    assert default.upstreamTLSSettings.policy == default.serverTLS.policy
    custom = policyOptions(tls, tls_min_version="1.3", tls_ciphers="ECDHE+AESGCM")
    assert custom.serverTLS is not None
    assert custom.serverTLS.policy.minVersion == "1.3"
    assert custom.upstreamTLSSettings.policy.ciphers == "ECDHE+AESGCM"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"tls_min_version": "1.1"}, "tls_min_version: must be 1.2 or 1.3"),
        ({"tls_ciphers": "NO-SUCH-CIPHER"}, "tls_ciphers: 'NO-SUCH-CIPHER' is not usable"),
        ({"tls_ciphers": 3}, "tls_ciphers: must be an OpenSSL cipher string"),
    ],
)
def test_badTLSPolicyIsAConfigError(tls: TlsFiles, table: dict[str, object], message: str) -> None:
    from fwxtwisted.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        policyOptions(tls, **table)
