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
from fwxtwisted.relay.datafilter import PassThroughDataFilter

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


class AnnounceDataFilter(PassThroughDataFilter):
    """Rewrites the server's DATA lines on the primary connection.

    Client bytes pass unchanged.  Server bytes are cut into lines; a DATA line is
    replaced once its redirect is granted, and everything after it waits until then so
    the client sees the server's bytes in order.
    """

    def __init__(self, session: ISession, sessionFilter: ISessionFilter) -> None:
        self.session = session
        self.sessionFilter = sessionFilter
        self._buffer = b""
        self._waiting: Deferred[Redirection] | None = None
        self._serverEOF = False
        self._pumping = False
        # No more server bytes to handle: detached, dropped, or the server EOF passed on.
        self._done = False

    def dataReceived(self, direction: Direction, data: bytes) -> None:
        """Pass client bytes on; parse server bytes."""
        if direction is not _S2C:
            self.write(direction, data)
            return
        if self._done:
            return
        self._buffer += data
        if self._waiting is not None and len(self._buffer) > MAX_HELD_BYTES:
            self._drop(f"announce: more than {MAX_HELD_BYTES} server bytes behind a redirect")
            return
        self._pump()

    def eofReceived(self, direction: Direction) -> None:
        """Pass a client half-close on; a server one once every held line is out."""
        if direction is not _S2C:
            self.writeEOF(direction)
            return
        self._serverEOF = True
        self._pump()

    def detached(self) -> None:
        """Stop, and withdraw a redirect still being set up."""
        self._done = True
        self._buffer = b""
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.cancel()
        super().detached()

    def _pump(self) -> None:
        # A redirect may be granted synchronously, from inside _handleLine: the loop
        # below then carries on, rather than recursing one level per DATA line.
        if self._pumping:
            return
        self._pumping = True
        try:
            while self._waiting is None and not self._done:
                end = self._buffer.find(b"\n")
                if end < 0:
                    # Even its terminator would not fit: no need to wait for the rest.
                    if len(self._buffer) >= MAX_LINE_LENGTH:
                        self._dropLongLine()
                        break
                    # At EOF an unterminated last line is still a line.
                    if not (self._serverEOF and self._buffer):
                        break
                cut = end + 1 if end >= 0 else len(self._buffer)
                line, self._buffer = self._buffer[:cut], self._buffer[cut:]
                if len(line) > MAX_LINE_LENGTH:
                    self._dropLongLine()
                    break
                self._handleLine(line)
            if self._serverEOF and self._waiting is None and not self._done:
                self._done = True
                self.writeEOF(_S2C)
        finally:
            self._pumping = False

    def _handleLine(self, line: bytes) -> None:
        body = line.removesuffix(b"\n").removesuffix(b"\r")
        if body.split(b" ", 1)[0] != b"DATA":
            self.write(_S2C, line)
            return
        announced = parseAnnouncement(body)
        if announced is None:
            log.warn("announce: malformed DATA line {line!r}", line=line)
            self.write(_S2C, MALFORMED)
            return
        server = self.session.serverAddress
        if server is None or announced.host != server.host:
            # Relaying to another host would make the gateway a bounce vector.
            log.warn(
                "announce: refused DATA to {announced}, server is {server}",
                announced=announced,
                server=server,
            )
            self.write(_S2C, REFUSED)
            return
        waiting = self.session.redirectConnections(
            [announced],
            transport=Transport.TCP,
            flags=RedirectFlags.TIMEOUT,
            protocolId=ANNOUNCE.protocolId,
            sessionFilter=self.sessionFilter,
            context=announced,
        )
        self._waiting = waiting
        waiting.addCallbacks(self._granted, self._notGranted)

    def _granted(self, redirection: Redirection) -> None:
        self._waiting = None
        if self._done:
            return
        internal = redirection.internalAddress
        self.write(_S2C, f"DATA {internal.host} {internal.port}\r\n".encode("ascii"))
        self._pump()

    def _notGranted(self, failure: Failure) -> None:
        self._waiting = None
        if self._done or isinstance(failure.value, SessionClosed | CancelledError):
            return
        log.warn("announce: redirect refused: {reason}", reason=failure.getErrorMessage())
        self.write(_S2C, UNAVAILABLE)
        self._pump()

    def _dropLongLine(self) -> None:
        self._drop(f"announce: server line longer than {MAX_LINE_LENGTH} bytes")

    def _drop(self, reason: str) -> None:
        self._done = True
        self._buffer = b""
        self.session.close(reason)


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


@implementer(IPlugin, IFilter)
class AnnounceFilter:
    """The announce filter; provides IPlugin too, so twisted.plugin can find it."""

    name = "announce"
    description = "Toy protocol: relays the TCP data port a server announces in DATA lines."
    protocols = (ANNOUNCE,)

    def parseOptions(self, options: Mapping[str, object], upstream: Address | None) -> object:
        """Accept any table of options; the filter uses none."""
        if not isinstance(options, Mapping):
            raise ConfigError(f"announce: options must be a table, not {type(options).__name__}")
        for key in options:
            if not isinstance(key, str):
                raise ConfigError(f"announce: option name {key!r} is not a string")
        return options

    def commandLineOptions(self) -> usage.Options | None:
        """No C{twistd fwx announce} shortcut."""
        return None

    def attachToSession(self, session: ISession) -> ISessionFilter:
        """A fresh session filter for each primary connection."""
        return AnnounceSessionFilter(session)
