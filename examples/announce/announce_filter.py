"""The announce example filter: follows the data port a toy server announces in a DATA line."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Mapping

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from fwxtwisted.address import Address
from fwxtwisted.errors import ConfigError, SessionClosed
from fwxtwisted.filters.cli import GatewayCommandOptions
from fwxtwisted.interfaces import (
    Direction,
    FirewallEvent,
    FirewallNotification,
    IFilter,
    ISession,
    ISessionFilter,
    ProtocolDefinition,
    RedirectFlags,
    Redirection,
    Transport,
)
from fwxtwisted.relay.linefilter import LineDataFilter

ANNOUNCE = ProtocolDefinition(
    protocolId=uuid.UUID("71ad2253-b0a1-4828-abdd-70ca3834152a"),
    name="announce",
    transport=Transport.TCP,
    defaultPort=7070,
)

#: The longest server line accepted, terminator included.
MAX_LINE_LENGTH = 512
#: How many server bytes may wait behind a redirect before the session is dropped: the
#: data channel has no flow control to push back on the server with.
MAX_HELD_BYTES = 64 * 1024

REFUSED = b"ERROR refused\r\n"
MALFORMED = b"ERROR malformed\r\n"
UNAVAILABLE = b"ERROR unavailable\r\n"

_S2C = Direction.SERVER_TO_CLIENT

log = Logger()


def parseAnnouncement(body: bytes) -> Address | None:
    """The address of a C{DATA <ipv4> <port>} line body (terminator stripped), or None
    when it is malformed."""
    words = body.split(b" ")
    if len(words) != 3:
        return None
    try:
        host = str(ipaddress.IPv4Address(words[1].decode("ascii")))
        portText = words[2].decode("ascii")
    except (UnicodeDecodeError, ValueError):
        return None
    if not portText.isdigit() or not 0 < int(portText) < 65536:
        return None
    return Address(host, int(portText))


class AnnounceDataFilter(LineDataFilter):
    """Rewrites the server's DATA lines on the primary connection.

    Client bytes pass unchanged.  L{LineDataFilter} cuts the server's bytes into
    lines, holds everything after a DATA line until its redirect is answered (so the
    client sees the server's bytes in order) and bounds both; this class only says
    what each line becomes.
    """

    directions = (_S2C,)
    maxLineLength = MAX_LINE_LENGTH
    maxHeldBytes = MAX_HELD_BYTES
    logPrefix = "announce"

    def __init__(self, session: ISession, sessionFilter: ISessionFilter) -> None:
        super().__init__()
        self.session = session
        self.sessionFilter = sessionFilter

    def lineReceived(self, direction: Direction, line: bytes) -> bytes | Deferred[bytes | None]:
        """A DATA line becomes the gateway's listener once granted; others pass."""
        body = line.removesuffix(b"\n").removesuffix(b"\r")
        if body.split(b" ", 1)[0] != b"DATA":
            return line
        announced = parseAnnouncement(body)
        if announced is None:
            log.warn("announce: malformed DATA line {line!r}", line=line)
            return MALFORMED
        server = self.session.serverAddress
        if server is None or announced.host != server.host:
            # Relaying to another host would make the gateway a bounce vector.
            log.warn(
                "announce: refused DATA to {announced}, server is {server}",
                announced=announced,
                server=server,
            )
            return REFUSED
        granted = self.session.redirectConnections(
            [announced],
            transport=Transport.TCP,
            flags=RedirectFlags.TIMEOUT,
            protocolId=ANNOUNCE.protocolId,
            sessionFilter=self.sessionFilter,
            context=announced,
        )
        return granted.addCallback(self._rewritten)

    def lineFailed(self, direction: Direction, failure: Failure) -> bytes | None:
        """A refused redirect (no free port, ...) becomes an error line."""
        if failure.check(SessionClosed, CancelledError):
            return None
        log.warn("announce: redirect refused: {reason}", reason=failure.getErrorMessage())
        return UNAVAILABLE

    @staticmethod
    def _rewritten(redirection: Redirection) -> bytes:
        internal = redirection.internalAddress
        return f"DATA {internal.host} {internal.port}\r\n".encode("ascii")


@implementer(ISessionFilter)
class AnnounceSessionFilter:
    """The per-session half: puts an L{AnnounceDataFilter} on the primary connection
    and connects upstream."""

    def __init__(self, session: ISession) -> None:
        self.session = session

    def sessionStarted(self) -> None:
        """Attach the data filter and connect to the configured upstream."""
        self.session.attachDataFilter(AnnounceDataFilter(self.session, self))
        try:
            connecting = self.session.connectUpstream()
        except ValueError:
            self.session.close("announce: no upstream configured")
            return
        connecting.addErrback(self._upstreamFailed)

    def _upstreamFailed(self, failure: Failure) -> None:
        if not isinstance(failure.value, SessionClosed):
            self.session.close(f"announce: upstream unreachable: {failure.getErrorMessage()}")

    def firewallEvent(self, notification: FirewallNotification) -> None:
        """Log what happens to the data connections."""
        if notification.event is FirewallEvent.REFUSED_CONNECTION:
            log.warn(
                "announce: refused data connection from {peer}: {reason}",
                peer=notification.clientAddress,
                reason=notification.reason,
            )
        else:
            log.debug(
                "announce: {event} for {announced}",
                event=notification.event.value,
                announced=notification.context,
            )

    def detach(self) -> None:
        """Nothing to release: the session cancelled every permission."""


class AnnounceCommandOptions(GatewayCommandOptions):
    """twistd fwx announce --listen ENDPOINT --upstream HOST:PORT [gateway options]"""

    filterName = "announce"

    def postOptions(self) -> None:
        super().postOptions()
        if not self["upstream"]:
            raise usage.UsageError("--upstream HOST:PORT is required")


@implementer(IPlugin, IFilter)
class AnnounceFilter:
    """The announce filter; provides IPlugin too, so twisted.plugin can find it."""

    name = "announce"
    description = "Toy protocol: relays the TCP data port a server announces in DATA lines."
    protocols = (ANNOUNCE,)

    def parseOptions(self, options: Mapping[str, object], upstream: Address | None) -> object:
        """The filter has no options of its own, and needs an upstream.

        @raise ConfigError: its message starts with the key at fault, as the gateway's
            own (the configuration loader prefixes the listener).
        """
        for key in options:
            raise ConfigError(f"{key}: not an option of the announce filter")
        if upstream is None:
            raise ConfigError("upstream: the announce filter needs one (the server)")
        return None

    def commandLineOptions(self) -> usage.Options | None:
        """C{twistd fwx announce --listen ENDPOINT --upstream HOST:PORT}."""
        return AnnounceCommandOptions()

    def attachToSession(self, session: ISession) -> ISessionFilter:
        """A fresh session filter for each primary connection."""
        return AnnounceSessionFilter(session)
