"""Starting and stopping the gateway's kernel UDP path (settings.kernelUDP)."""

from __future__ import annotations

import os
from pathlib import Path

from fwxtwisted.errors import FWXError
from fwxtwisted.logs import Logger
from fwxtwisted.net.conntrack import ConntrackError
from fwxtwisted.net.kernelnat import DEFAULT_TABLE, FAMILY, KernelUDPTable, tableOwners
from fwxtwisted.net.nft import NftError, NftRunner
from fwxtwisted.permissions.gateway import Gateway
from fwxtwisted.permissions.kerneludp import KernelUDP

log = Logger()


class KernelPathError(FWXError):
    """kernel_udp is on and its table cannot be made."""


def tableName(pid: int | None = None) -> str:
    """This process's table: every gateway process (a worker, another instance on the
    same host) keeps its own flows, and never touches another's."""
    return f"{DEFAULT_TABLE}_{os.getpid() if pid is None else pid}"


def isGatewayProcess(pid: int) -> bool:
    """Whether C{pid} is a running fwxtwisted gateway (twistd fwx, or a worker)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"fwx" in command


def removeStaleTables(runner: NftRunner) -> list[str]:
    """Delete the tables of gateway processes that are gone (killed without their
    stop): their NAT elements would otherwise take the flows of whoever gets their
    ports next.  @return: the names deleted.  @raise NftError."""
    listing = runner.outputNow(["-j", "list", "tables"])
    stale = [
        name
        for name, pid in tableOwners(listing).items()
        if pid != os.getpid() and not isGatewayProcess(pid)
    ]
    if stale:
        runner.runScriptNow("".join(f"delete table {FAMILY} {name}\n" for name in stale))
        log.info(
            "kernel UDP path: deleted the tables of stopped gateways: {names}",
            names=", ".join(stale),
        )
    return stale


def startKernelUDP(gateway: Gateway) -> None:
    """Make the kernel UDP path's table when kernel_udp is on.

    @raise KernelPathError: it was asked for and cannot be had (no nft, no right to
        use it): the operator asked for it, so the gateway does not start without it.
    """
    if gateway.kernelUDP is not None or not gateway.settings.kernelUDP:
        return
    runner = NftRunner(gateway.reactor)
    registry = KernelUDP(gateway.reactor, KernelUDPTable(tableName()), runner, clock=gateway.clock)
    try:
        removeStaleTables(runner)
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
