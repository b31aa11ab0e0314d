"""FirewallService: listens for primary connections and gives each a Session and a filter."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime
from twisted.internet.protocol import ServerFactory
from twisted.python.failure import Failure

from fwxtwisted.app import kernelpath, transparent
from fwxtwisted.app.primary import BoundListener, PrimaryFactory
from fwxtwisted.errors import FWXError
from fwxtwisted.logs import Logger, summaries
from fwxtwisted.net.connect import tuneListener
from fwxtwisted.permissions.gateway import Gateway
from fwxtwisted.permissions.session import Session
from fwxtwisted.settings import GatewaySettings

log = Logger()

#: The listen backlog of a primary listener whose endpoint names none.  Twisted's 50
#: leaves clients without a greeting when a few hundred connect at once; the kernel
#: caps it at net.core.somaxconn.
DEFAULT_BACKLOG = 1024


def withBacklog(description: str) -> str:
    """A TCP or TLS server endpoint description with L{DEFAULT_BACKLOG} unless it
    names a backlog; other endpoint types unchanged."""
    kind = description.split(":", 1)[0]
    if kind in ("tcp", "tcp6", "ssl") and "backlog=" not in description:
        return f"{description}:backlog={DEFAULT_BACKLOG}"
    return description


#: Opens one primary listener: (index in the configuration, the listener, its factory).
ListenFunction = Callable[[int, "BoundListener", ServerFactory], "Deferred[IListeningPort]"]


class ListenError(FWXError):
    """A primary listener could not be opened."""


class FirewallService(Service):
    """Opens every listener in L{privilegedStartService} (so a low port can be bound
    before twistd drops privileges) and closes every session at stop."""

    def __init__(
        self,
        gateway: Gateway,
        listeners: Sequence[BoundListener],
        listen: ListenFunction | None = None,
    ) -> None:
        """
        @param listen: opens each listener; by default from its endpoint description
            (a worker process adopts the sockets its parent opened instead).
        """
        self.gateway = gateway
        self._listen = listen if listen is not None else self._listenOnEndpoint
        self.listeners = tuple(listeners)
        self.factories = [PrimaryFactory(self, listener) for listener in self.listeners]
        self.ports: list[IListeningPort] = []
        self._opened = False
        #: True once stopService began: new sessions are refused.
        self.stopping = False
        self._holdingSummaries = False
        #: The shutdown grace's timer while sessions drain.
        self._graceTimer: IDelayedCall | None = None
        #: Set by endGrace: the drain gives running sessions no time.
        self._graceEnded = False
        #: Factories of listeners a reload closed, until their last session ends.
        self._retired: list[PrimaryFactory] = []
        self._reloading = False

    def privilegedStartService(self) -> None:
        self._openListeners()
        super().privilegedStartService()

    def startService(self) -> None:
        self._openListeners()
        super().startService()
        reactor = self.gateway.reactor
        if IReactorTime.providedBy(reactor) and not self._holdingSummaries:
            # Each turn's session lines are published together (see logs.py).
            self._holdingSummaries = True
            summaries.start(reactor)

    @property
    def sessions(self) -> list[Session]:
        """Every live session of every listener."""
        return [s for factory in self.factories + self._retired for s in factory.sessions]

    def _openListeners(self) -> None:
        if self._opened:
            return
        self._opened = True
        kernelpath.startKernelUDP(self.gateway)
        for index, (factory, listener) in enumerate(
            zip(self.factories, self.listeners, strict=True)
        ):
            failures: list[Failure] = []
            d = self._listen(index, listener, factory)
            d.addCallbacks(self._listening, failures.append, callbackArgs=(factory,))
            if failures:
                self._closePorts()
                raise ListenError(
                    f"cannot listen on {listener.config.listen!r} "
                    f"(listener {listener.config.name}): {failures[0].getErrorMessage()}"
                )
            if listener.config.transparent:
                transparent.startFutureConnects(
                    self.gateway, [bound.config for bound in self.listeners]
                )
            log.info(
                "listener {name}: {filter} on {listen}",
                name=listener.config.name,
                filter=listener.config.filter,
                listen=listener.config.listen,
            )

    def _listenOnEndpoint(
        self, index: int, listener: BoundListener, factory: ServerFactory
    ) -> Deferred[IListeningPort]:
        if listener.config.transparent:
            description = withBacklog(listener.config.listen)
            return transparent.listenOn(self.gateway.reactor, description, factory)
        endpoint = serverFromString(self.gateway.reactor, withBacklog(listener.config.listen))
        listening: Deferred[IListeningPort] = endpoint.listen(factory)
        return listening

    def _listening(self, port: IListeningPort, factory: PrimaryFactory) -> None:
        self.ports.append(port)
        factory.acceptedSocketsTuned = tuneListener(port)

    def _closePorts(self) -> list[Deferred[Any]]:
        stopping = [maybeDeferred(port.stopListening) for port in self.ports]
        self.ports = []
        return stopping

    def stopService(self) -> Deferred[Any]:
        """Stop accepting, let running sessions finish within the shutdown grace, then
        close the rest (their filters are told first, so FTP clients get a 421)."""
        super().stopService()
        self.stopping = True
        self._opened = False
        # Sessions are told once the listening sockets are closed (Twisted closes them
        # a reactor turn later): a client told 421 that reconnects at once is refused,
        # not queued on a listener about to reset it.
        stopping: Deferred[Any] = DeferredList(self._closePorts())
        stopping.addCallback(lambda _: self._drain())
        stopping.addBoth(self._stopHoldingSummaries)
        stopping.addBoth(self._stopFutureConnects)
        return stopping

    def _stopFutureConnects(self, result: object) -> object:
        transparent.stopFutureConnects(self.gateway)
        kernelpath.stopKernelUDP(self.gateway)
        return result

    def _stopHoldingSummaries(self, result: object) -> object:
        if self._holdingSummaries:
            self._holdingSummaries = False
            summaries.stop()
        return result

    def _drain(self) -> Deferred[Any] | None:
        """Tell every session the gateway stops; fires once all are closed."""
        sessions = self.sessions
        if not sessions:
            return None
        grace = 0.0 if self._graceEnded else self.gateway.settings.shutdownGrace
        log.info(
            "stopping: {count} session(s) get {grace:g} s to finish",
            count=len(sessions),
            grace=grace,
        )
        finished: Deferred[Any] = DeferredList([session.whenClosed() for session in sessions])
        for session in sessions:
            session.shutdown(final=False)
        timer = self._graceTimer = self.gateway.clock.callLater(grace, self._closeRemaining)
        finished.addBoth(lambda result: timer.cancel() if timer.active() else None)
        return finished

    def endGrace(self) -> None:
        """End the shutdown grace now (a second SIGTERM): close every session still
        running as the grace's end would.  Before the drain began, it gets none."""
        self._graceEnded = True
        timer = self._graceTimer
        if timer is not None and timer.active():
            timer.cancel()
            self._closeRemaining()

    def _closeRemaining(self) -> None:
        remaining = self.sessions
        if remaining:
            log.info("stopping: closing {count} session(s) still running", count=len(remaining))
        for session in remaining:
            session.shutdown(final=True)

    def reload(
        self, listeners: Sequence[BoundListener], settings: GatewaySettings
    ) -> Deferred[ReloadSummary]:
        """Run C{listeners} and C{settings} from now on, all or nothing.

        A listener whose endpoint (its C{listen} text) is already open keeps that
        port and its factory, which makes its new sessions for the new configuration:
        the port never closes.  Every other endpoint is opened first; if one fails,
        the ones just opened are closed and the Deferred fails with L{ListenError},
        nothing else changed.  Only then are the ports of endpoints no longer listed
        closed.  Running sessions go on to their end under the options they started
        with, wherever their listener went.

        @return: fires with what changed.
        """
        if self._reloading:
            return fail(ListenError("a reload is already in progress"))
        if self.stopping or not self._opened:
            return fail(ListenError("the gateway is not running"))
        self._reloading = True
        # By endpoint text, in order: two listeners may both say "tcp:0".
        current: dict[str, list[tuple[PrimaryFactory, IListeningPort]]] = {}
        for factory, listener, port in zip(self.factories, self.listeners, self.ports, strict=True):
            current.setdefault(listener.config.listen, []).append((factory, port))
        kept: dict[int, tuple[PrimaryFactory, IListeningPort]] = {}
        opening: list[Deferred[IListeningPort]] = []
        fresh: dict[int, PrimaryFactory] = {}
        for index, listener in enumerate(listeners):
            if current.get(listener.config.listen):
                kept[index] = current[listener.config.listen].pop(0)
            else:
                fresh[index] = PrimaryFactory(self, listener)
                # An endpoint description Twisted cannot parse raises: a failure too.
                opening.append(maybeDeferred(self._listen, index, listener, fresh[index]))
        removed = [pair for pairs in current.values() for pair in pairs]
        opened: Deferred[Any] = DeferredList(opening, consumeErrors=True)
        result: Deferred[ReloadSummary] = opened.addCallback(
            self._commitReload, listeners, settings, kept, fresh, removed
        )
        return result.addBoth(self._reloaded)

    def _reloaded(self, result: object) -> object:
        self._reloading = False
        return result

    def _commitReload(
        self,
        results: list[tuple[bool, Any]],
        listeners: Sequence[BoundListener],
        settings: GatewaySettings,
        kept: dict[int, tuple[PrimaryFactory, IListeningPort]],
        fresh: dict[int, PrimaryFactory],
        removed: list[tuple[PrimaryFactory, IListeningPort]],
    ) -> ReloadSummary:
        newPorts = {index: value for index, (ok, value) in zip(fresh, results, strict=True) if ok}
        failed = [
            (index, value) for index, (ok, value) in zip(fresh, results, strict=True) if not ok
        ]
        if failed or self.stopping:
            for port in newPorts.values():
                port.stopListening()
            if not failed:
                raise ListenError("the gateway is stopping")
            index, failure = failed[0]
            config = listeners[index].config
            raise ListenError(
                f"cannot listen on {config.listen!r} "
                f"(listener {config.name}): {failure.getErrorMessage()}"
            )
        summary = ReloadSummary()
        factories: list[PrimaryFactory] = []
        ports: list[IListeningPort] = []
        for index, listener in enumerate(listeners):
            if index in kept:
                factory, port = kept[index]
                if factory.listener.config != listener.config:
                    summary.changed.append(listener.config.name)
                factory.reconfigure(listener)
            else:
                factory, port = fresh[index], newPorts[index]
                factory.acceptedSocketsTuned = tuneListener(port)
                summary.added.append(listener.config.name)
            factories.append(factory)
            ports.append(port)
        # Listeners retired by an earlier reload and idle since are let go (a PROXY
        # header read just after the port closed may still start one session).
        self._retired = [factory for factory in self._retired if factory.sessions]
        for factory, port in removed:
            summary.removed.append(factory.listener.config.name)
            port.stopListening()
            self._retired.append(factory)
        self.listeners = tuple(listeners)
        self.factories = factories
        self.ports = ports
        self.gateway.reconfigure(settings)
        return summary

    def retire(self) -> Deferred[None]:
        """Stop accepting, and fire once every running session has ended by itself
        (a worker process replaced at a reload); no session is told anything."""
        self._opened = False
        for factory in self.factories:
            self._retired.append(factory)
        self.factories = []
        self.listeners = ()
        closing: Deferred[Any] = DeferredList(self._closePorts())
        return closing.addCallback(lambda _: self._whenIdle())

    def _whenIdle(self) -> Deferred[None] | None:
        sessions = self.sessions
        if not sessions:
            return None
        idle: Deferred[Any] = DeferredList([session.whenClosed() for session in sessions])
        # A PROXY header read meanwhile may have started one more.
        return idle.addCallback(lambda _: self._whenIdle())


@dataclass
class ReloadSummary:
    """The names of the listeners a reload added, changed (same port, new
    configuration) and removed (port closed)."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [
            f"{what} {', '.join(names)}"
            for what, names in (
                ("added", self.added),
                ("changed", self.changed),
                ("removed", self.removed),
            )
            if names
        ]
        return "; ".join(parts) or "no listener changed"
