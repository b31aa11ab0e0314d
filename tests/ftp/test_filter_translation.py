"""FTP filter, data policies: the client's mode translated into another toward the server."""

from __future__ import annotations

from fwxtwisted.address import Address
from fwxtwisted.filters.ftp.filter import ftpFilter
from fwxtwisted.filters.ftp.options import parseFTPOptions
from fwxtwisted.interfaces import ActionState, Connect, Listen
from fwxtwisted.testing import (
    DEFAULT_CLIENT,
    DEFAULT_EXTERNAL_IP,
    DEFAULT_INTERNAL,
    DEFAULT_UPSTREAM,
    FakeSession,
)

CLIENT_IP = DEFAULT_CLIENT.host  # 192.0.2.10
SERVER_IP = DEFAULT_UPSTREAM.host  # 203.0.113.50
INTERNAL_IP = DEFAULT_INTERNAL.host  # 198.51.100.1


def started(**options: object) -> FakeSession:
    """A reverse-proxy session past the server's greeting, with both transcripts cleared."""
    session = FakeSession(options=parseFTPOptions(options))
    session.attachFilter(ftpFilter)
    session.succeedUpstream()
    session.serverSends(b"220 hi\r\n")
    session.toClient = b""
    return session


# Policy passive: the client's PORT/EPRT become PASV/EPSV toward the server.


def test_passivePolicyPortAsksServerPasv() -> None:
    session = started(data_policy="passive")
    session.clientSends(b"PORT 192,0,2,10,200,10\r\n")
    assert session.toServer == b"PASV\r\n"
    assert session.redirectCalls == []
    assert session.joinCalls == []


def test_passivePolicyPortJoinsClientAndServerDataAddresses() -> None:
    session = started(data_policy="passive")
    session.clientSends(b"PORT 192,0,2,10,200,10\r\n")
    session.serverSends(b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n")
    [join] = session.joinCalls
    assert join.client == Connect(Address(CLIENT_IP, 51210), INTERNAL_IP)
    assert join.server == Connect(Address(SERVER_IP, 40000), DEFAULT_EXTERNAL_IP)
    assert session.redirectCalls == []


def test_passivePolicyPortClientGets200OnceJoined() -> None:
    session = started(data_policy="passive")
    session.clientSends(b"PORT 192,0,2,10,200,10\r\n")
    session.serverSends(b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n")
    assert session.toClient == b""
    session.joinCalls[-1].grant()
    assert session.toClient == b"200 PORT command successful\r\n"
    assert session.toServer == b"PASV\r\n"


def test_passivePolicyEprtAsksServerEpsv() -> None:
    session = started(data_policy="passive")
    session.clientSends(b"EPRT |1|192.0.2.10|51210|\r\n")
    assert session.toServer == b"EPSV\r\n"
    session.serverSends(b"229 Entering Extended Passive Mode (|||40000|)\r\n")
    [join] = session.joinCalls
    assert join.client == Connect(Address(CLIENT_IP, 51210), INTERNAL_IP)
    assert join.server == Connect(Address(SERVER_IP, 40000), DEFAULT_EXTERNAL_IP)
    join.grant()
    assert session.toClient == b"200 EPRT command successful\r\n"


def test_passivePolicyServerRefusalRelayed() -> None:
    session = started(data_policy="passive")
    session.clientSends(b"PORT 192,0,2,10,200,10\r\n")
    session.serverSends(b"421 Too many passive connections\r\n")
    assert session.toClient == b"421 Too many passive connections\r\n"
    assert session.joinCalls == []


def test_passivePolicyStillRefusesABounce() -> None:
    session = started(data_policy="passive")
    session.clientSends(b"PORT 192,0,2,99,200,10\r\n")
    assert session.toClient == (
        b"500 Illegal PORT command: the address is not the client's own\r\n"
    )
    assert session.toServer == b""
    assert session.joinCalls == []


def test_passivePolicyPasvIsPlainPassive() -> None:
    session = started(data_policy="passive")
    session.clientSends(b"PASV\r\n")
    session.serverSends(b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n")
    assert session.joinCalls == []
    assert session.redirectCalls[-1].connectAddresses == (Address(SERVER_IP, 40000),)


# Policy active: the client's PASV/EPSV become PORT/EPRT toward the server.


def test_activePolicyPasvListensOnBothSides() -> None:
    session = started(data_policy="active", passive_ports="50000-50099")
    session.clientSends(b"PASV\r\n")
    [join] = session.joinCalls
    assert join.client == Listen(INTERNAL_IP, CLIENT_IP, portRange=(50000, 50099))
    assert join.server == Listen(DEFAULT_EXTERNAL_IP, SERVER_IP)
    assert session.toServer == b""


def test_activePolicyPasvSendsServerPortForServerSide() -> None:
    session = started(data_policy="active")
    session.clientSends(b"PASV\r\n")
    session.joinCalls[-1].grant(clientPort=50010, serverPort=60000)
    assert session.toServer == b"PORT 203,0,113,1,234,96\r\n"
    assert session.toClient == b""


def test_activePolicyPasvClientGets227ForClientSide() -> None:
    session = started(data_policy="active")
    session.clientSends(b"PASV\r\n")
    session.joinCalls[-1].grant(clientPort=50010, serverPort=60000)
    session.serverSends(b"200 PORT command successful\r\n")
    assert session.toClient == b"227 Entering Passive Mode (198,51,100,1,195,90).\r\n"


def test_activePolicyPasvWithAdvertiseAddress() -> None:
    session = started(data_policy="active", advertise_address="192.0.2.200")
    session.clientSends(b"PASV\r\n")
    session.joinCalls[-1].grant(clientPort=50010, serverPort=60000)
    session.serverSends(b"200 PORT command successful\r\n")
    assert session.toClient == b"227 Entering Passive Mode (192,0,2,200,195,90).\r\n"


def test_activePolicyEpsvSendsServerEprtAndClientGets229() -> None:
    session = started(data_policy="active")
    session.clientSends(b"EPSV\r\n")
    session.joinCalls[-1].grant(clientPort=50010, serverPort=60000)
    assert session.toServer == b"EPRT |1|203.0.113.1|60000|\r\n"
    session.serverSends(b"200 EPRT command successful\r\n")
    assert session.toClient == b"229 Entering Extended Passive Mode (|||50010|)\r\n"


def test_activePolicyEprtRefusedRetriedAsPort() -> None:
    session = started(data_policy="active")
    session.clientSends(b"EPSV\r\n")
    join = session.joinCalls[-1].grant(clientPort=50010, serverPort=60000)
    session.serverSends(b"500 EPRT not understood\r\n")
    assert session.toServer == b"EPRT |1|203.0.113.1|60000|\r\nPORT 203,0,113,1,234,96\r\n"
    session.serverSends(b"200 PORT ok\r\n")
    assert session.toClient == b"229 Entering Extended Passive Mode (|||50010|)\r\n"
    assert join.state is ActionState.LISTENING


def test_activePolicyServerRefusingPortCancelsJoinAndRelaysError() -> None:
    session = started(data_policy="active")
    session.clientSends(b"PASV\r\n")
    join = session.joinCalls[-1].grant(clientPort=50010, serverPort=60000)
    session.serverSends(b"425 active mode disabled\r\n")
    assert join.state is ActionState.CANCELLED
    assert session.toClient == b"425 active mode disabled\r\n"


def test_activePolicyJoinFailureIs425() -> None:
    session = started(data_policy="active")
    session.clientSends(b"PASV\r\n")
    session.joinCalls[-1].fail(RuntimeError("port range exhausted"))
    assert session.toClient == b"425 cannot open data connection: port range exhausted\r\n"
    assert session.toServer == b""


def test_activePolicyPortIsPlainActive() -> None:
    session = started(data_policy="active")
    session.clientSends(b"PORT 192,0,2,10,200,10\r\n")
    assert session.joinCalls == []
    assert session.redirectCalls[-1].connectAddresses == (Address(CLIENT_IP, 51210),)


def test_activePolicySecondPasvCancelsUnusedJoin() -> None:
    session = started(data_policy="active")
    session.clientSends(b"PASV\r\n")
    first = session.joinCalls[-1].grant(clientPort=50010, serverPort=60000)
    session.serverSends(b"200 PORT ok\r\n")
    session.clientSends(b"PASV\r\n")
    assert first.state is ActionState.CANCELLED


def test_activePolicySecondPasvKeepsAnAcceptedJoin() -> None:
    session = started(data_policy="active")
    session.clientSends(b"PASV\r\n")
    first = session.joinCalls[-1].grant(clientPort=50010, serverPort=60000)
    session.serverSends(b"200 PORT ok\r\n")
    first.accept()
    session.clientSends(b"PASV\r\n")
    assert first.state is ActionState.USED
    assert first.cancelCalls == 0
