"""Starting and stopping the gateway's kernel UDP path (settings.kernelUDP).

Every gateway process (a worker, another instance on the host, a container sharing
the host's network) has its own table, named with its process id and a random part,
and holds a lock on a file of that name under /run/fwxtwisted for as long as it
lives.  A table whose lock file is there and free belongs to a gateway that died
without its stop: its NAT elements would take the flows of whoever gets its ports
next, so a start deletes it.  A table without a lock file here belongs to a gateway
this one cannot see (another mount namespace): it is left alone.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from pathlib import Path

from fwxtwisted.errors import FWXError
from fwxtwisted.logs import Logger
from fwxtwisted.net.conntrack import ConntrackError
from fwxtwisted.net.kernelnat import DEFAULT_TABLE, FAMILY, KernelUDPTable, gatewayTables
from fwxtwisted.net.nft import NftError, NftRunner
from fwxtwisted.permissions.gateway import Gateway
from fwxtwisted.permissions.kerneludp import KernelUDP

log = Logger()

LOCK_DIR = Path("/run/fwxtwisted")


class KernelPathError(FWXError):
    """kernel_udp is on and its table cannot be made."""


class TableClaim:
    """A table name this process owns, and the lock that says so while it lives."""

    def __init__(self, lockDir: Path = LOCK_DIR) -> None:
        lockDir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.name = f"{DEFAULT_TABLE}_{os.getpid()}_{secrets.token_hex(3)}"
        self._path = lockDir / f"{self.name}.lock"
        self._fd: int | None = os.open(self._path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        """The table is deleted: let the name go."""
        if self._fd is None:
            return
        self._path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


def _ownerGone(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # its gateway holds it: alive
    finally:
        os.close(fd)
    return True


def removeStaleTables(runner: NftRunner, lockDir: Path = LOCK_DIR) -> list[str]:
    """Delete the tables of gateways that died without their stop (see the module
    docstring).  @return: the names deleted.  @raise NftError."""
    listing = runner.outputNow(["-j", "list", "tables"])
    stale = [name for name in gatewayTables(listing) if _ownerGone(lockDir / f"{name}.lock")]
    if stale:
        runner.runScriptNow("".join(f"delete table {FAMILY} {name}\n" for name in stale))
        for name in stale:
            (lockDir / f"{name}.lock").unlink(missing_ok=True)
        log.info(
            "kernel UDP path: deleted the tables of gateways that died: {names}",
            names=", ".join(stale),
        )
    return stale


def startKernelUDP(gateway: Gateway, lockDir: Path = LOCK_DIR) -> None:
    """Make the kernel UDP path's table when kernel_udp is on.

    @raise KernelPathError: it was asked for and cannot be had (no nft, no right to
        use it): the operator asked for it, so the gateway does not start without it.
    """
    if gateway.kernelUDP is not None or not gateway.settings.kernelUDP:
        return
    runner = NftRunner(gateway.reactor)
    claim: TableClaim | None = None
    try:
        claim = TableClaim(lockDir)
        removeStaleTables(runner, lockDir)
        registry = KernelUDP(
            gateway.reactor, KernelUDPTable(claim.name), runner, clock=gateway.clock
        )
        registry.start()
    except (NftError, ConntrackError, OSError) as e:
        if claim is not None:
            claim.release()
        raise KernelPathError(
            f"kernel_udp: cannot set up the kernel UDP path ({e}); it needs nft and "
            "CAP_NET_ADMIN (run as root), or turn kernel_udp off"
        ) from None
    registry.claim = claim
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
    else:
        registry.claim.release()
