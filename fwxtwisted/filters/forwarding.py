"""ForwardingSessionFilter: connect the primary to the listener's upstream and relay it."""

from __future__ import annotations

from twisted.python.failure import Failure
from zope.interface import implementer

from fwxtwisted.errors import SessionClosed
from fwxtwisted.interfaces import (
    FirewallNotification,
    IPrimaryEventsOptional,
    ISession,
    ISessionFilter,
)


@implementer(ISessionFilter, IPrimaryEventsOptional)
class ForwardingSessionFilter:
    """A session filter that only forwards: the base for filters that add to it."""

    def __init__(self, session: ISession) -> None:
        self.session = session

    @property
    def wantsFirewallEvents(self) -> bool:
        """False unless a subclass overrides L{firewallEvent}: the session then builds
        no notification for this filter's primary connection (a plain forward's
        connect, leg and close events would go nowhere)."""
        return type(self).firewallEvent is not ForwardingSessionFilter.firewallEvent

    def sessionStarted(self) -> None:
        self.session.connectUpstream().addErrback(self.upstreamFailed)

    def upstreamFailed(self, failure: Failure) -> None:
        """The upstream could not be reached: end the session (the reason is logged)."""
        if not failure.check(SessionClosed):
            self.session.close(failure.getErrorMessage())

    def firewallEvent(self, notification: FirewallNotification) -> None:
        pass

    def detach(self) -> None:
        pass
