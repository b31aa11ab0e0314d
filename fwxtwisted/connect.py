"""connectFrom: an outbound TCP connection bound to a chosen source IP."""

from __future__ import annotations

from typing import TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IAddress, IReactorTCP, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol

from fwxtwisted.address import Address, isIPLiteral

P = TypeVar("P", bound=Protocol)


def clientEndpoint(
    reactor: IReactorTCP, address: Address, bindHost: str | None, timeout: float
) -> IStreamClientEndpoint:
    """An endpoint to C{address} whose connections leave from C{bindHost} (any port).

    A source IP of the other family than the destination cannot be bound; the OS then
    picks the source, as it would with no external address at all.
    """
    sameFamily = bindHost is not None and (":" in bindHost) == address.isIPv6
    bind = (bindHost, 0) if bindHost is not None and sameFamily else None
    if not isIPLiteral(address.host):
        return HostnameEndpoint(reactor, address.host, address.port, timeout, bind)
    if address.isIPv6:
        return TCP6ClientEndpoint(reactor, address.host, address.port, timeout, bind)
    return TCP4ClientEndpoint(reactor, address.host, address.port, timeout, bind)


def connectFrom(
    reactor: IReactorTCP, address: Address, bindHost: str | None, protocol: P, timeout: float
) -> Deferred[P]:
    """Connect C{protocol} to C{address} from C{bindHost}; cancellable."""
    return clientEndpoint(reactor, address, bindHost, timeout).connect(  # type: ignore[return-value]
        _OneShot(protocol)
    )


class _OneShot(Factory):
    """Hands out one given protocol; quiet, as a gateway opens thousands of these."""

    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        return self._protocol
