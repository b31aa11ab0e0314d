"""FTP filter on a transparent listener: its options, passive replies passed unchanged
once the data flow is permitted (transparent_data = permit), relayed otherwise."""

from __future__ import annotations

import pytest
from twisted.python import usage

from fwxtwisted.address import Address
from fwxtwisted.errors import ConfigError, FWXError
from fwxtwisted.filters.ftp import datachannels
from fwxtwisted.filters.ftp.filter import FTPCommandOptions, ftpFilter
from fwxtwisted.filters.ftp.options import DataPolicy, TransparentData
from fwxtwisted.filters.ftp.protocols import FTP_DATA
from fwxtwisted.interfaces import RedirectFlags
from fwxtwisted.testing import DEFAULT_CLIENT, DEFAULT_UPSTREAM, FakeSession

SERVER_IP = DEFAULT_UPSTREAM.host  # 203.0.113.50
PASV_227 = b"227 Entering Passive Mode (203,0,113,50,117,48).\r\n"  # port 30000
OWN_LAN_IP = "192.0.2.1"


def transparent(**options: object) -> FakeSession:
    """A transparent session past the server's greeting (its upstream: the original
    destination), both transcripts cleared."""
    session = FakeSession(options=ftpFilter.parseTransparentOptions(options))
    session.attachFilter(ftpFilter)
    session.succeedUpstream()
    session.serverSends(b"220 hi\r\n")
    session.toClient = b""
    return session


def test_optionsDefaultToPermit() -> None:
    options = ftpFilter.parseTransparentOptions({})
    assert options.transparentData is TransparentData.PERMIT
    assert not options.explicit


@pytest.mark.parametrize(
    "keys,message",
    [
        ({"transparent_data": "nat"}, "transparent_data: must be one of permit, relay"),
        ({"explicit": True}, "explicit: not with transparent"),
        ({"data_policy": "active"}, 'data_policy: "active" needs transparent_data = "relay"'),
        ({"upstream_tls": "sometimes"}, "upstream_tls:"),
    ],
)
def test_badOptionsAreConfigErrors(keys: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ftpFilter.parseTransparentOptions(keys)


def test_activeDataPolicyWithRelay() -> None:
    options = ftpFilter.parseTransparentOptions(
        {"transparent_data": "relay", "data_policy": "active"}
    )
    assert options.dataPolicy is DataPolicy.ACTIVE
    assert options.transparentData is TransparentData.RELAY


def test_transparentDataOutsideTransparentIsUnknown() -> None:
    with pytest.raises(ConfigError, match="transparent_data: not an option"):
        ftpFilter.parseOptions({"transparent_data": "permit"}, DEFAULT_UPSTREAM)


@pytest.mark.parametrize("verb,reply", [(b"PASV", PASV_227),
                                        (b"EPSV", b"229 Extended (|||30000|)\r\n")])  # fmt: skip
def test_passiveReplyUnchangedAfterThePermission(verb: bytes, reply: bytes) -> None:
    session = transparent()
    session.clientSends(verb + b"\r\n")
    assert session.toServer == verb + b"\r\n"
    session.serverSends(reply)
    (call,) = session.allowCalls
    assert call.source == Address(DEFAULT_CLIENT.host, 0)
    assert call.destination == Address(SERVER_IP, 30000)
    assert call.flags == RedirectFlags.TIMEOUT
    assert call.protocolId == FTP_DATA.protocolId
    assert session.toClient == b""  # not before the kernel has the flow
    call.grant()
    assert session.toClient == reply
    assert session.redirectCalls == [] and session.joinCalls == []


def test_pasvNamingAnotherHostNamesTheServer() -> None:
    session = transparent()
    session.clientSends(b"PASV\r\n")
    session.serverSends(b"227 Entering Passive Mode (10,0,0,7,117,48).\r\n")
    (call,) = session.allowCalls
    assert call.destination == Address(SERVER_IP, 30000)
    call.grant()
    assert session.toClient == PASV_227


def test_negativeReplyPassedAndNothingPermitted() -> None:
    session = transparent()
    session.clientSends(b"EPSV\r\n")
    session.serverSends(b"500 no\r\n")
    assert session.toClient == b"500 no\r\n"
    assert session.allowCalls == []


def test_permissionRefusedIs425() -> None:
    session = transparent()
    session.clientSends(b"PASV\r\n")
    session.serverSends(PASV_227)
    session.allowCalls[0].fail(FWXError("no table"))
    assert session.toClient.startswith(b"425 cannot open data connection: no table")


@pytest.fixture
def ownLanIP(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datachannels, "ownAddressToward", lambda host: OWN_LAN_IP)


def test_relayListensOnTheGatewaysOwnAddress(ownLanIP: None) -> None:
    session = transparent(transparent_data="relay")
    session.clientSends(b"PASV\r\n")
    session.serverSends(PASV_227)
    assert session.allowCalls == []
    (call,) = session.redirectCalls
    assert call.internalAddress == Address(OWN_LAN_IP, 0)
    call.grant(40001)
    assert session.toClient == b"227 Entering Passive Mode (192,0,2,1,156,65).\r\n"


def test_relayRefusesEpsv() -> None:
    session = transparent(transparent_data="relay")
    session.clientSends(b"EPSV\r\n")
    assert session.toServer == b""
    assert session.toClient.startswith(b"502 EPSV not possible through this gateway")


def test_activeConnectsToTheClientFromTheGatewaysOwnAddress(ownLanIP: None) -> None:
    session = transparent()
    session.clientSends(b"PORT 192,0,2,10,156,64\r\n")
    (call,) = session.redirectCalls
    assert call.proxyExternalAddress == OWN_LAN_IP
    assert call.internalAddress.host == session.externalAddress


def test_commandLine() -> None:
    command = FTPCommandOptions()
    command.parseOptions(["--listen", "tcp6:8070", "--transparent", "--transparent-data",
                          "relay", "--allow-destination", "203.0.113.0/24:21"])  # fmt: skip
    listener = command.listenerConfig()
    assert listener["transparent"] is True
    assert listener["transparent_data"] == "relay"
    assert listener["allow_destinations"] == ["203.0.113.0/24:21"]
    assert "explicit" not in listener


@pytest.mark.parametrize(
    "argv",
    [
        ["--transparent", "--upstream", "tcp:192.0.2.7:21"],
        ["--transparent", "--explicit", "--allow-destination", "192.0.2.0/24"],
        ["--upstream", "tcp:192.0.2.7:21", "--transparent-data", "permit"],
    ],
)
def test_commandLineRefusals(argv: list[str]) -> None:
    with pytest.raises(usage.UsageError):
        FTPCommandOptions().parseOptions(["--listen", "tcp:8070", *argv])
