"""RTSPSessionFilter: reads one RTSP control connection and drives the gateway for it."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure
from zope.interface import implementer

from fwxtwisted.errors import SessionClosed
from fwxtwisted.filters.rtsp.conversation import PendingRequests, parseCSeq
from fwxtwisted.filters.rtsp.errors import RTSPProtocolError
from fwxtwisted.filters.rtsp.message import Event, Headers, InterleavedFrame, Request, Response
from fwxtwisted.filters.rtsp.options import DEFAULT_SESSION_TIMEOUT, RTSPOptions
from fwxtwisted.filters.rtsp.parser import MessageParser, Role
from fwxtwisted.filters.rtsp.replyorder import ResponseOrder, ResponseSlot
from fwxtwisted.filters.rtsp.report import SessionReport
from fwxtwisted.filters.rtsp.setups import Setups
from fwxtwisted.filters.rtsp.tracks import Track
from fwxtwisted.filters.rtsp.transport import parseSession
from fwxtwisted.filters.rtsp.urls import URLMap, rewriteRTPInfo, rewriteSDP
from fwxtwisted.interfaces import (
    Direction,
    FirewallEvent,
    FirewallNotification,
    IDataChannel,
    IDataFilter,
    ISession,
    ISessionFilter,
)
from fwxtwisted.logs import Logger

log = Logger()

#: Headers holding one URL the client must see as the gateway's.
_URL_HEADERS = ("Content-Base", "Content-Location", "Location")
#: Client events held while the server leg connects (each a whole message or frame).
MAX_HELD_EVENTS = 64


@implementer(ISessionFilter, IDataFilter)
class RTSPSessionFilter:
    """The RTSP filter for one session: a data filter on the control connection that
    rewrites URLs and SETUP transports and opens the media's ports through the session
    (the transports themselves are in L{Setups})."""

    def __init__(self, session: ISession, options: RTSPOptions) -> None:
        self.session = session
        self.options = options
        self._clientParser = MessageParser(
            Role.CLIENT, options.maxLineLength, maxBodyLength=options.maxBodyLength
        )
        self._serverParser = MessageParser(
            Role.SERVER, options.maxLineLength, maxBodyLength=options.maxBodyLength
        )
        self._requests: PendingRequests[tuple[ResponseSlot, Track | None]] = PendingRequests()
        self._responses = ResponseOrder(self._writeClient)
        self.setups = Setups(session, options, self, self._frameToClient, self._frameToServer)
        self.report = SessionReport(session)
        self._channel: IDataChannel | None = None
        self._urls: URLMap | None = None
        self._held: list[Event] | None = []
        self._timer: IDelayedCall | None = None
        self._serverTimeout: float | None = None
        self._lastActivity = -1
        self._closing = False
        #: The session timer's last look is waiting for the kernel's counters.
        self._recounting = self._touchedWhileRecounting = False

    # ISessionFilter

    def sessionStarted(self) -> None:
        self.session.attachDataFilter(self)
        # Asked now, while the client is connected: the client-facing pair is bound there.
        self.session.internalAddress  # noqa: B018
        self._arm()
        connecting: Deferred[Any] = self.session.connectUpstream()
        connecting.addCallbacks(self._upstreamReady, self._upstreamFailed)

    def firewallEvent(self, notification: FirewallNotification) -> None:
        if notification.event is FirewallEvent.GATEWAY_SHUTDOWN:
            if notification.reason != "draining":
                self._close("gateway stopping")

    def detach(self) -> None:
        self._closing = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.report.emitWhenSettled(self.setups)

    # IDataFilter

    def attached(self, channel: IDataChannel) -> None:
        self._channel = channel

    def dataReceived(self, direction: Direction, data: bytes) -> None:
        if self._closing:
            return
        if direction is Direction.CLIENT_TO_SERVER:
            self._feed(self._clientParser, data, self._clientEvent, "client")
        else:
            self._feed(self._serverParser, data, self._serverEvent, "server")

    def eofReceived(self, direction: Direction) -> None:
        if self._channel is not None:
            self._channel.writeEOF(direction)

    def detached(self) -> None:
        self._channel = None

    # Parsing.

    def _feed(self, parser: MessageParser, data: bytes, handle: Any, who: str) -> None:
        try:
            events = parser.feed(data)
        except RTSPProtocolError as error:
            for event in error.events:
                handle(event)
            self._protocolError(error, who)
            return
        for event in events:
            if self._closing:
                return
            handle(event)

    def _protocolError(self, error: RTSPProtocolError, who: str) -> None:
        log.warn(
            "{session}: {who} sent bad RTSP: {status} {reason}",
            session=self.session.sessionId,
            who=who,
            status=error.status,
            reason=error.reason,
        )
        # The client is told why (a server's fault is the gateway's 502 to it).
        status = error.status if who == "client" else 502
        self._writeClient(_errorResponse(status, None, f"{who}: {error.reason}"))
        self._close(f"bad RTSP from the {who}: {error.reason}")

    # Client to server.

    def _clientEvent(self, event: Event) -> None:
        self._touch()
        if self._held is not None:
            if len(self._held) >= MAX_HELD_EVENTS:
                self._close("client sent too much before the server was reached")
                return
            self._held.append(event)
            return
        if isinstance(event, InterleavedFrame):
            frame = self.setups.frameFromClient(event)
            if frame is not None:
                self._writeServer(frame.serialize())
            return
        if isinstance(event, Response):
            # The client's answer to a server's request: URLs in it are the client's.
            self._writeServer(event.serialize())
            return
        self._clientRequest(event)

    def _clientRequest(self, request: Request) -> None:
        if self._responses.full:
            self._close("client pipelined too many requests")
            return
        cseq = request.headers.get("CSeq")
        slot = self._responses.slot()
        try:
            self._learnPublicURL(request.uri)
            request.uri = self._toServer(request.uri)
            for name in ("Content-Base", "Content-Location"):
                value = request.headers.get(name)
                if value is not None:
                    request.headers.set(name, self._toServer(value))
            if request.body and _isSDP(request.headers):
                request.body = rewriteSDP(request.body, self._toServer)
            track = None
            if request.method == "SETUP":
                track = self.setups.request(request)
                if track is not None:
                    self.report.track(track)
            try:
                self._requests.add(request, (slot, track))
            except RTSPProtocolError:
                if track is not None:
                    self.setups.drop(track)
                raise
        except RTSPProtocolError as error:
            log.info(
                "{session}: {method} refused: {status} {reason}",
                session=self.session.sessionId,
                method=request.method,
                status=error.status,
                reason=error.reason,
            )
            slot.fill(_errorResponse(error.status, cseq, error.reason))
            return
        self.report.request(request)
        self._writeServer(request.serialize())

    # Server to client.

    def _serverEvent(self, event: Event) -> None:
        self._touch()
        if isinstance(event, InterleavedFrame):
            frame = self.setups.frameFromServer(event)
            if frame is not None:
                self._writeClient(frame.serialize())
            return
        if isinstance(event, Request):
            # ANNOUNCE, SET_PARAMETER... from the server: its URLs become the gateway's.
            event.uri = self._toClient(event.uri)
            self._writeClient(event.serialize())
            return
        self._serverResponse(event)

    def _serverResponse(self, response: Response) -> None:
        pending = self._requests.match(response)
        if pending is None or pending.context is None:
            log.info(
                "{session}: dropped a response with no request in flight (CSeq {cseq})",
                session=self.session.sessionId,
                cseq=response.headers.get("CSeq"),
            )
            return
        slot, track = pending.context
        self._rewriteResponse(response)
        waiting: Deferred[None] | None = None
        try:
            if track is not None:
                waiting = self.setups.response(track, response)
                self._learnTimeout(response)
            elif pending.method == "TEARDOWN" and 200 <= response.status < 300:
                self.setups.teardown(pending.request.uri)
        except RTSPProtocolError as error:
            log.warn(
                "{session}: SETUP response not relayed: {reason}",
                session=self.session.sessionId,
                reason=error.reason,
            )
            slot.fill(_errorResponse(error.status, str(pending.cseq), error.reason))
            return
        if waiting is None:
            slot.fill(response.serialize())
            return

        def failed(failure: Failure) -> None:
            if track is not None:
                self.setups.drop(track)
            if not failure.check(SessionClosed):
                log.warn(
                    "{session}: no ports for a track: {reason}",
                    session=self.session.sessionId,
                    reason=failure.getErrorMessage(),
                )
            slot.fill(_errorResponse(453, str(pending.cseq), "Not Enough Bandwidth (no ports)"))

        waiting.addCallbacks(lambda _: slot.fill(response.serialize()), failed)

    def _rewriteResponse(self, response: Response) -> None:
        for name in _URL_HEADERS:
            value = response.headers.get(name)
            if value is not None:
                response.headers.set(name, self._toClient(value))
        info = response.headers.get("RTP-Info")
        if info is not None:
            response.headers.set("RTP-Info", rewriteRTPInfo(info, self._toClient))
        if response.body and _isSDP(response.headers):
            response.body = rewriteSDP(response.body, self._toClient)

    # URLs.

    def _learnPublicURL(self, uri: str) -> None:
        if self._urls is not None:
            return
        server = self.session.serverAddress or self.session.defaultUpstream
        public = _authorityOf(uri)
        internal = self.session.internalAddress
        if public is None and internal is not None:
            public = (internal.host, internal.port)
        if server is None or public is None:
            return
        self._urls = URLMap(public[0], public[1], server.host, server.port)

    def _toServer(self, url: str) -> str:
        return self._urls.toServer(url) if self._urls is not None else url

    def _toClient(self, url: str) -> str:
        return self._urls.toClient(url) if self._urls is not None else url

    # Upstream.

    def _upstreamReady(self, _: object) -> None:
        held, self._held = self._held or [], None
        for event in held:
            if self._closing:
                return
            self._clientEvent(event)

    def _upstreamFailed(self, failure: Failure) -> None:
        self._held = None
        if failure.check(SessionClosed):
            return
        reason = failure.getErrorMessage()
        self._writeClient(_errorResponse(503, None, f"server unreachable: {reason}"))
        self._close(f"upstream unreachable: {reason}")

    # Lifetime.

    def _timeout(self) -> float:
        if self.options.sessionTimeout is not None:
            return self.options.sessionTimeout
        return self._serverTimeout or DEFAULT_SESSION_TIMEOUT

    def _learnTimeout(self, response: Response) -> None:
        value = response.headers.get("Session")
        if value is None:
            return
        try:
            _, timeout = parseSession(value)
        except RTSPProtocolError:
            return
        if timeout:
            self._serverTimeout = float(timeout)
            self._touch()

    def _arm(self) -> None:
        self._timer = self.session.clock.callLater(self._timeout(), self._expired)

    def _touch(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.reset(self._timeout())
        elif self._recounting:
            self._touchedWhileRecounting = True

    def _expired(self, recounted: bool = False) -> None:
        # RTCP keeps a playing session alive without any RTSP message.
        activity = self.report.mediaActivity(self.setups)
        recounting = None if recounted else self.report.recount(self.setups)
        if activity == self._lastActivity and recounting is not None:
            # The kernel carries media: its counters are read every few seconds, so
            # read them now before calling the session idle.
            self._recounting = True
            recounting.addCallback(self._recounted)
            return
        if activity != self._lastActivity:
            self._lastActivity = activity
            self._arm()
            return
        self._timer = None
        self._close(f"session timeout ({self._timeout():g} s without RTSP or RTCP)")

    def _recounted(self, _: object) -> None:
        self._recounting = False
        if self._closing:
            return
        if self._touchedWhileRecounting:  # an RTSP message came meanwhile
            self._touchedWhileRecounting = False
            self._arm()
            return
        self._expired(recounted=True)

    def _close(self, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        self.report.reason = reason
        self.setups.closeAll()
        self.session.close(reason)

    # Writing.

    def _writeClient(self, data: bytes) -> None:
        if self._channel is not None:
            self._channel.write(Direction.SERVER_TO_CLIENT, data)

    def _writeServer(self, data: bytes) -> None:
        if self._channel is not None:
            self._channel.write(Direction.CLIENT_TO_SERVER, data)

    # Frames made of datagrams (translation): written of the filter's own accord, with
    # no reading to pause behind them, so a peer that does not drain its connection
    # loses media (as over UDP) instead of making the gateway hold it.

    def _frameToClient(self, frame: InterleavedFrame) -> None:
        self._writeFrame(Direction.SERVER_TO_CLIENT, frame)

    def _frameToServer(self, frame: InterleavedFrame) -> None:
        self._writeFrame(Direction.CLIENT_TO_SERVER, frame)

    def _writeFrame(self, direction: Direction, frame: InterleavedFrame) -> None:
        if self._closing or self._channel is None:
            return
        if not self._channel.writable(direction):
            self.report.congestionDrops += 1
            return
        self._channel.write(direction, frame.serialize())


def _errorResponse(status: int, cseq: str | None, reason: str) -> bytes:
    headers = Headers()
    if cseq is not None and parseCSeq(cseq) is not None:
        headers.set("CSeq", cseq.strip())
    response = Response(status=status, headers=headers)
    # The reason phrase is the standard one; the gateway's own words go in a header a
    # person debugging can read, never into a field a player parses.
    response.headers.set("X-Gateway-Reason", _printable(reason))
    return response.serialize()


def _printable(text: str) -> str:
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:200]


def _isSDP(headers: Headers) -> bool:
    value = headers.get("Content-Type") or ""
    return value.split(";")[0].strip().lower() == "application/sdp"


def _authorityOf(uri: str) -> tuple[str, int] | None:
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.lower() not in ("rtsp", "rtspu", "rtsps"):
        return None
    authority = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    default = 322 if scheme.lower() == "rtsps" else 554
    if authority.startswith("["):
        host, _, port = authority[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = authority.partition(":")
    try:
        return host, int(port) if port else default
    except ValueError:
        return None
