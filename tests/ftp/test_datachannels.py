"""DataChannels on its own: driven through a small fake control channel (no filter, no
conversation), with FakeSession for the grants."""

from __future__ import annotations

from dataclasses import dataclass

from fwxtwisted.address import Address
from fwxtwisted.filters.ftp.channel import ReplyHandler, ReplyQueue, ReplySlot
from fwxtwisted.filters.ftp.commands import Command
from fwxtwisted.filters.ftp.datachannels import DataChannels
from fwxtwisted.filters.ftp.options import FTPOptions, parseFTPOptions
from fwxtwisted.filters.ftp.replies import Reply, formatReply
from fwxtwisted.interfaces import ActionState, LegTLS, Side
from fwxtwisted.testing import DEFAULT_CLIENT, DEFAULT_INTERNAL, DEFAULT_UPSTREAM, FakeSession

SERVER_IP = DEFAULT_UPSTREAM.host  # 203.0.113.50


@dataclass
class Sent:
    """A command the data channels sent to the server, and who takes its reply."""

    command: Command
    slot: ReplySlot | None
    handler: ReplyHandler | None

    def answer(self, line: bytes) -> None:
        assert self.handler is not None
        code = int(line[:3])
        self.handler(Reply(code, (line,)))


class FakeChannel:
    """What DataChannels uses of a ControlChannel: the session, the options, the reply
    slots, local replies, and commands to the server (recorded, answered by the test)."""

    def __init__(self, session: FakeSession, options: FTPOptions) -> None:
        self.session = session
        self.options = options
        self.toClient: list[bytes] = []
        self.replies = ReplyQueue(self.toClient.append)
        self.sent: list[Sent] = []

    def reply(self, code: int, text: str) -> None:
        self.replies.local(formatReply(code, text))

    def sendToServer(
        self, command: Command, slot: ReplySlot | None, handler: ReplyHandler | None
    ) -> None:
        self.sent.append(Sent(command, slot, handler))


class NoTLS:
    """Clear data connections."""

    def dataTLS(self, clientIsAccepted: bool = True) -> dict[Side, LegTLS]:
        return {}


def make(**options: object) -> tuple[DataChannels, FakeChannel, FakeSession]:
    parsed = parseFTPOptions(options)
    session = FakeSession(options=parsed, serverAddress=DEFAULT_UPSTREAM)
    channel = FakeChannel(session, parsed)
    return DataChannels(channel, NoTLS()), channel, session  # type: ignore[arg-type]


def test_pasvIsAskedOfTheServerAndItsReplyRewritten() -> None:
    data, channel, session = make()
    data.passive(Command("PASV"))
    [sent] = channel.sent
    assert sent.command == Command("PASV")
    assert channel.toClient == []
    sent.answer(b"227 Entering Passive Mode (192,0,2,99,156,64).")
    # The gateway connects to the server's control IP, never the IP the 227 names.
    [call] = session.redirectCalls
    assert call.connectAddresses == (Address(SERVER_IP, 40000),)
    assert call.tls == {}
    call.grant(41000)
    assert channel.toClient == [b"227 Entering Passive Mode (198,51,100,1,160,40).\r\n"]
    assert data.current is call.redirection.actions[0]  # type: ignore[union-attr]


def test_epsvAnswers229WithTheGatewaysPort() -> None:
    data, channel, session = make()
    data.passive(Command("EPSV"))
    [sent] = channel.sent
    assert sent.command == Command("EPSV")
    sent.answer(b"229 Entering Extended Passive Mode (|||40000|)")
    [call] = session.redirectCalls
    assert call.connectAddresses == (Address(SERVER_IP, 40000),)
    assert call.internalAddress == Address(DEFAULT_INTERNAL.host, 0)
    call.grant(41000)
    assert channel.toClient == [b"229 Entering Extended Passive Mode (|||41000|)\r\n"]


def test_epsvFallsBackToPasvTowardAnOldServer() -> None:
    data, channel, session = make()
    data.passive(Command("EPSV"))
    channel.sent[0].answer(b"500 Unknown command.")
    assert [s.command.verb for s in channel.sent] == ["EPSV", "PASV"]
    channel.sent[1].answer(b"227 Entering Passive Mode (203,0,113,50,156,64).")
    session.redirectCalls[0].grant(41000)
    assert channel.toClient == [b"229 Entering Extended Passive Mode (|||41000|)\r\n"]


def test_portNamingAnotherHostIsRefused() -> None:
    """Anti-bounce: PORT may name only the client's own address, no port below 1024."""
    data, channel, session = make()
    data.active(Command("PORT", "203,0,113,99,156,64"))
    data.active(Command("PORT", f"{DEFAULT_CLIENT.host.replace('.', ',')},0,21"))
    assert channel.toClient == [
        b"500 Illegal PORT command: the address is not the client's own\r\n",
        b"500 Illegal PORT command: ports below 1024 are refused\r\n",
    ]
    assert channel.sent == []
    assert session.redirectCalls == []


def test_portFromTheClientIsPassedOnFromTheGateway() -> None:
    data, channel, session = make()
    data.active(Command("PORT", "192,0,2,10,200,10"))
    [call] = session.redirectCalls
    assert call.connectAddresses == (Address(DEFAULT_CLIENT.host, 51210),)
    call.grant(42000)
    [sent] = channel.sent
    assert sent.command.verb == "PORT"
    sent.answer(b"200 PORT command successful.")
    assert channel.toClient == [b"200 PORT command successful.\r\n"]


def test_aNewPasvCancelsTheUnusedOne() -> None:
    data, channel, session = make()
    data.passive(Command("PASV"))
    channel.sent[0].answer(b"227 Entering Passive Mode (203,0,113,50,156,64).")
    first = session.redirectCalls[0].grant(41000).actions[0]
    assert first.state is ActionState.LISTENING
    data.passive(Command("PASV"))
    assert first.state is ActionState.CANCELLED
    assert data.current is None
    channel.sent[1].answer(b"227 Entering Passive Mode (203,0,113,50,156,65).")
    second = session.redirectCalls[1].grant(41001).actions[0]
    assert data.current is second
    assert second.state is ActionState.LISTENING


def test_aChannelGrantedAfterANewerRequestIsCancelled() -> None:
    """Pipelined PASV PASV: the first grant comes after the second was asked for."""
    data, channel, session = make()
    data.passive(Command("PASV"))
    data.passive(Command("PASV"))
    channel.sent[0].answer(b"227 Entering Passive Mode (203,0,113,50,156,64).")
    channel.sent[1].answer(b"227 Entering Passive Mode (203,0,113,50,156,65).")
    first = session.redirectCalls[0].grant(41000).actions[0]
    second = session.redirectCalls[1].grant(41001).actions[0]
    assert first.state is ActionState.CANCELLED
    assert data.current is second
