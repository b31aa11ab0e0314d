"""Transparent listeners: opening them, the check of each original destination, and
the gateway's allowFutureConnect table (started with the first transparent listener)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ServerFactory

from fwxtwisted.address import Address
from fwxtwisted.app.config import ListenerConfig
from fwxtwisted.logs import Logger
from fwxtwisted.net.destinations import Destination, allowedBy
from fwxtwisted.net.nft import FutureConnectTable, NftError, NftRunner
from fwxtwisted.net.origdst import isLocalAddress, listenTransparent, parseTCPServerEndpoint
from fwxtwisted.permissions.future import FutureConnects
from fwxtwisted.permissions.gateway import Gateway

log = Logger()


def refusal(destination: Address, allow: Sequence[Destination]) -> str | None:
    """Why a transparent connection to C{destination} may not go there, or None."""
    if isLocalAddress(destination.host):
        return "its destination is the gateway itself"
    if allow and not allowedBy(allow, destination):
        return "its destination is not in allow_destinations"
    return None


def listenOn(reactor: Any, description: str, factory: ServerFactory) -> Deferred[IListeningPort]:
    """A transparent listener (IP_TRANSPARENT before bind) for a tcp/tcp6 endpoint."""
    try:
        port, interface, backlog = parseTCPServerEndpoint(description)
        listening: IListeningPort = listenTransparent(reactor, port, factory, interface, backlog)
    except Exception as e:
        return fail(e)
    return succeed(listening)


def startFutureConnects(gateway: Gateway, listeners: Sequence[ListenerConfig]) -> None:
    """With a transparent listener, make the gateway's allowFutureConnect table
    (deleting what a previous run left); without nft or the right to use it the
    gateway runs without it, and says so."""
    if gateway.futureConnects is not None or not any(c.transparent for c in listeners):
        return
    registry = FutureConnects(gateway.reactor, FutureConnectTable(NftRunner(gateway.reactor)))
    try:
        registry.start()
    except (NftError, OSError) as e:
        log.warn("allowFutureConnect unavailable: {error}", error=str(e))
        return
    gateway.futureConnects = registry


def stopFutureConnects(gateway: Gateway) -> None:
    """Delete the gateway's table (every rule and element it made)."""
    registry, gateway.futureConnects = gateway.futureConnects, None
    if registry is None:
        return
    try:
        registry.stop()
    except NftError as e:
        log.warn("allowFutureConnect: cannot delete the nftables table: {error}", error=str(e))
