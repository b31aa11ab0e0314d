"""FTP filter properties on FakeSession: packet boundaries change nothing, and no byte
stream from either side opens a data channel that a data command did not ask for.

The fake session answers as the real gateway does: C{Session.redirectConnections} and
C{joinConnections} bind their listeners before returning, so here every redirect and
join is granted synchronously, on a port derived from what was asked; an upstream
connect succeeds at once.  Where a server is scripted, it answers each command the
moment the gateway writes it (an infinitely fast server): the order of events is then
fixed by the byte streams alone, and any difference between two splits of the same
stream is the filter's doing.
"""

from __future__ import annotations

import gc
import re
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.logger import globalLogPublisher

from fwxtwisted.address import Address
from fwxtwisted.filters.ftp.dataaddress import parseEprt, parsePort
from fwxtwisted.filters.ftp.filter import ftpFilter
from fwxtwisted.filters.ftp.options import parseFTPOptions
from fwxtwisted.interfaces import ActionState, Connect, Direction, Listen, Side
from fwxtwisted.testing import (
    DEFAULT_CLIENT,
    DEFAULT_EXTERNAL_IP,
    DEFAULT_INTERNAL,
    DEFAULT_UPSTREAM,
    FakeSession,
    JoinCall,
    RedirectCall,
)

CLIENT_IP = DEFAULT_CLIENT.host  # 192.0.2.10
SERVER_IP = DEFAULT_UPSTREAM.host  # 203.0.113.50
INTERNAL_IP = DEFAULT_INTERNAL.host  # 198.51.100.1
EXTERNAL_IP = DEFAULT_EXTERNAL_IP  # 203.0.113.1
MAX_LINE = 512
INTERNAL_ERROR = "internal error in the FTP filter"
POLICIES = ("client", "passive", "active")

# -- the fake gateway and the scripted server -------------------------------------------------


def _port(key: object) -> int:
    """A port derived from what was asked, so that every split gets the same one."""
    return 20000 + zlib.crc32(repr(key).encode()) % 40000


class ScriptedServer:
    """An FTP server that answers each command line from a fixed script.

    It numbers its passive ports by the order of PASV/EPSV it receives, and names a
    host other than its own in 227 replies (the gateway must ignore it).
    """

    greeting = b"220 scripted server ready\r\n"

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.passivePorts: list[int] = []
        self._buffer = b""

    def receive(self, data: bytes) -> list[bytes]:
        """Consume bytes from the gateway; return one reply per complete line."""
        self._buffer += data
        replies = []
        while b"\r\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\r\n", 1)
            self.received.append(line)
            replies.append(self.answer(line))
        return replies

    def answer(self, line: bytes) -> bytes:
        verb = line.partition(b" ")[0].upper()
        if verb in (b"PASV", b"EPSV"):
            port = 40000 + len(self.passivePorts)
            self.passivePorts.append(port)
            if verb == b"EPSV":
                return b"229 Entering Extended Passive Mode (|||%d|)\r\n" % port
            return b"227 Entering Passive Mode (10,9,8,7,%d,%d).\r\n" % (port >> 8, port & 255)
        if verb in (b"RETR", b"STOR", b"LIST", b"NLST", b"APPE"):
            return b"150 Opening BINARY mode data connection.\r\n226 Transfer complete.\r\n"
        return {
            b"USER": b"331 Please specify the password.\r\n",
            b"PASS": b"230 Login successful.\r\n",
            b"TYPE": b"200 Switching to Binary mode.\r\n",
            b"PORT": b"200 PORT command successful. Consider using PASV.\r\n",
            b"EPRT": b"200 EPRT command successful. Consider using EPSV.\r\n",
            b"SYST": b"215 UNIX Type: L8\r\n",
            b"NOOP": b"200 NOOP ok.\r\n",
            b"QUIT": b"221 Goodbye.\r\n",
            b"FEAT": b"211-Features:\r\n EPRT\r\n EPSV\r\n AUTH TLS\r\n PASV\r\n211 End\r\n",
            b"HELP": (
                b"214-The following commands are recognized.\r\n"
                b" PORT 192,0,2,99,0,25 227 (10,9,8,7,0,21) (|||25|)\r\n"
                b"227 Entering Passive Mode (192,0,2,99,0,25)\r\n"
                b"214 Help OK.\r\n"
            ),
        }.get(verb, b"500 Unknown command.\r\n")


class GatewaySession(FakeSession):
    """A FakeSession that grants redirects, joins and upstream connects at once, as the
    real session does, and optionally plays a scripted server.

    With C{delayed}, the scripted server's replies wait in L{pendingReplies} until the
    test releases them (a slow server); otherwise they arrive as soon as the gateway
    writes the command.  With no server, the test sends the server's bytes itself.
    """

    def __init__(
        self,
        policy: str = "client",
        explicit: bool = False,
        server: ScriptedServer | None = None,
        delayed: bool = False,
    ) -> None:
        options: dict[str, object] = {"data_policy": policy, "max_line_length": MAX_LINE}
        if explicit:
            options.update(explicit=True, allow_destinations=["203.0.113.0/24:21"])
        super().__init__(
            options=parseFTPOptions(options),
            defaultUpstream=None if explicit else DEFAULT_UPSTREAM.withPort(21),
        )
        self.server = server
        self.delayed = delayed
        self.pendingReplies: list[bytes] = []

    def redirectConnections(self, *args: Any, **kwargs: Any) -> Any:
        deferred = super().redirectConnections(*args, **kwargs)
        call = self.redirectCalls[-1]
        if call.pending:
            call.grant(_port((call.connectAddresses, call.internalAddress, call.expectedPeer)))
        return deferred

    def joinConnections(self, *args: Any, **kwargs: Any) -> Any:
        deferred = super().joinConnections(*args, **kwargs)
        call = self.joinCalls[-1]
        if call.pending:
            call.grant(_port((call.client, "client")), _port((call.server, "server")))
        return deferred

    def connectUpstream(self, address: Address | None = None) -> Any:
        deferred = super().connectUpstream(address)
        if not self.closed:
            self.succeedUpstream()
            if self.server is not None:
                self.serverSends(self.server.greeting)
        return deferred

    def _deliver(self, direction: Direction, data: bytes) -> None:
        super()._deliver(direction, data)
        if direction is not Direction.CLIENT_TO_SERVER or self.server is None:
            return
        for reply in self.server.receive(data):
            if self.delayed:
                self.pendingReplies.append(reply)
            else:
                self.serverSends(reply)

    def releaseReplies(self, count: int) -> None:
        """The slow server's next C{count} replies arrive (as one chunk)."""
        released, self.pendingReplies = self.pendingReplies[:count], self.pendingReplies[count:]
        if released:
            self.serverSends(b"".join(released))


def start(
    policy: str = "client",
    explicit: bool = False,
    server: ScriptedServer | None = None,
    delayed: bool = False,
) -> GatewaySession:
    session = GatewaySession(policy, explicit, server, delayed)
    session.attachFilter(ftpFilter)
    return session


def splitAt(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """C{data} cut at the given offsets (taken modulo its length + 1)."""
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    bounds = [0, *points, len(data)]
    return [data[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]


def _redirect(call: RedirectCall) -> tuple[object, ...]:
    actions = call.redirection.actions if call.redirection is not None else ()
    return (
        call.connectAddresses,
        call.internalAddress,
        call.proxyExternalAddress,
        call.transport,
        call.flags,
        call.protocolId,
        call.expectedPeer,
        call.portRange,
        dict(call.tls or {}),
        call.dataFilterFactory,
        call.pending,
        tuple((action.internalAddress, action.state) for action in actions),
    )


def _join(call: JoinCall) -> tuple[object, ...]:
    join = call.join
    return (
        call.client,
        call.server,
        call.flags,
        dict(call.tls),
        call.pending,
        None if join is None else (dict(join.listeningAddresses), join.state),
    )


def outcome(session: FakeSession) -> dict[str, object]:
    """Everything the filter made the gateway do: bytes each way, EOFs, data channels
    (with their final states), upstream connects, and the close."""
    return {
        "toServer": session.toServer,
        "toClient": session.toClient,
        "toServerEOF": session.toServerEOF,
        "toClientEOF": session.toClientEOF,
        "redirects": [_redirect(call) for call in session.redirectCalls],
        "joins": [_join(call) for call in session.joinCalls],
        "upstream": [connect.address for connect in session.upstreamConnects],
        "closed": session.closed,
        "closeReason": session.closeReason,
    }


@contextmanager
def loggedFailures() -> Iterator[list[dict[str, Any]]]:
    """Collect the log events that carry a failure (an exception caught and logged)."""
    failures: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if "log_failure" in event or event.get("isError"):
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield failures
    finally:
        globalLogPublisher.removeObserver(observe)


@pytest.fixture(autouse=True)
def noUnhandledErrors() -> Iterator[None]:
    """After each test, an error left unhandled in a Deferred (logged when it is garbage
    collected) fails the test too.  Once per test: a collection per example is slow."""
    with loggedFailures() as failures:
        yield
        gc.collect()
    assert failures == []


# -- (a) any split of the client's stream ------------------------------------------------------

CLIENT_LINES = [
    b"USER anonymous",
    b"PASS guest@example.org",
    b"USER anonymous@203.0.113.50",
    b"USER anonymous@198.51.100.77",
    b"USER anonymous@unknown.example",
    b"TYPE I",
    b"PASV",
    b"EPSV",
    b"EPSV 1",
    b"EPSV 2",
    b"EPSV ALL",
    b"PORT 192,0,2,10,200,10",
    b"port 192,0,2,10,200,11",
    b"EPRT |1|192.0.2.10|51212|",
    b"PORT 192,0,2,99,200,10",
    b"PORT 192,0,2,10,0,21",
    b"EPRT |1|203.0.113.50|51212|",
    b"PORT 1,2,3",
    b"LPSV",
    b"RETR f",
    b"RETR caf\xc3\xa9 \xe9t\xe9",
    b"STOR g",
    b"LIST",
    b"NLST",
    b"HELP",
    b"FEAT",
    b"SYST",
    b"NOOP",
    b"AUTH TLS",
    b"PROT P",
    b"\xff\xf4\xff\xf2ABOR",
    b"QUIT",
    # Junk: reply-shaped text, empty and space-only lines, 8-bit bytes, controls.
    b"227 Entering Passive Mode (192,0,2,10,200,10)",
    b"229 Entering Extended Passive Mode (|||50000|)",
    b"200 PORT command successful",
    b"",
    b" ",
    b"hello world",
    b"\x80\xfe\xff",
    b"RETR a\rPORT 192,0,2,99,0,25",
    b"NOOP\x01",
    b"X",
]
TERMINATORS = [b"\r\n", b"\r\n", b"\n", b"\r\r\n"]
FATAL_TAILS = [
    b"",
    b"RETR " + b"a" * (MAX_LINE + 100) + b"\r\n",
    b"RETR " + b"a" * (MAX_LINE + 100),
    b"RETR a\0b\r\n",
    b"\0",
    b"NOOP",
]

LOGINS = [
    b"",
    b"USER anonymous\r\nPASS guest@example.org\r\n",
    b"USER anonymous@203.0.113.50\r\nPASS guest@example.org\r\n",
]
clientLines = st.tuples(st.sampled_from(CLIENT_LINES), st.sampled_from(TERMINATORS)).map(b"".join)
# Mostly a login, then commands, then (one time in four) a line that breaks the framing.
clientStreams = st.tuples(
    st.sampled_from(LOGINS),
    st.lists(clientLines, min_size=3, max_size=30).map(b"".join),
    st.sampled_from([b""] * (3 * (len(FATAL_TAILS) - 1)) + FATAL_TAILS[1:]),
).map(b"".join)
cutLists = st.lists(st.integers(min_value=0), max_size=12)


def runClientStream(
    chunks: Sequence[bytes], policy: str, explicit: bool
) -> tuple[GatewaySession, list[dict[str, Any]]]:
    with loggedFailures() as failures:
        session = start(policy, explicit, ScriptedServer())
        for chunk in chunks:
            session.clientSends(chunk)
    return session, failures


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=clientStreams,
    cuts=cutLists,
    policy=st.sampled_from(POLICIES),
    explicit=st.booleans(),
)
def test_clientStreamAnySplitSameOutcome(
    data: bytes, cuts: list[int], policy: str, explicit: bool
) -> None:
    """However the client's bytes are cut into segments, the server and the client see
    the same bytes, the same data channels are asked for (and end the same way), and the
    session closes, or not, for the same reason."""
    whole, wholeFailures = runClientStream([data], policy, explicit)
    split, splitFailures = runClientStream(splitAt(data, cuts), policy, explicit)
    assert outcome(split) == outcome(whole)
    assert wholeFailures == splitFailures == []
    assert whole.closeReason != INTERNAL_ERROR


def test_realisticSessionByteByByte() -> None:
    """A whole session, one byte per segment, is a session: the extreme split."""
    data = b"".join(
        line + b"\r\n"
        for line in [
            b"USER anonymous",
            b"PASS guest@example.org",
            b"TYPE I",
            b"PASV",
            b"RETR f",
            b"PORT 192,0,2,10,200,10",
            b"STOR g",
            b"EPSV",
            b"LIST",
            b"QUIT",
        ]
    )
    for policy in POLICIES:
        whole, _ = runClientStream([data], policy, explicit=False)
        bytewise, _ = runClientStream([data[i : i + 1] for i in range(len(data))], policy, False)
        assert outcome(bytewise) == outcome(whole)
        assert not whole.closed
        assert whole.toClient.count(b"226 Transfer complete.") == 3
        assert len(whole.redirectCalls) + len(whole.joinCalls) == 3


# -- (b) any split of the server's stream ------------------------------------------------------

CLIENT_SCRIPT = b"".join(
    line + b"\r\n"
    for line in [
        b"USER anonymous",
        b"PASS guest@example.org",
        b"SYST",
        b"FEAT",
        b"TYPE I",
        b"PASV",
        b"RETR f",
        b"EPSV",
        b"LIST",
        b"PORT 192,0,2,10,200,10",
        b"STOR g",
        b"EPRT |1|192.0.2.10|51212|",
        b"NLST",
        b"HELP",
        b"NOOP",
        b"QUIT",
    ]
)


def _serverSees(policy: str) -> list[bytes]:
    """The verbs the server receives for CLIENT_SCRIPT under C{policy}, in order."""
    session = start(policy, server=ScriptedServer())
    session.clientSends(CLIENT_SCRIPT)
    assert session.server is not None
    return [line.partition(b" ")[0] for line in session.server.received]


SERVER_SEES = {policy: _serverSees(policy) for policy in POLICIES}

TRANSFER_REPLIES = [
    b"150 Opening BINARY mode data connection.\r\n226 Transfer complete.\r\n",
    b"125 Data connection already open.\r\n250 Done.\r\n",
    b"150-Opening data connection\r\n 227 (1,2,3,4,5,6)\r\n150 for f.\r\n226 Done.\r\n",
    b"150 Here it comes.\r\n426 Connection closed; transfer aborted.\r\n",
    b"550 Failed to open file.\r\n",
]
ACTIVE_REPLIES = [
    b"200 PORT command successful.\r\n",
    b"200-PORT\r\n200 ok\r\n",
    b"425 Can't open data connection.\r\n",
]
SERVER_REPLIES: dict[bytes | None, list[bytes]] = {
    None: [
        b"220 ready\r\n",
        b"220-Welcome\r\n220-to the\r\n220 server\r\n",
        b"120 Service ready in 1 minute.\r\n220 ready\r\n",
        b"220-PORT 192,0,2,99,0,25\r\n227 Entering Passive Mode (192,0,2,99,0,25)\r\n220 ok\r\n",
    ],
    b"USER": [b"331 Please specify the password.\r\n", b"331-Password\r\n331 please\r\n"],
    b"PASS": [b"230 Login successful.\r\n", b"230-Hi\r\n227 (1,2,3,4,5,6)\r\n230 in\r\n"],
    b"SYST": [b"215 UNIX Type: L8\r\n", b"502 Not implemented.\r\n"],
    b"FEAT": [
        b"211-Features:\r\n EPRT\r\n EPSV\r\n AUTH TLS\r\n PBSZ\r\n PASV\r\n211 End\r\n",
        b"211 No features.\r\n",
        b"500 Unknown command.\r\n",
    ],
    b"TYPE": [b"200 Switching to Binary mode.\r\n"],
    b"PASV": [
        b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n",
        b"227 Entering Passive Mode (10,9,8,7,156,64)\r\n",
        b"227 Entering Passive Mode 10,9,8,7,156,64\r\n",
        b"227 =10,9,8,7,156,64\r\n",
        b"227 Passive (10, 9, 8, 7, 156, 64) ok\r\n",
        b"227-Entering Passive Mode\r\n227 (10,9,8,7,156,64)\r\n",
        b"227 Entering Passive Mode (10,9,8,7,0,0).\r\n",
        b"227 Entering Passive Mode (300,9,8,7,156,64).\r\n",
        b"227 Entering Passive Mode.\r\n",
        b"425 Cannot open passive connection.\r\n",
    ],
    b"EPSV": [
        b"229 Entering Extended Passive Mode (|||40001|)\r\n",
        b"229 Entering Extended Passive Mode (!!!40001!)\r\n",
        b"229-Extended\r\n229 (|||40001|)\r\n",
        b"229 Entering Extended Passive Mode (|||70000|)\r\n",
        b"229 Entering Extended Passive Mode\r\n",
        b"425 Cannot open passive connection.\r\n",
    ],
    b"PORT": ACTIVE_REPLIES,
    b"EPRT": ACTIVE_REPLIES,
    b"RETR": TRANSFER_REPLIES,
    b"STOR": TRANSFER_REPLIES,
    b"LIST": TRANSFER_REPLIES,
    b"NLST": TRANSFER_REPLIES,
    b"HELP": [
        b"214-Commands:\r\n PORT 192,0,2,99,0,25\r\n229 (|||25|)\r\n214 Help OK.\r\n",
        b"214 Help OK.\r\n",
    ],
    b"NOOP": [
        b"200 NOOP ok.\r\n",
        # One reply too many: the 227 answers QUIT, and must open nothing.
        b"200 NOOP ok.\r\n227 Entering Passive Mode (192,0,2,10,200,10).\r\n",
    ],
    b"QUIT": [b"221 Goodbye.\r\n"],
}
SERVER_TAILS = [
    b"",
    b"421 Timeout.\r\n",
    b"garbage\r\n",
    b"999 not a reply code\r\n",
    b"200 " + b"x" * (MAX_LINE + 100),
    b"200 ok\0\r\n",
    b"211-unfinished multi-line\r\n more\r\n",
]


@st.composite
def serverStreams(draw: st.DrawFn, policy: str) -> tuple[bytes, bytes]:
    """The greeting, then a reply for each command the server sees, some with bare LF
    line ends, then perhaps a hostile tail."""
    replies = []
    for verb in [None, *SERVER_SEES[policy]]:
        reply = draw(st.sampled_from(SERVER_REPLIES[verb]))
        if draw(st.booleans()):
            reply = reply.replace(b"\r\n", b"\n")
        replies.append(reply)
    return replies[0], b"".join(replies[1:]) + draw(st.sampled_from(SERVER_TAILS))


def runServerStream(policy: str, chunks: Sequence[bytes]) -> GatewaySession:
    session = start(policy)
    session.clientSends(CLIENT_SCRIPT)
    for chunk in chunks:
        session.serverSends(chunk)
    return session


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_serverStreamAnySplitSameOutcome(data: st.DataObject) -> None:
    """However the server's bytes are cut, the outcome is the same as feeding them whole:
    multi-line replies, 1yz then 2yz, the many 227 and 229 spellings, extra replies and
    broken tails included."""
    policy = data.draw(st.sampled_from(POLICIES), label="policy")
    greeting, replies = data.draw(serverStreams(policy), label="stream")
    stream = greeting + replies
    # A reply cannot come before its command: the server sends nothing past its greeting
    # until the gateway has forwarded the commands, which wait for that greeting.
    cuts = [*data.draw(cutLists, label="cuts"), len(greeting)]
    with loggedFailures() as failures:
        whole = runServerStream(policy, [greeting, replies])
        split = runServerStream(policy, splitAt(stream, cuts))
    assert outcome(split) == outcome(whole)
    assert failures == []
    assert whole.closeReason != INTERNAL_ERROR


def test_serverScriptIsAnsweredInFull() -> None:
    """The first reply of every list is the plain answer: the whole script then runs
    to the end, four transfers on four data channels, nothing closed."""
    for policy in POLICIES:
        plain = [SERVER_REPLIES[verb][0] for verb in [None, *SERVER_SEES[policy]]]
        session = runServerStream(policy, [plain[0], b"".join(plain[1:])])
        assert not session.closed
        assert session.toClient.endswith(b"221 Goodbye.\r\n")
        assert session.toClient.count(b"226 Transfer complete.") == 4
        assert len(session.redirectCalls) + len(session.joinCalls) == 4


# -- (c) random bytes from either side ---------------------------------------------------------

CLIENT_TOKENS = [
    b"USER anonymous\r\n",
    b"USER anonymous@203.0.113.50\r\n",
    b"PASS x\r\n",
    b"PASV\r\n",
    b"EPSV\r\n",
    b"PORT 192,0,2,10,200,10\r\n",
    b"PORT 192,0,2,99,0,25\r\n",
    b"EPRT |1|192.0.2.10|51212|\r\n",
    b"EPRT |2|::1|51212|\r\n",
    b"RETR f\r\n",
    b"227 Entering Passive Mode (192,0,2,10,200,10)\r\n",
    b"\xff\xf4\xff\xf2",
    b"\r\n",
    b"\n",
    b"\r",
    b"\0",
    b" ",
]
SERVER_TOKENS = [
    b"220 hi\r\n",
    b"331 pw\r\n",
    b"230 in\r\n",
    b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n",
    b"227 Entering Passive Mode (192,0,2,99,0,25).\r\n",
    b"229 Entering Extended Passive Mode (|||40001|)\r\n",
    b"229 (|||0|)\r\n",
    b"200 PORT 192,0,2,99,0,25\r\n",
    b"150 go\r\n",
    b"226 done\r\n",
    b"211-",
    b"211 end\r\n",
    b"421 bye\r\n",
    b"120 wait\r\n",
    b"500 no\r\n",
    b"\r\n",
    b"\0",
]


def noise(tokens: list[bytes]) -> st.SearchStrategy[bytes]:
    """Random bytes mixed with protocol-shaped fragments, so both shallow and deep
    states are reached."""
    piece = st.binary(max_size=24) | st.sampled_from(tokens)
    return st.lists(piece, min_size=1, max_size=6).map(b"".join)


steps = st.lists(
    st.one_of(
        st.tuples(st.just("client"), noise(CLIENT_TOKENS)),
        st.tuples(st.just("server"), noise(SERVER_TOKENS)),
    ),
    max_size=14,
)

_DATA_VERB = re.compile(rb"(?i)pasv|epsv|port|eprt")


def _lines(stream: bytes) -> list[bytes]:
    """The CRLF-terminated lines of C{stream} (an unfinished tail left out)."""
    return stream.split(b"\r\n")[:-1]


def assertSoundDataChannels(session: FakeSession, fromClient: bytes) -> None:
    """The invariants no byte stream may break.

    - Each data channel answers a data command of the client: there are no more of them
      than client lines naming PASV, EPSV, PORT or EPRT (an over-count: a line is
      counted however it parses), and passive ones need a PASV/EPSV the gateway sent.
    - The gateway connects only to the server's control IP, or to the client's own IP
      on a port of 1024 or more; it listens only for the client, or for the server.
    - What reaches the server is whole CRLF lines without CR, LF or NUL inside, and
      every PORT/EPRT the server gets names the gateway's own external address.
    - At most one data channel waits for its connection at any time.
    """
    asked = sum(1 for line in fromClient.split(b"\n") if _DATA_VERB.search(line))
    toServer = _lines(session.toServer)
    assert session.toServer == b"".join(line + b"\r\n" for line in toServer)
    assert not any(byte in line for line in toServer for byte in (b"\r", b"\n", b"\0"))
    passiveAsked = sum(1 for line in toServer if line[:4] in (b"PASV", b"EPSV"))
    for line in toServer:
        verb, _, argument = line.partition(b" ")
        if verb in (b"PORT", b"EPRT"):
            parse = parsePort if verb == b"PORT" else parseEprt
            assert parse(argument.decode("latin-1")).host == EXTERNAL_IP, line
    # EPSV and EPRT may each be retried once as PASV and PORT toward an old server.
    sent = sum(1 for line in toServer if line[:4] in (b"PASV", b"EPSV", b"PORT", b"EPRT"))
    assert sent <= 2 * asked, "the gateway sent a data command nobody asked for"
    assert b"\0" not in session.toClient

    passive = active = 0
    for call in session.redirectCalls:
        [target] = call.connectAddresses
        if target.host == SERVER_IP:
            passive += 1
            assert call.expectedPeer in (None, CLIENT_IP)
            assert call.internalAddress is not None and call.internalAddress.host == INTERNAL_IP
        else:
            active += 1
            assert target.host == CLIENT_IP and target.port >= 1024, target
            assert call.expectedPeer == SERVER_IP
        assert 0 < target.port < 65536
    for join in session.joinCalls:
        for side, leg in ((Side.CLIENT, join.client), (Side.SERVER, join.server)):
            peer = CLIENT_IP if side is Side.CLIENT else SERVER_IP
            if isinstance(leg, Listen):
                assert leg.expectedPeer == peer
            else:
                assert isinstance(leg, Connect)
                assert leg.address.host == peer
                assert side is Side.SERVER or leg.address.port >= 1024
    assert passive <= passiveAsked
    assert passive + active + len(session.joinCalls) <= asked
    waiting = [action for action in session.actions if action.state is ActionState.LISTENING]
    assert len(waiting) <= 1, waiting


def runSteps(session: GatewaySession, script: Sequence[tuple[str, bytes]]) -> None:
    """Play C{script}, checking the invariants after every step."""
    fromClient = b""
    for side, data in script:
        if side == "client":
            fromClient += data
            session.clientSends(data)
        elif session.serverAddress is not None:  # no server bytes before its connection
            session.serverSends(data)
        assertSoundDataChannels(session, fromClient)
        assert session.closeReason != INTERNAL_ERROR


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=steps, policy=st.sampled_from(POLICIES), explicit=st.booleans())
def test_randomBytesEitherSideAreHandled(
    script: list[tuple[str, bytes]], policy: str, explicit: bool
) -> None:
    """Random bytes from either side, in any order: no exception escapes the filter,
    nothing is logged as a failure, the session never closes on an internal error, and
    every data channel is one a data command asked for."""
    with loggedFailures() as failures:
        runSteps(start(policy, explicit), script)
    assert failures == []


NO_DATA_COMMANDS = [
    token for token in CLIENT_TOKENS if not _DATA_VERB.search(token) or token.startswith(b"227")
]
ADDRESS_REPLIES = [
    b"227 Entering Passive Mode (10,9,8,7,156,64).\r\n",
    b"227 Entering Passive Mode (192,0,2,10,200,10)\r\n",
    b"229 Entering Extended Passive Mode (|||40001|)\r\n",
    b"200 PORT 192,0,2,10,200,10\r\n",
    b"200-EPRT |1|192.0.2.10|51212|\r\n227 (10,9,8,7,156,64)\r\n200 ok\r\n",
    b"150 (|||40001|)\r\n226 (10,9,8,7,156,64)\r\n",
    b"230 in\r\n",
    b"331 pw\r\n",
]


@settings(max_examples=100, deadline=None)
@given(
    script=st.lists(
        st.one_of(
            st.tuples(st.just("client"), st.lists(st.sampled_from(NO_DATA_COMMANDS), min_size=1)),
            st.tuples(st.just("server"), st.lists(st.sampled_from(ADDRESS_REPLIES), min_size=1)),
        ).map(lambda step: (step[0], b"".join(step[1]))),
        max_size=12,
    ),
    policy=st.sampled_from(POLICIES),
)
def test_addressesInRepliesOpenNothingUnasked(script: list[tuple[str, bytes]], policy: str) -> None:
    """The client sends no data command (reply-shaped 227 text included), the server
    sends 227, 229 and PORT-like text in replies of every kind, unsolicited or answering
    other commands: no data channel is ever asked of the gateway."""
    session = start(policy)
    session.serverSends(b"220 hi\r\n")
    runSteps(session, script)
    assert session.redirectCalls == []
    assert session.joinCalls == []
    assert not any(line[:4] in (b"PASV", b"EPSV") for line in _lines(session.toServer))


def hostileReply(kind: str, port: int) -> bytes:
    """A reply naming C{port} (a third party's IP in the 227), of the given kind."""
    if kind == "227":
        return b"227 Entering Passive Mode (192,0,2,99,%d,%d).\r\n" % divmod(port, 256)
    if kind == "229":
        return b"229 Entering Extended Passive Mode (|||%d|)\r\n" % port
    if kind == "1yz":
        return b"150 (192,0,2,99,%d,%d) (|||%d|)\r\n" % (*divmod(port, 256), port)
    return b"425 (192,0,2,99,%d,%d) (|||%d|)\r\n" % (*divmod(port, 256), port)


@settings(max_examples=100, deadline=None)
@given(
    commands=st.lists(
        st.sampled_from([b"PASV", b"EPSV", b"NOOP", b"SYST", b"TYPE I", b"HELP", b"RETR f"]),
        min_size=1,
        max_size=10,
    ),
    kinds=st.lists(st.sampled_from(["227", "229", "1yz", "425"]), min_size=10, max_size=10),
    cuts=cutLists,
)
def test_passiveReplyCountsOnlyAsTheAnswerToItsPasv(
    commands: list[bytes], kinds: list[str], cuts: list[int]
) -> None:
    """Commands pipelined, and a server answering each one with an address: the
    gateway opens a passive channel only where a 227 answers a PASV or a 229 an EPSV,
    in command order (a 1yz answers nothing yet), always toward the server's own IP,
    however the replies are cut."""
    session = start("client")
    session.serverSends(b"220 hi\r\n")
    session.clientSends(b"".join(command + b"\r\n" for command in commands))
    assert _lines(session.toServer) == commands
    replies = []
    for index, kind in enumerate(kinds[: len(commands)]):
        replies.append(hostileReply(kind, 40000 + index))
        if kind == "1yz":  # then its final reply, naming nothing
            replies.append(b"226 done\r\n")
    for chunk in splitAt(b"".join(replies), cuts):
        session.serverSends(chunk)
    expected = [
        Address(SERVER_IP, 40000 + index)
        for index, (command, kind) in enumerate(zip(commands, kinds, strict=False))
        if (command, kind) in ((b"PASV", "227"), (b"EPSV", "229"))
    ]
    assert [call.connectAddresses[0] for call in session.redirectCalls] == expected
    assert session.joinCalls == []
    assert not session.closed


# -- (d) data commands pipelined ahead of a slow server ----------------------------------------

DATA_COMMANDS = [
    b"PASV",
    b"EPSV",
    b"PORT 192,0,2,10,%d,%d",
    b"EPRT |1|192.0.2.10|%d|",
    b"RETR f",
    b"NOOP",
]


@st.composite
def pipelined(draw: st.DrawFn) -> list[bytes]:
    lines = []
    for index, template in enumerate(
        draw(st.lists(st.sampled_from(DATA_COMMANDS), min_size=1, max_size=12))
    ):
        port = 51200 + index
        if template.count(b"%d") == 2:
            lines.append(template % divmod(port, 256))
        else:
            lines.append(template % port if b"%d" in template else template)
    return lines


def expectedChannel(session: GatewaySession, lines: list[bytes]) -> Address | None:
    """Where the newest data command's channel connects (client policy), once every
    reply is in: the server's data port for PASV/EPSV, the client's port for PORT/EPRT."""
    assert session.server is not None
    data = [line for line in lines if line.split(b" ")[0] in (b"PASV", b"EPSV", b"PORT", b"EPRT")]
    if not data:
        return None
    verb, _, argument = data[-1].partition(b" ")
    if verb in (b"PASV", b"EPSV"):
        return Address(SERVER_IP, session.server.passivePorts[-1])
    parse = parsePort if verb == b"PORT" else parseEprt
    return parse(argument.decode())


@settings(max_examples=100, deadline=None)
@given(
    lines=pipelined(),
    cuts=cutLists,
    releases=st.lists(st.integers(0, 3), max_size=12),
    policy=st.sampled_from(POLICIES),
)
def test_onePendingDataChannelWhenPipelined(
    lines: list[bytes], cuts: list[int], releases: list[int], policy: str
) -> None:
    """Data commands pipelined ahead of a slow server (its replies arrive later, a few
    at a time): at no point do two data channels wait for a connection, and once every
    reply is in, the one left is the newest command's, the one the server will use."""
    session = start(policy, server=ScriptedServer(), delayed=True)
    session.clientSends(b"USER anonymous\r\nPASS x\r\n")
    session.releaseReplies(2)
    stream = b"".join(line + b"\r\n" for line in lines)
    chunks = splitAt(stream, cuts)
    for index, chunk in enumerate(chunks):
        session.clientSends(chunk)
        assertSoundDataChannels(session, stream)
        session.releaseReplies(releases[index] if index < len(releases) else 0)
        assertSoundDataChannels(session, stream)
    session.releaseReplies(len(session.pendingReplies))
    assertSoundDataChannels(session, stream)
    assert not session.closed
    waiting = [action for action in session.actions if action.state is ActionState.LISTENING]
    if policy == "client":
        expected = expectedChannel(session, lines)
        assert [action.connectAddress for action in waiting] == (
            [] if expected is None else [expected]
        )
    else:
        asked = any(line.split(b" ")[0] in (b"PASV", b"EPSV", b"PORT", b"EPRT") for line in lines)
        assert len(waiting) == int(asked)


def test_pipelinedPasvTwiceKeepsOnlyTheSecond() -> None:
    """PASV, PASV sent together: the server answers both, and replaces its first
    passive port with the second.  The gateway's first channel goes too."""
    session = start(server=ScriptedServer(), delayed=True)
    session.clientSends(b"USER a\r\nPASS b\r\nPASV\r\nPASV\r\n")
    session.releaseReplies(4)
    first, second = (call.redirection.actions[0] for call in session.redirectCalls)  # type: ignore[union-attr]
    assert first.state is ActionState.CANCELLED
    assert second.state is ActionState.LISTENING
    assert session.toClient.count(b"227 Entering Passive Mode") == 2


def test_pipelinedPasvThenPortKeepsThePort() -> None:
    """PASV then PORT, sent together: the PORT's channel is open before the server's 227
    arrives, and it is the one kept."""
    session = start(server=ScriptedServer(), delayed=True)
    session.clientSends(b"USER a\r\nPASS b\r\nPASV\r\nPORT 192,0,2,10,200,10\r\n")
    session.releaseReplies(4)
    states = {
        call.connectAddresses[0].host: call.redirection.actions[0].state  # type: ignore[union-attr]
        for call in session.redirectCalls
    }
    assert states == {SERVER_IP: ActionState.CANCELLED, CLIENT_IP: ActionState.LISTENING}
    assert _lines(session.toServer)[-2] == b"PASV"
    assert _lines(session.toServer)[-1].startswith(b"PORT 203,0,113,1,")


@pytest.mark.parametrize("policy", POLICIES)
def test_pipelinedEpsvThriceLeavesOneChannel(policy: str) -> None:
    """EPSV three times and RETR in one segment, under every data policy: one data
    channel is left waiting, and the transfer's replies reach the client."""
    session = start(policy, server=ScriptedServer(), delayed=True)
    session.clientSends(b"USER a\r\nPASS b\r\nEPSV\r\nEPSV\r\nEPSV\r\nRETR f\r\n")
    session.releaseReplies(len(session.pendingReplies))
    waiting = [action for action in session.actions if action.state is ActionState.LISTENING]
    assert len(waiting) == 1
    assert session.toClient.endswith(b"226 Transfer complete.\r\n")
