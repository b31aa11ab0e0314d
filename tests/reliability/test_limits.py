"""Limits with clear refusals: sessions in total and per client IP, unused permissions
per session, the passive port range, the login, idle and data-connect timeouts, the
longest line and the longest multi-line reply.

Subprocess gateways (twistd) run in front of vsftpd or a scripted server of the test;
their open descriptors are counted from /proc after each refusal or timeout.
"""

from __future__ import annotations

import ftplib
import hashlib
import socket
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.interfaces import IListeningPort

from fwxtwisted.errors import TooManyPendingRedirects
from fwxtwisted.interfaces import ActionState, Listen
from fwxtwisted.settings import GatewaySettings
from tests.core.support import Network, RecordingFilter, within
from tests.interop.support import ftpGateway, ftplibDownload, gatewayLog, waitForLog
from tests.peers import Gateway, freePortRange, isListening
from tests.reliability.conftest import Files, Upstream
from tests.reliability.support import (
    SOCKET_TIMEOUT,
    FakeControl,
    LogCapture,
    RawFtp,
    assertCleanLog,
    assertFdsBackTo,
    fakeServer,
    gatewayPid,
    readAll,
    settledFdCount,
)

#: Every gateway of this module: sessions left at its stop get a second, not 30.
GRACE = ["--shutdown-grace", "1"]


def login(address: tuple[str, int], source: str | None = None) -> ftplib.FTP:
    """An ftplib session logged in anonymously, from `source` if given."""
    ftp = ftplib.FTP(timeout=SOCKET_TIMEOUT, source_address=(source, 0) if source else None)
    try:
        ftp.connect(*address)
        ftp.login()
    except BaseException:
        ftp.close()
        raise
    return ftp


def refusal(address: tuple[str, int], source: str | None = None) -> bytes:
    """Everything a client connecting from `source` receives before the gateway closes."""
    bind = (source, 0) if source else None
    with socket.create_connection(address, timeout=SOCKET_TIMEOUT, source_address=bind) as sock:
        return readAll(sock)


def quitSession(ftp: ftplib.FTP) -> None:
    """QUIT, then close."""
    try:
        ftp.quit()
    finally:
        ftp.close()


def assertDownloads(ftp: ftplib.FTP, files: Files) -> None:
    assert ftplibDownload(ftp, files.small.name) == (files.small.sha256, files.small.size)


# -- sessions --------------------------------------------------------------------------------


@pytest.mark.peers
def test_maxSessionsRefusesBeyondTheLimitWith421(upstream: Upstream, files: Files) -> None:
    """--max-sessions 2: a third client gets 421 with the reason and is closed; once a
    session ends, a new one is accepted."""
    with ftpGateway(["--upstream", upstream.address, "--max-sessions", "2", *GRACE]) as gateway:
        pid = gatewayPid(gateway)
        baseline = settledFdCount(pid)
        first, second = login(gateway.address), login(gateway.address)
        try:
            expected = (
                b"421 too many connections (too many sessions (2) on listener ftp-0); "
                b"try again later\r\n"
            )
            assert refusal(gateway.address) == expected
            assert refusal(gateway.address, "127.0.0.2") == expected
            waitForLog(gateway, r"refused 127\.0\.0\.2:\d+: too many sessions \(2\) on listener")
            # The sessions in place are untouched.
            assertDownloads(first, files)
            assertDownloads(second, files)
        finally:
            quitSession(first)
        # A slot is free again once the gateway has seen the QUIT through.
        third = retryLogin(gateway)
        try:
            assertDownloads(third, files)
        finally:
            quitSession(third)
            quitSession(second)
        assertFdsBackTo(pid, baseline)
        assertCleanLog(gateway)


def retryLogin(gateway: Gateway, source: str | None = None, timeout: float = 5.0) -> ftplib.FTP:
    """Log in, retrying while the gateway still refuses (a closing session's slot is
    released when the gateway has seen that session end)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return login(gateway.address, source)
        except ftplib.error_temp as error:
            if not str(error).startswith("421 too many") or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


@pytest.mark.peers
def test_maxSessionsPerIPRefusesOnlyTheCrowdedIP(upstream: Upstream, files: Files) -> None:
    """--max-sessions-per-ip 2: the third client from 127.0.0.1 gets 421, while clients
    from 127.0.0.2 are served, up to their own two."""
    options = ["--upstream", upstream.address, "--max-sessions-per-ip", "2", *GRACE]
    with ftpGateway(options) as gateway:
        pid = gatewayPid(gateway)
        baseline = settledFdCount(pid)
        crowded = [login(gateway.address), login(gateway.address)]
        others: list[ftplib.FTP] = []
        try:
            assert refusal(gateway.address) == (
                b"421 too many connections (too many sessions (2) from 127.0.0.1); "
                b"try again later\r\n"
            )
            # Another IP is not refused: its sessions log in and download.
            others = [login(gateway.address, "127.0.0.2"), login(gateway.address, "127.0.0.2")]
            for ftp in others:
                assertDownloads(ftp, files)
            # And its own third is refused, naming it.
            assert refusal(gateway.address, "127.0.0.2") == (
                b"421 too many connections (too many sessions (2) from 127.0.0.2); "
                b"try again later\r\n"
            )
            for ftp in crowded:
                assertDownloads(ftp, files)
            # One session of 127.0.0.1 ends: that IP may open one again.
            quitSession(crowded.pop())
            crowded.append(retryLogin(gateway))
            assertDownloads(crowded[-1], files)
        finally:
            for ftp in crowded + others:
                quitSession(ftp)
        assertFdsBackTo(pid, baseline)
        assertCleanLog(gateway)


# -- unused permissions per session (in process) ---------------------------------------------


@pytest_twisted.ensureDeferred
async def test_pendingRedirectsCappedPerSession(net: Network) -> None:
    """A filter asking for more unused permissions than max_pending_redirects gets
    TooManyPendingRedirects saying why; no listener is opened for the refused request,
    the permissions it holds keep working, and a used one frees its place."""
    recording = RecordingFilter(connectUpstream=True)
    _, upstreamAddress = net.server()
    running = net.startGateway(
        recording, GatewaySettings(maxPendingRedirects=3), upstream=upstreamAddress
    )
    with LogCapture().attached() as captured:
        _, sessionFilter = await net.openSession(running, recording)
        assert sessionFilter.upstream is not None
        await within(sessionFilter.upstream)
        session = sessionFilter.session
        targets = [net.server() for _ in range(5)]

        # One request larger than the cap is refused whole.
        with pytest.raises(TooManyPendingRedirects) as raised:
            await session.redirectConnections([address for _, address in targets[:4]])
        assert str(raised.value) == "0 unused permissions already (at most 3 per session)"

        granted = await within(session.redirectConnections([targets[0][1], targets[1][1]]))
        listenersBefore = listeningPorts()
        with pytest.raises(TooManyPendingRedirects) as raised:
            await session.redirectConnections([targets[2][1], targets[3][1]])
        assert str(raised.value) == "2 unused permissions already (at most 3 per session)"
        # A join counts as one more: the third fits, a fourth does not.
        third = await within(session.redirectConnections([targets[2][1]]))
        with pytest.raises(TooManyPendingRedirects) as raised:
            await session.joinConnections(
                Listen("127.0.0.1", "127.0.0.1"), Listen("127.0.0.1", "127.0.0.1")
            )
        assert str(raised.value) == "3 unused permissions already (at most 3 per session)"
        assert listeningPorts() == listenersBefore | {a.internalAddress.port for a in third.actions}
        assert "refused 2 more permission(s): 2 unused already" in captured.text()

        # The permissions granted before are unaffected: each relays to its target.
        pending = [*granted.actions, *third.actions]
        assert [a.state for a in pending] == [ActionState.LISTENING] * 3
        for action, (factory, _) in zip(pending, targets, strict=False):
            client = await net.connect(action.internalAddress)
            client.send(b"hello")
            server = await within(factory.accepted.get())
            assert await within(server.waitFor(5)) == b"hello"
        # Used permissions no longer count: new ones may be granted.
        fresh = await within(session.redirectConnections([targets[3][1], targets[4][1]]))
        assert [a.state for a in fresh.actions] == [ActionState.LISTENING] * 2
        assert captured.failures() == []


def listeningPorts() -> set[int]:
    """The ports listening on the reactor now."""
    return {
        reader.getHost().port
        for reader in reactor.getReaders()
        if IListeningPort.providedBy(reader)
    }


# -- the passive port range ------------------------------------------------------------------


@pytest.mark.peers
def test_passiveRangeExhaustedGets425AndTheSessionGoesOn(upstream: Upstream, files: Files) -> None:
    """--passive-ports with a one-port range that another socket holds: PASV gets 425
    with the reason, the session goes on, and once the port is free PASV uses it."""
    low, high = freePortRange(1)
    options = ["--upstream", upstream.address, "--passive-ports", f"{low}-{high}", *GRACE]
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        squatter.bind(("127.0.0.1", low))
        squatter.listen(1)
        with ftpGateway(options) as gateway:
            pid = gatewayPid(gateway)
            baseline = settledFdCount(pid)
            ftp = login(gateway.address)
            try:
                ftp.voidcmd("TYPE I")
                for verb in ("PASV", "EPSV", "PASV"):
                    with pytest.raises(ftplib.error_temp) as raised:
                        ftp.sendcmd(verb)
                    assert str(raised.value) == (
                        f"425 cannot open data connection: no 1 free consecutive port(s) "
                        f"on 127.0.0.1 in {low}-{high}"
                    )
                waitForLog(gateway, rf"cannot open data channel: no 1 free .* in {low}-{high}")
                assert ftp.voidcmd("NOOP").startswith("200")
                squatter.close()
                offered = ftplib.parse227(ftp.sendcmd("PASV"))
                assert offered == ("127.0.0.1", low)
                assertDownloads(ftp, files)
            finally:
                quitSession(ftp)
            assertFdsBackTo(pid, baseline)
            assertCleanLog(gateway)
    finally:
        squatter.close()


# -- timeouts --------------------------------------------------------------------------------


@pytest.mark.peers
def test_loginTimeoutCloses(upstream: Upstream) -> None:
    """--login-timeout 1: a client that never logs in gets 421 and is closed; one that
    logged in stays."""
    options = ["--upstream", upstream.address, "--login-timeout", "1", *GRACE]
    with ftpGateway(options) as gateway:
        pid = gatewayPid(gateway)
        baseline = settledFdCount(pid)
        loggedIn = login(gateway.address)
        try:
            with RawFtp(gateway.address) as silent, RawFtp(gateway.address) as halfway:
                began = time.monotonic()
                silent.expect(220)
                halfway.expect(220)
                # vsftpd is anonymous only: another user is refused, and not logged in.
                assert halfway.command("USER bob")[0] == 530
                for client in (silent, halfway):
                    assert client.reply() == (421, "421 not logged in after 1 s; closing")
                    assert readAll(client.sock) == b""
                assert 0.9 <= time.monotonic() - began < 4.0
            waitForLog(gateway, r"closing: login timeout")
            assert loggedIn.voidcmd("NOOP").startswith("200")
        finally:
            quitSession(loggedIn)
        assertFdsBackTo(pid, baseline)
        assertCleanLog(gateway)


@pytest.mark.peers
def test_idleTimeoutCloses(upstream: Upstream, files: Files) -> None:
    """--idle-timeout 1: commands keep a session alive and so does a transfer slower
    than the timeout; a second of silence then gets 421 and the close."""
    options = ["--upstream", upstream.address, "--idle-timeout", "1", *GRACE]
    with ftpGateway(options) as gateway:
        pid = gatewayPid(gateway)
        baseline = settledFdCount(pid)
        with RawFtp(gateway.address) as client:
            client.login()
            for _ in range(4):
                time.sleep(0.4)
                assert client.command("NOOP")[0] == 200
            # A transfer read slowly over about 2 s: the control connection is silent
            # all along, but a transfer runs, so the session stays.
            assert client.command("TYPE I")[0] == 200
            data = client.dataConnection(client.pasv())
            client.send(f"RETR {files.medium.name}")
            assert client.reply()[0] == 150
            with data:
                received = slowRead(data, files.medium.size, seconds=2.0)
            assert hashlib.sha256(received).hexdigest() == files.medium.sha256
            assert client.reply()[0] == 226
            # (vsftpd may have sent its 226 before the last bytes were read: count the
            # silence from a command of ours.)
            assert client.command("NOOP")[0] == 200
            began = time.monotonic()
            assert client.reply() == (421, "421 idle for 1 s; closing control connection")
            assert 0.8 <= time.monotonic() - began < 3.0
            assert readAll(client.sock) == b""
        waitForLog(gateway, r"closing: idle timeout")
        assertFdsBackTo(pid, baseline)
        assertCleanLog(gateway)


def slowRead(sock: socket.socket, size: int, seconds: float) -> bytes:
    """Read `size` bytes evenly over about `seconds`, then to EOF."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    chunks: list[bytes] = []
    got = 0
    began = time.monotonic()
    while chunk := sock.recv(64 * 1024):
        chunks.append(chunk)
        got += len(chunk)
        ahead = began + seconds * got / size - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    return b"".join(chunks)


@pytest.mark.peers
def test_dataConnectTimeoutClosesTheOfferedPort(upstream: Upstream, files: Files) -> None:
    """--data-connect-timeout 1: a PASV port nobody connects to is closed after a
    second (connecting later is refused), and the session still works."""
    options = ["--upstream", upstream.address, "--data-connect-timeout", "1", *GRACE]
    with ftpGateway(options) as gateway:
        pid = gatewayPid(gateway)
        baseline = settledFdCount(pid)
        ftp = login(gateway.address)
        try:
            host, port = ftplib.parse227(ftp.sendcmd("PASV"))
            began = time.monotonic()
            assert isListening(host, port)
            while isListening(host, port):
                assert time.monotonic() - began < 4.0, "the offered port stayed open"
                time.sleep(0.02)
            assert time.monotonic() - began >= 0.8
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((host, port), timeout=SOCKET_TIMEOUT).close()
            waitForLog(gateway, rf"permission on 127\.0\.0\.1:{port} expired unused")
            assert ftp.voidcmd("NOOP").startswith("200")
            assertDownloads(ftp, files)
        finally:
            quitSession(ftp)
        assertFdsBackTo(pid, baseline)
        assertCleanLog(gateway)


# -- the longest line and reply --------------------------------------------------------------


@pytest.mark.peers
def test_overLongLineEndsOnlyThatSession(upstream: Upstream, files: Files) -> None:
    """A command line over 2048 bytes gets 500 and ends its session; another session,
    open all along, keeps working; nothing of the ended session is left open."""
    with ftpGateway(["--upstream", upstream.address, *GRACE]) as gateway:
        pid = gatewayPid(gateway)
        baseline = settledFdCount(pid)
        bystander = login(gateway.address)
        try:
            with RawFtp(gateway.address) as offender:
                offender.login()
                offender.send("NOOP " + "x" * 3000)
                assert offender.reply() == (500, "500 line longer than 2048 bytes")
                assert readAll(offender.sock) == b""
            waitForLog(gateway, r"closing: client protocol error: line longer than 2048 bytes")
            assertDownloads(bystander, files)
        finally:
            quitSession(bystander)
        assertFdsBackTo(pid, baseline)
        assertCleanLog(gateway)


def hugeReply(lines: int) -> bytes:
    middle = b"".join(b" HELP line %d\r\n" % i for i in range(lines - 2))
    return b"214-The following commands are recognized.\r\n" + middle + b"214 Help OK.\r\n"


@pytest.mark.peers
@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (hugeReply(2000), "multi-line 214 reply over 1000 lines"),
        (b"214 " + b"y" * 3000 + b"\r\n", "line longer than 2048 bytes"),
    ],
    ids=["2000-line-reply", "over-long-reply-line"],
)
def test_overLongReplyGets421(reply: bytes, reason: str, upstream: Upstream, files: Files) -> None:
    """A server answering HELP with 2000 lines (or one line of 3000 bytes): its client
    gets 421, the gateway logs why, and a session to a normal server, through the same
    gateway, is unaffected."""

    def server(control: FakeControl) -> None:
        def helpAnswer(control: FakeControl, argument: str) -> bool:
            control.send(reply)
            return True

        control.serve({}, {"HELP": helpAnswer})

    options = ["--explicit", "--allow-destination", "127.0.0.1/32", *GRACE]
    with fakeServer(server) as fake, ftpGateway(options) as gateway:
        pid = gatewayPid(gateway)
        baseline = settledFdCount(pid)
        normal = ftplib.FTP(timeout=SOCKET_TIMEOUT)
        try:
            normal.connect(*gateway.address)
            normal.login(f"anonymous@{upstream.address}", "x")
            victim = ftplib.FTP(timeout=SOCKET_TIMEOUT)
            try:
                victim.connect(*gateway.address)
                victim.login(f"anonymous@127.0.0.1:{fake.address[1]}", "x")
                with pytest.raises(ftplib.error_temp) as raised:
                    victim.sendcmd("HELP")
                assert str(raised.value) == "421 the server sent an invalid reply; closing"
                assert victim.file is not None
                assert victim.file.readline() == ""
            finally:
                victim.close()
            waitForLog(gateway, rf"bad reply from server: {reason}")
            waitForLog(gateway, rf"closing: server protocol error: {reason}")
            assertDownloads(normal, files)
        finally:
            quitSession(normal)
        assertFdsBackTo(pid, baseline)
        assertCleanLog(gateway)
        assert "y" * 100 not in gatewayLog(gateway)
