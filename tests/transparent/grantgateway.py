"""A transparent gateway whose filter grants one allowFutureConnect per session (run
inside the gateway namespace by test_netns_future.py).

    python -m tests.transparent.grantgateway LISTEN_PORT OTHER_PORT EXTERNAL4

Each session forwards its primary connection to its original destination, after
letting the client's next connection (any source port) to the same server's
OTHER_PORT through: once the client's first byte is echoed, the permission exists.
Logs to stdout; SIGTERM stops it the way twistd does (the service stops first).
"""

from __future__ import annotations

import sys

from twisted.internet import reactor
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.python.failure import Failure
from zope.interface import implementer

from fwxtwisted.address import Address
from fwxtwisted.app.build import buildService
from fwxtwisted.app.config import parseConfig
from fwxtwisted.filters.forwarding import ForwardingSessionFilter
from fwxtwisted.interfaces import (
    IFilter,
    ISession,
    ISessionFilter,
    ITransparentFilter,
    ProtocolDefinition,
    RedirectFlags,
)
from fwxtwisted.logs import Logger

log = Logger()
OTHER_PORT = 0


class GrantingSessionFilter(ForwardingSessionFilter):
    def sessionStarted(self) -> None:
        session = self.session
        assert session.defaultUpstream is not None
        granting = session.allowFutureConnect(
            Address(session.clientAddress.host, 0),
            session.defaultUpstream.withPort(OTHER_PORT),
            flags=RedirectFlags.TIMEOUT,
            context="grant",
        )

        def granted(action: object) -> None:
            log.info("granted {action}", action=repr(action))
            super(GrantingSessionFilter, self).sessionStarted()

        def failed(failure: Failure) -> None:
            session.close(failure.getErrorMessage())

        granting.addCallbacks(granted, failed)

    def firewallEvent(self, notification: object) -> None:
        event = getattr(notification, "event", None)
        log.info("event {event}", event=getattr(event, "name", event))


@implementer(IFilter, ITransparentFilter)
class GrantingFilter:
    name = "grant"
    description = "test filter: grants one future connect per session"
    protocols = (ProtocolDefinition(__import__("uuid").uuid4(), "grant"),)

    def parseOptions(self, options: object, upstream: object) -> None:
        return None

    def parseTransparentOptions(self, options: object) -> None:
        return None

    def commandLineOptions(self) -> None:
        return None

    def attachToSession(self, session: ISession) -> ISessionFilter:
        return GrantingSessionFilter(session)


def main(argv: list[str]) -> None:
    global OTHER_PORT
    listen, OTHER_PORT, external = int(argv[0]), int(argv[1]), argv[2]
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
    config = parseConfig(
        {
            "external_addresses": [external],
            "listeners": [{"filter": "grant", "listen": f"tcp6:{listen}", "transparent": True}],
        },
        "grantgateway",
    )
    service = buildService(config, {"grant": GrantingFilter()}, reactor)  # type: ignore[dict-item]
    service.privilegedStartService()
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    log.info("stopped")


if __name__ == "__main__":
    main(sys.argv[1:])
