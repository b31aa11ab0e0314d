"""Gateway: the runtime shared by every session (reactor, clock, ports, address pool)."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

from fwxtwisted.interfaces import RedirectFlags
from fwxtwisted.net.externals import ExternalAddressPool
from fwxtwisted.net.ports import PortAllocator
from fwxtwisted.relay import splice
from fwxtwisted.settings import GatewaySettings


class Gateway:
    """What sessions and permissions need from the outside world, injected once.

    @ivar reactor: used for sockets (listenTCP, listenUDP, connections).
    @ivar clock: used for every timeout, so tests can drive time with C{task.Clock}.
    """

    def __init__(
        self,
        reactor: Any,
        settings: GatewaySettings | None = None,
        clock: IReactorTime | None = None,
        sessionPrefix: str = "s",
        portSlice: tuple[int, int] | None = None,
    ) -> None:
        """
        @param portSlice: C{(index, count)}: bind only in this process's part of each
            port range (see L{PortAllocator}).
        """
        self.reactor = reactor
        self.clock: IReactorTime = clock if clock is not None else reactor
        self.settings = settings or GatewaySettings()
        self._portSlice = portSlice
        self.ports = PortAllocator(self.settings.portRanges, slice=portSlice)
        self.externalPool = ExternalAddressPool(self.settings.externalAddresses)
        self._sessionCounter = 0
        #: Starts every session id; worker processes have their own (see workers.py).
        self.sessionPrefix = sessionPrefix
        #: The permitted flows of allowFutureConnect (permissions/future.py), set by the
        #: service when a transparent listener has the kernel table; else None.
        self.futureConnects: Any = None
        #: The kernel UDP path (permissions/kerneludp.py), set by the service when
        #: kernel_udp is on and its table is made; else None.
        self.kernelUDP: Any = None
        #: fastPathFor(RedirectFlags.NONE), asked by every primary relay: computed once.
        self.primaryFastPath = self.fastPathFor(RedirectFlags.NONE)

    def fastPathFor(self, flags: RedirectFlags) -> bool:
        """May a relay granted with C{flags} move its bytes on the fast path?"""
        return (
            self.settings.fastPath
            and RedirectFlags.NO_KERNEL_MODE not in flags
            and splice.available()
        )

    def nextSessionId(self) -> str:
        """A short id unique within this gateway, for logs."""
        self._sessionCounter += 1
        return f"{self.sessionPrefix}{self._sessionCounter}"

    def reconfigure(self, settings: GatewaySettings) -> None:
        """Use C{settings} from now on (a reload): timers, port runs and relays made
        from now on read them; a session keeps the external IP it was given, and what
        is already bound or scheduled is not touched."""
        old, self.settings = self.settings, settings
        if settings.portRanges != old.portRanges:
            self.ports = PortAllocator(settings.portRanges, slice=self._portSlice)
        if settings.externalAddresses != old.externalAddresses:
            self.externalPool = ExternalAddressPool(settings.externalAddresses)
        self.primaryFastPath = self.fastPathFor(RedirectFlags.NONE)
