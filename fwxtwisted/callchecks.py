"""Argument checks of ISession calls that the gateway's Session and the testing kit's
FakeSession share, so that both refuse the same calls in the same words."""

from __future__ import annotations

from collections.abc import Sequence

from fwxtwisted._values import RedirectFlags, Transport
from fwxtwisted.address import Address, isIPLiteral, normalizeHost


def datagramOptionsProblem(
    count: int,
    transport: Transport,
    flags: RedirectFlags,
    outboundCount: int | None,
    peerAddresses: Sequence[Address] | None,
) -> str | None:
    """Why C{redirectConnections}' C{outboundPorts} (of C{outboundCount} sockets) and
    C{peerAddresses} do not fit a redirection of C{count} permissions; None when they
    do, or are not given."""
    if outboundCount is None and peerAddresses is None:
        return None
    if transport is not Transport.UDP:
        return "outboundPorts and peerAddresses apply to UDP redirections only"
    if RedirectFlags.ALLOW_MULTIPLE in flags:
        return "outboundPorts and peerAddresses map one peer per port: not with ALLOW_MULTIPLE"
    if peerAddresses is not None and len(peerAddresses) != count:
        return f"{len(peerAddresses)} peer addresses for {count} connect addresses"
    if outboundCount is not None and outboundCount != count:
        return f"{outboundCount} outbound ports for {count} connect addresses"
    return None


def futureFlow(
    source: Address, destination: Address, transport: Transport
) -> tuple[Address, Address] | str:
    """The flow of C{allowFutureConnect} with its addresses normalized, or why it cannot
    be permitted."""
    if transport is not Transport.TCP:
        return "allowFutureConnect: TCP flows only (UDP is not done yet)"
    if not (isIPLiteral(source.host) and isIPLiteral(destination.host)):
        return "allowFutureConnect: source and destination are IP literals"
    source = Address(normalizeHost(source.host), source.port)
    destination = Address(normalizeHost(destination.host), destination.port)
    if source.isIPv6 != destination.isIPv6 or not destination.port:
        return f"allowFutureConnect: {source} -> {destination} cannot be"
    return source, destination
