"""allowFutureConnect: permissions for flows through the gateway (transparent mode).

A C{FutureConnectAction} is one permitted flow (source IP, source port or any,
destination IP and port).  C{FutureConnects} is the gateway's half: the listeners an
nftables C{redirect} hands such flows to, the table of permitted flows in the kernel
(net/nft.py) and in the gateway, and the check each intercepted connection passes
before a relay exists.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from fwxtwisted.address import Address
from fwxtwisted.errors import FWXError
from fwxtwisted.interfaces import IFirewallAction, RedirectFlags
from fwxtwisted.logs import Logger
from fwxtwisted.net.nft import FutureConnectTable
from fwxtwisted.net.origdst import Interception, listenTransparent
from fwxtwisted.permissions.redirect import TCPRedirectAction

log = Logger()

#: Seconds a kernel element outlives the gateway's own expiry timer: the gateway
#: deletes it itself; the kernel's timeout is the net under a gateway that died.
KERNEL_MARGIN = 5.0

_Key = tuple[str, int, str, int]


def _key(source: Address, destination: Address) -> _Key:
    return (source.host, source.port, destination.host, destination.port)


@implementer(IFirewallAction)
class FutureConnectAction(TCPRedirectAction):
    """One permitted flow: the next connection from C{source} (any port when its port
    is 0) to C{connectAddress} is relayed there from C{externalAddress}.

    C{internalAddress} is the destination too: the peer connects "to" it, the kernel
    hands the connection to the gateway.
    """

    refusedWhat = "flow"

    def __init__(self, *args: Any, source: Address, registry: FutureConnects, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.source = source
        self.internalAddress = self.connectAddress
        self._registry = registry
        self._registered = False
        self._removing: Deferred[None] | None = None

    def __repr__(self) -> str:
        return f"<FutureConnectAction {self.source} -> {self.connectAddress} {self.state.name}>"

    def register(self) -> Deferred[None]:
        """Tell the gateway and the kernel; fires once the kernel has the flow."""
        self._registered = True
        return self._registry.register(self)

    # The "listener" is the registration: stopping listening is unregistering.

    def _stopListening(self) -> None:
        self._cancelTimer()
        if self._registered:
            self._registered = False
            self._removing = self._registry.unregister(self)
            self._removing.addBoth(self._removed)

    def _removed(self, _: object) -> None:
        self._removing = None
        self._checkDone()

    def _checkDone(self) -> None:
        if self._removing is not None:
            return
        super()._checkDone()

    def _accept(self, peer: Address) -> Protocol | None:
        if self.source.port and peer.port != self.source.port:
            self._refuse(peer, f"only {self.source} may connect")
            return None
        return super()._accept(peer)


class _InterceptFactory(ServerFactory):
    noisy = False

    def __init__(self, registry: FutureConnects) -> None:
        self._registry = registry

    def buildProtocol(self, addr: Any) -> Protocol:
        return Interception(Address.fromTwisted(addr), self._registry.decide)


class FutureConnects:
    """The gateway's permitted flows: listeners, kernel table, and the lookup."""

    def __init__(self, reactor: Any, table: FutureConnectTable) -> None:
        self._reactor = reactor
        self.table = table
        self._permitted: dict[_Key, FutureConnectAction] = {}
        self._ports: list[IListeningPort] = []
        #: Where redirected flows arrive, per family (None: that family is off).
        self.port4: int | None = None
        self.port6: int | None = None

    def start(self, interface4: str = "0.0.0.0", interface6: str = "::") -> None:
        """Open the interception listeners and make the kernel table (deleting what a
        previous run left).  @raise CannotListenError, NftError."""
        factory = _InterceptFactory(self)
        port4 = listenTransparent(self._reactor, 0, factory, interface4, backlog=1024)
        self._ports.append(port4)
        self.port4 = port4.getHost().port
        if socket.has_ipv6:
            try:
                port6 = listenTransparent(
                    self._reactor, 0, factory, interface6, backlog=1024, v6only=True
                )
            except Exception:  # no IPv6 in this namespace: IPv4 only
                log.info("allowFutureConnect: no IPv6 listener; IPv4 flows only")
            else:
                self._ports.append(port6)
                self.port6 = port6.getHost().port
        try:
            self.table.setup(self.port4, self.port6)
        except Exception:
            self._closePorts()
            raise
        log.info(
            "allowFutureConnect: nftables table inet {table}, flows to ports {port4}/{port6}",
            table=self.table.name,
            port4=self.port4,
            port6=self.port6,
        )

    def stop(self) -> None:
        """Close the listeners and delete the kernel table.  @raise NftError."""
        self._closePorts()
        self._permitted.clear()
        self.table.teardown()

    def _closePorts(self) -> None:
        for port in self._ports:
            port.stopListening()
        self._ports = []

    def register(self, action: FutureConnectAction) -> Deferred[None]:
        key = _key(action.source, action.connectAddress)
        if key in self._permitted:
            raise FWXError(
                f"a flow from {action.source} to {action.connectAddress} is permitted already"
            )
        if (self.port6 if action.source.isIPv6 else self.port4) is None:
            raise FWXError("allowFutureConnect: this gateway takes no IPv6 flows")
        self._permitted[key] = action
        timeout: float | None = None
        if RedirectFlags.TIMEOUT in action.flags:
            timeout = action._gateway.settings.redirectTimeout + KERNEL_MARGIN
        return self.table.add(action.source, action.connectAddress, timeout)

    def unregister(self, action: FutureConnectAction) -> Deferred[None]:
        key = _key(action.source, action.connectAddress)
        if self._permitted.get(key) is not action:
            return succeed(None)
        del self._permitted[key]
        if not self._ports:
            return succeed(None)  # stopped: the table is gone
        deleting = self.table.delete(action.source, action.connectAddress)

        def failed(failure: Failure) -> None:
            # Usually the kernel's own timeout was first; nothing is left either way.
            log.debug("allowFutureConnect: {error}", error=failure.getErrorMessage())

        deleting.addErrback(failed)
        return deleting

    def decide(self, peer: Address, destination: Address) -> Protocol | None:
        """The relay leg for an intercepted connection, or None (refused, logged)."""
        action = self._permitted.get(_key(peer, destination)) or self._permitted.get(
            _key(peer.withPort(0), destination)
        )
        if action is None:
            log.warn(
                "refused flow from {peer} to {destination}: no permission",
                peer=str(peer),
                destination=str(destination),
            )
            return None
        return action._accept(peer)

    @property
    def permitted(self) -> int:
        """How many flows are permitted now."""
        return len(self._permitted)
