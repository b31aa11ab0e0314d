"""Starting and stopping the gateway's kernel UDP path (settings.kernelUDP)."""

from __future__ import annotations

from fwxtwisted.errors import FWXError
from fwxtwisted.logs import Logger
from fwxtwisted.net.conntrack import ConntrackError
from fwxtwisted.net.kernelnat import DEFAULT_TABLE, KernelUDPTable
from fwxtwisted.net.nft import NftError, NftRunner
from fwxtwisted.permissions.gateway import Gateway
from fwxtwisted.permissions.kerneludp import KernelUDP

log = Logger()


class KernelPathError(FWXError):
    """kernel_udp is on and its table cannot be made."""


def tableName(sessionPrefix: str) -> str:
    """The gateway's own table, or a worker's (each process keeps its own flows)."""
    if sessionPrefix == "s":
        return DEFAULT_TABLE
    return f"{DEFAULT_TABLE}_{sessionPrefix.rstrip('s')}"


def startKernelUDP(gateway: Gateway) -> None:
    """Make the kernel UDP path's table when kernel_udp is on.

    @raise KernelPathError: it was asked for and cannot be had (no nft, no right to
        use it): the operator asked for it, so the gateway does not start without it.
    """
    if gateway.kernelUDP is not None or not gateway.settings.kernelUDP:
        return
    registry = KernelUDP(
        gateway.reactor,
        KernelUDPTable(tableName(gateway.sessionPrefix)),
        NftRunner(gateway.reactor),
        clock=gateway.clock,
    )
    try:
        registry.start()
    except (NftError, ConntrackError, OSError) as e:
        raise KernelPathError(
            f"kernel_udp: cannot set up the kernel UDP path ({e}); it needs nft and "
            "CAP_NET_ADMIN (run as root), or turn kernel_udp off"
        ) from None
    gateway.kernelUDP = registry


def stopKernelUDP(gateway: Gateway) -> None:
    """Delete the table and every flow's conntrack entries."""
    registry, gateway.kernelUDP = gateway.kernelUDP, None
    if registry is None:
        return
    try:
        registry.stop()
    except NftError as e:
        log.warn("kernel UDP path: cannot delete the nftables table: {error}", error=str(e))
