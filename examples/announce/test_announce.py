"""Tests for the announce example filter, on fwxtwisted.testing.FakeSession."""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Sequence

from announce_filter import (
    ANNOUNCE,
    MALFORMED,
    MAX_HELD_BYTES,
    MAX_LINE_LENGTH,
    REFUSED,
    UNAVAILABLE,
    AnnounceFilter,
)
from twisted.internet.defer import Deferred
from twisted.plugin import IPlugin
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from fwxtwisted.address import Address
from fwxtwisted.errors import ConfigError, PortRangeExhausted
from fwxtwisted.interfaces import (
    IFilter,
    ISessionFilter,
    RedirectFlags,
    Redirection,
    Transport,
)
from fwxtwisted.testing import FakeSession

SERVER = Address("203.0.113.50", 7070)
GATEWAY = Address("198.51.100.1", 7070)
CLIENT = Address("192.0.2.10", 51000)
ANNOUNCED = b"DATA 203.0.113.50 4000\r\n"


class AnnounceTests(SynchronousTestCase):
    """The filter rewrites DATA lines to the gateway's client-facing listener."""

    def setUp(self) -> None:
        self.session = FakeSession(
            clientAddress=CLIENT,
            internalAddress=GATEWAY,
            externalAddress="203.0.113.1",
            defaultUpstream=SERVER,
            options={},
        )
        self.sessionFilter = self.session.attachFilter(AnnounceFilter())
        self.session.succeedUpstream()

    def test_rewritten(self) -> None:
        """A DATA line comes out naming the granted internal address."""
        self.session.serverSends(b"HELLO\r\n" + ANNOUNCED)
        self.session.redirectCalls[0].grant(40000)
        self.assertEqual(self.session.toClient, b"HELLO\r\nDATA 198.51.100.1 40000\r\n")
        self.assertFalse(self.session.closed)

    def test_redirectArguments(self) -> None:
        """The redirect connects to the announced port on the session's server, for the
        client, on an allocated port of the client-facing IP."""
        self.session.serverSends(ANNOUNCED)
        [call] = self.session.redirectCalls
        self.assertEqual(list(call.connectAddresses), [SERVER.withPort(4000)])
        self.assertIsNone(call.internalAddress)
        self.assertIsNone(call.expectedPeer)
        self.assertIsNone(call.proxyExternalAddress)
        self.assertIs(call.transport, Transport.TCP)
        self.assertEqual(call.flags, RedirectFlags.TIMEOUT)
        self.assertEqual(call.protocolId, ANNOUNCE.protocolId)
        self.assertIs(call.sessionFilter, self.sessionFilter)
        [action] = call.grant(40000).actions
        self.assertEqual(action.expectedPeer, CLIENT.host)
        self.assertEqual(action.internalAddress, GATEWAY.withPort(40000))

    def test_heldUntilGranted(self) -> None:
        """Server bytes after a DATA line wait for the redirect; client bytes do not."""
        self.session.serverSends(ANNOUNCED + b"NEXT\r\nPART")
        self.session.clientSends(b"GO\r\n")
        self.assertEqual(self.session.toClient, b"")
        self.assertEqual(self.session.toServer, b"GO\r\n")
        self.session.redirectCalls[0].grant(40000)
        self.assertEqual(self.session.toClient, b"DATA 198.51.100.1 40000\r\nNEXT\r\n")
        self.session.serverSends(b"IAL\r\n")
        self.assertEqual(self.session.toClient, b"DATA 198.51.100.1 40000\r\nNEXT\r\nPARTIAL\r\n")

    def test_eofHeldUntilGranted(self) -> None:
        """The server's half-close follows the held lines, and ends an unterminated one."""
        self.session.serverSends(ANNOUNCED + b"BYE")
        self.session.serverEOF()
        self.assertFalse(self.session.toClientEOF)
        self.session.redirectCalls[0].grant(40000)
        self.assertEqual(self.session.toClient, b"DATA 198.51.100.1 40000\r\nBYE")
        self.assertTrue(self.session.toClientEOF)

    def test_secondAnnouncement(self) -> None:
        """Each DATA line gets its own redirect, in order."""
        self.session.serverSends(ANNOUNCED + b"DATA 203.0.113.50 4001\r\n")
        self.assertEqual(len(self.session.redirectCalls), 1)
        self.session.redirectCalls[0].grant(40000)
        self.assertEqual(len(self.session.redirectCalls), 2)
        self.session.redirectCalls[1].grant(40002)
        self.assertEqual(
            self.session.toClient,
            b"DATA 198.51.100.1 40000\r\nDATA 198.51.100.1 40002\r\n",
        )

    def test_grantedAtOnce(self) -> None:
        """A redirect whose Deferred has already fired keeps the order too."""
        session = GrantingSession(internalAddress=GATEWAY, defaultUpstream=SERVER)
        session.attachFilter(AnnounceFilter())
        session.succeedUpstream()
        session.serverSends(ANNOUNCED + b"NEXT\r\nDATA 203.0.113.50 4001\r\nBYE\r\n")
        self.assertEqual(
            session.toClient,
            b"DATA 198.51.100.1 40000\r\nNEXT\r\nDATA 198.51.100.1 40001\r\nBYE\r\n",
        )

    def test_foreignHostRefused(self) -> None:
        """A DATA line naming another host is replaced, never redirected."""
        self.session.serverSends(b"DATA 192.0.2.99 25\r\nNEXT\r\n")
        self.assertEqual(self.session.redirectCalls, [])
        self.assertEqual(self.session.toClient, REFUSED + b"NEXT\r\n")
        self.assertFalse(self.session.closed)

    def test_malformed(self) -> None:
        for line in [
            b"DATA\r\n",
            b"DATA 203.0.113.50\r\n",
            b"DATA 203.0.113.50 0\r\n",
            b"DATA 203.0.113.50 65536\r\n",
            b"DATA 203.0.113.050 4000\r\n",
            b"DATA example.com 4000\r\n",
            b"DATA  203.0.113.50 4000\r\n",
        ]:
            self.session.serverSends(line)
        self.assertEqual(self.session.redirectCalls, [])
        self.assertEqual(self.session.toClient, MALFORMED * 7)

    def test_overlongLine(self) -> None:
        """A server line that cannot fit closes the session, before its end arrives."""
        self.session.serverSends(b"X" * MAX_LINE_LENGTH)
        self.assertTrue(self.session.closed)
        self.assertEqual(
            self.session.closeReason,
            f"announce: server line longer than {MAX_LINE_LENGTH} bytes",
        )
        self.assertEqual(self.session.toClient, b"")

    def test_longestLine(self) -> None:
        """A line of exactly the limit, terminator included, passes."""
        line = b"X" * (MAX_LINE_LENGTH - 2) + b"\r\n"
        self.session.serverSends(line)
        self.assertEqual(self.session.toClient, line)
        self.session.serverSends(b"Y" * (MAX_LINE_LENGTH - 1) + b"\r\n")
        self.assertTrue(self.session.closed)
        self.assertEqual(self.session.toClient, line)

    def test_tooMuchHeld(self) -> None:
        """Bytes piling up behind a pending redirect are bounded too."""
        self.session.serverSends(ANNOUNCED)
        self.session.serverSends(b"X\r\n" * (MAX_HELD_BYTES // 3 + 1))
        self.assertTrue(self.session.closed)

    def test_redirectFails(self) -> None:
        """A failed redirect turns the line into an error; the session goes on."""
        self.session.serverSends(ANNOUNCED + b"NEXT\r\n")
        self.session.redirectCalls[0].fail(PortRangeExhausted("no free port on 198.51.100.1"))
        self.assertEqual(self.session.toClient, UNAVAILABLE + b"NEXT\r\n")
        self.assertFalse(self.session.closed)
        self.session.serverSends(ANNOUNCED)
        self.session.redirectCalls[1].grant(40000)
        self.assertEqual(
            self.session.toClient, UNAVAILABLE + b"NEXT\r\nDATA 198.51.100.1 40000\r\n"
        )

    def test_closedWhileWaiting(self) -> None:
        """Closing with a redirect pending writes nothing more and logs no error."""
        self.session.serverSends(ANNOUNCED + b"NEXT\r\n")
        self.session.close("client left")
        self.assertEqual(self.session.toClient, b"")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_byteBoundaries(self) -> None:
        """Any split of the server's bytes gives the same output and redirects."""
        script = (
            b"HELLO\r\n" + ANNOUNCED + b"NEXT\r\nDATA 192.0.2.99 1\r\nDATA 203.0.113.50 4001\r\nBYE"
        )
        expected = run([script])
        self.assertEqual(
            expected,
            (
                b"HELLO\r\nDATA 198.51.100.1 40000\r\nNEXT\r\n"
                + REFUSED
                + b"DATA 198.51.100.1 40001\r\nBYE",
                [4000, 4001],
            ),
        )
        self.assertEqual(run([bytes([byte]) for byte in script]), expected)
        for cut in range(1, len(script)):
            for second in range(cut + 1, len(script)):
                chunks = [script[:cut], script[cut:second], script[second:]]
                self.assertEqual(run(chunks), expected, chunks)


class GrantingSession(FakeSession):
    """A FakeSession whose redirects are granted before the filter gets the Deferred."""

    def redirectConnections(
        self,
        connectAddresses: Sequence[Address],
        internalAddress: Address | None = None,
        proxyExternalAddress: str | None = None,
        transport: Transport = Transport.TCP,
        flags: RedirectFlags = RedirectFlags.TIMEOUT,
        protocolId: uuid.UUID | None = None,
        sessionFilter: ISessionFilter | None = None,
        context: object = None,
        expectedPeer: str | None = None,
    ) -> Deferred[Redirection]:
        deferred = super().redirectConnections(
            connectAddresses,
            internalAddress,
            proxyExternalAddress,
            transport,
            flags,
            protocolId,
            sessionFilter,
            context,
            expectedPeer,
        )
        self.redirectCalls[-1].grant(40000 + len(self.actions))
        return deferred


def run(chunks: list[bytes]) -> tuple[bytes, list[int]]:
    """Feed the server's chunks, granting each redirect when it is asked for, then EOF;
    return what the client got and the ports redirected to."""
    session = FakeSession(internalAddress=GATEWAY, defaultUpstream=SERVER)
    session.attachFilter(AnnounceFilter())
    session.succeedUpstream()

    def grantPending() -> None:
        for call in session.redirectCalls:
            if call.pending:
                call.grant(40000 + len(session.actions))

    for chunk in chunks:
        session.serverSends(chunk)
        grantPending()
    session.serverEOF()
    grantPending()
    assert session.toClientEOF and not session.closed
    ports = [call.connectAddresses[0].port for call in session.redirectCalls]
    return session.toClient, ports


class FilterTests(SynchronousTestCase):
    """The IFilter object and its plugin."""

    def test_provides(self) -> None:
        announce = AnnounceFilter()
        self.assertTrue(verifyObject(IFilter, announce))
        self.assertTrue(IPlugin.providedBy(announce))
        self.assertEqual(announce.name, "announce")
        self.assertEqual(list(announce.protocols), [ANNOUNCE])
        options = announce.commandLineOptions()
        assert options is not None
        options.parseOptions(["--listen", "tcp:7070", "--upstream", "192.0.2.1:7070"])
        self.assertEqual(
            options.listenerConfig(),
            {"filter": "announce", "listen": "tcp:7070", "upstream": "192.0.2.1:7070"},
        )
        self.assertRaises(usage.UsageError, announce.commandLineOptions().parseOptions, [])
        self.assertTrue(verifyObject(ISessionFilter, announce.attachToSession(FakeSession())))

    def test_parseOptions(self) -> None:
        """No options of its own; an upstream is needed; errors start with the key."""
        upstream = Address("192.0.2.1", 7000)
        self.assertIsNone(AnnounceFilter().parseOptions({}, upstream))
        error = self.assertRaises(ConfigError, AnnounceFilter().parseOptions, {"x": 1}, upstream)
        self.assertTrue(str(error).startswith("x: "), str(error))
        error = self.assertRaises(ConfigError, AnnounceFilter().parseOptions, {}, None)
        self.assertTrue(str(error).startswith("upstream: "), str(error))

    def test_plugin(self) -> None:
        """The plugin module exposes a filter under twisted.plugins."""
        module = importlib.import_module("twisted.plugins.announce_plugin")
        self.assertTrue(IFilter.providedBy(module.announce))
        self.assertTrue(IPlugin.providedBy(module.announce))

    def test_noUpstream(self) -> None:
        """Without an upstream to connect to, the session ends at once."""
        session = FakeSession(defaultUpstream=None)
        session.attachFilter(AnnounceFilter())
        self.assertTrue(session.closed)
        self.assertEqual(session.closeReason, "announce: no upstream configured")

    def test_upstreamFails(self) -> None:
        session = FakeSession()
        session.attachFilter(AnnounceFilter())
        session.failUpstream()
        self.assertTrue(session.closed)
        closeReason = session.closeReason or ""
        self.assertTrue(closeReason.startswith("announce: upstream unreachable"), closeReason)
