"""PrimaryFactory: one listener's accepted connections, each made a Session (after its
PROXY header, or its original destination, when the listener wants one)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.protocol import Protocol, ServerFactory

from fwxtwisted.address import Address
from fwxtwisted.app import transparent
from fwxtwisted.app.config import ListenerConfig
from fwxtwisted.app.proxyheader import HEADER_TIMEOUT, ProxyHeaderReader
from fwxtwisted.interfaces import IConnectionRefuser, IFilter
from fwxtwisted.logs import Logger
from fwxtwisted.metrics import hooks
from fwxtwisted.net.origdst import Interception
from fwxtwisted.net.proxyprotocol import ProxyHeader
from fwxtwisted.permissions.gateway import Gateway
from fwxtwisted.permissions.session import Session

log = Logger("fwxtwisted.app.service")


class ListenerOwner(TypingProtocol):
    """What a listener's factory needs of the service that owns it."""

    @property
    def stopping(self) -> bool:
        """True once the service stops: new sessions are refused."""

    @property
    def gateway(self) -> Gateway:
        """The runtime every session shares."""


@dataclass(frozen=True)
class BoundListener:
    """A listener's configuration with its filter found and its options parsed."""

    config: ListenerConfig
    filter: IFilter
    options: object


class _Refusal(Protocol):
    def __init__(self, message: bytes) -> None:
        self._message = message

    def connectionMade(self) -> None:
        assert self.transport is not None
        if self._message:
            self.transport.write(self._message)
        self.transport.loseConnection()


class PrimaryFactory(ServerFactory):
    """Makes a Session for each accepted primary connection of one listener."""

    noisy = False

    def __init__(self, service: ListenerOwner, listener: BoundListener) -> None:
        self._service = service
        self._listener = listener
        self.sessions: set[Session] = set()
        self._perIP: dict[str, int] = {}
        #: Set once listening: accepted sockets inherit the primary leg's options.
        self.acceptedSocketsTuned = False
        #: Seconds a connection gets for its PROXY header (with proxy_protocol).
        self.proxyHeaderTimeout = HEADER_TIMEOUT

    def buildProtocol(self, addr: Any) -> Protocol | None:
        peer = Address.fromTwisted(addr)
        if self._listener.config.proxyProtocol:
            # Behind a balancer: the client is known once the header is read.
            reason = self._refusal(None)
            if reason is not None:
                return self._refuse(peer, reason)
            return ProxyHeaderReader(
                peer, self._headerRead, self._service.gateway.clock, self.proxyHeaderTimeout
            )
        return self._accepted(peer)

    def _headerRead(self, peer: Address, header: ProxyHeader) -> Protocol | None:
        """The PROXY header is valid: the session's client is the one it names (its
        real peer for LOCAL, a balancer's health check)."""
        client = peer if header.local or header.source is None else header.source
        log.debug(
            "{client} via {peer}: PROXY v{version}{local}",
            client=str(client),
            peer=str(peer),
            version=header.version,
            local=" LOCAL (health check)" if header.local else "",
        )
        return self._accepted(client)

    def _refuse(self, client: Address, reason: str) -> Protocol:
        log.warn("refused {client}: {reason}", client=str(client), reason=reason)
        refuser = IConnectionRefuser(self._listener.filter, None)
        return _Refusal(refuser.refusalMessage(reason) if refuser is not None else b"")

    def _accepted(self, client: Address) -> Protocol | None:
        """A client to serve (its PROXY header read, if its listener wants one)."""
        config = self._listener.config
        reason = self._refusal(client)
        if reason is not None:
            return self._refuse(client, reason)
        if config.transparent:
            # The upstream is the original destination, read once the socket exists.
            return Interception(client, self._transparentSession)
        return self._startSession(client, config.upstream)

    def _transparentSession(self, client: Address, destination: Address) -> Protocol | None:
        reason = transparent.refusal(destination, self._listener.config.allowDestinations)
        if reason is not None:
            log.warn(
                "refused {client} to {destination}: {reason}",
                client=str(client),
                destination=str(destination),
                reason=reason,
            )
            return None
        return self._startSession(client, destination)

    def _startSession(self, client: Address, upstream: Address | None) -> Protocol | None:
        config = self._listener.config
        session = Session(
            self._service.gateway,
            client,
            defaultUpstream=upstream,
            options=self._listener.options,
            onClosed=self._closed,
            listener=config.name,
            clientSocketTuned=self.acceptedSocketsTuned,
        )
        try:
            sessionFilter = self._listener.filter.attachToSession(session)
        except Exception:
            log.failure("filter {name} failed to attach", name=config.filter)
            hooks.observer.sessionRefused(config.name, config.filter, "filter_error")
            return None
        self.sessions.add(session)
        self._perIP[client.host] = self._perIP.get(client.host, 0) + 1
        hooks.observer.sessionOpened(session, config.name, config.filter)
        session.start(sessionFilter)
        log.debug(
            "{session}: {client} connected to listener {listener} ({filter})",
            session=session.sessionId,
            client=client,
            listener=config.name,
            filter=config.filter,
        )
        return session.clientLeg

    def _refusal(self, client: Address | None) -> str | None:
        """Why a session of C{client} is refused now (None: it is not); without a
        client (its PROXY header not read yet), the limits that do not depend on it."""
        config = self._listener.config
        if self._service.stopping:
            hooks.observer.sessionRefused(config.name, config.filter, "shutting_down")
            return "the gateway is shutting down"
        if config.maxSessions is not None and len(self.sessions) >= config.maxSessions:
            hooks.observer.sessionRefused(config.name, config.filter, "max_sessions")
            return f"too many sessions ({config.maxSessions}) on listener {config.name}"
        perIP = config.maxSessionsPerIP
        if client is not None and perIP is not None and self._perIP.get(client.host, 0) >= perIP:
            hooks.observer.sessionRefused(config.name, config.filter, "max_sessions_per_ip")
            return f"too many sessions ({perIP}) from {client.host}"
        return None

    @property
    def listener(self) -> BoundListener:
        """The listener this factory makes sessions for now."""
        return self._listener

    def reconfigure(self, listener: BoundListener) -> None:
        """Make new sessions for C{listener} (a reload that kept this factory's port):
        running sessions keep the options and filter they started with; the new
        limits count them."""
        self._listener = listener

    def _closed(self, session: Session) -> None:
        hooks.observer.sessionClosed(session)
        self.sessions.discard(session)
        host = session.clientAddress.host
        self._perIP[host] -= 1
        if not self._perIP[host]:
            del self._perIP[host]
