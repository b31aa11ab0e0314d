"""The built-in tcp filter: a plain port forward through the gateway."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from twisted.python import usage
from zope.interface import implementer

from fwxtwisted.address import Address
from fwxtwisted.errors import ConfigError
from fwxtwisted.filters.cli import GatewayCommandOptions
from fwxtwisted.filters.forwarding import ForwardingSessionFilter
from fwxtwisted.interfaces import (
    IFilter,
    ISession,
    ISessionFilter,
    ITransparentFilter,
    ProtocolDefinition,
    Transport,
)

TCP_FORWARD = ProtocolDefinition(
    uuid.UUID("6f1d2a52-3c1e-4a8e-9a53-4c1f0b7e2d10"), "tcp-forward", Transport.TCP
)


class TCPCommandOptions(GatewayCommandOptions):
    """twistd fwx tcp --listen ENDPOINT (--upstream ENDPOINT | --transparent
    [--allow-destination CIDR[:PORTS]]...) [--external-address IP]..."""

    filterName = "tcp"

    def postOptions(self) -> None:
        super().postOptions()
        if self["transparent"] and self["upstream"]:
            raise usage.UsageError("give either --upstream or --transparent, not both")
        if not self["upstream"] and not self["transparent"]:
            raise usage.UsageError("--upstream ENDPOINT (or --transparent) is required")
        if self["allow-destination"] and not self["transparent"]:
            raise usage.UsageError("--allow-destination is for --transparent")


@implementer(IFilter, ITransparentFilter)
class TCPForwardFilter:
    """Forwards each primary connection to the listener's upstream (or, transparent, to
    the connection's original destination), unchanged."""

    name = "tcp"
    description = "Plain TCP port forward (no secondary channels)."
    protocols = (TCP_FORWARD,)

    def parseOptions(self, options: Mapping[str, object], upstream: Address | None) -> object:
        if options:
            raise ConfigError(f"{sorted(options)[0]}: not an option of the tcp filter")
        if upstream is None:
            raise ConfigError("upstream: the tcp filter needs one (where to forward)")
        return None

    def parseTransparentOptions(self, options: Mapping[str, object]) -> object:
        if options:
            raise ConfigError(f"{sorted(options)[0]}: not an option of the tcp filter")
        return None

    def commandLineOptions(self) -> usage.Options:
        return TCPCommandOptions()

    def attachToSession(self, session: ISession) -> ISessionFilter:
        if session.defaultUpstream is None:
            raise ConfigError("the tcp filter needs an upstream")
        return ForwardingSessionFilter(session)


tcpFilter = TCPForwardFilter()
