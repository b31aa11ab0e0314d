"""UDPRedirectAction: a UDP permission mapping the expected peer to a connect address."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer

from fwxtwisted.address import Address, normalizeHost
from fwxtwisted.interfaces import (
    ActionState,
    ByteCounts,
    FirewallEvent,
    IFirewallAction,
    RedirectFlags,
    Transport,
)
from fwxtwisted.logs import Logger
from fwxtwisted.net.quietport import listenUDPQuietly
from fwxtwisted.permissions.permission import ListeningPermission

log = Logger()


class _Inbound(DatagramProtocol):
    """The internal (peer-facing) socket."""

    def __init__(self, action: UDPRedirectAction) -> None:
        self._action = action

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        self._action._fromPeer(datagram, Address(normalizeHost(addr[0]), addr[1]))


class _Mapping(DatagramProtocol):
    """One peer's outbound socket, bound on the external IP; replies come back here."""

    def __init__(self, action: UDPRedirectAction, peer: Address) -> None:
        self.action = action
        self.peer = peer
        self.fromPeer = 0
        self.fromServer = 0
        self.port: IListeningPort | None = None
        self.idle: IDelayedCall | None = None

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        self.action._fromServer(self, datagram, Address(normalizeHost(addr[0]), addr[1]))


@implementer(IFirewallAction)
class UDPRedirectAction(ListeningPermission):
    """A UDP permission: datagrams from the expected peer's IP to the internal port go to
    the connect address from a socket on the external IP; replies go back to the peer.

    Each peer (IP, port) gets its own mapping, closed after the idle timeout.  Without
    ALLOW_MULTIPLE only the first peer port is mapped.
    """

    transport = Transport.UDP
    refusedWhat = "datagram"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._mappings: dict[Address, _Mapping] = {}
        #: Datagrams dropped on a mapping for coming from elsewhere than the connect
        #: address (replies must come from the target's address and port).
        self.wrongSourceCount = 0

    def cancel(self) -> None:
        if self.state in (ActionState.LISTENING, ActionState.USED):
            self.state = ActionState.CANCELLED
        for mapping in list(self._mappings.values()):
            self._closeMapping(mapping, "permission cancelled")
        self._stopListening()
        self._checkDone()

    def _listen(self, host: str, port: int) -> IListeningPort:
        return listenUDPQuietly(self._gateway.reactor, port, _Inbound(self), host)

    def _live(self) -> bool:
        return bool(self._mappings)

    # Datagrams.

    def _fromPeer(self, datagram: bytes, peer: Address) -> None:
        mapping = self._mappings.get(peer)
        if mapping is None:
            mapping = self._newMapping(peer)
            if mapping is None:
                return
        mapping.fromPeer += len(datagram)
        self._touch(mapping)
        if mapping.port is not None:
            mapping.port.write(datagram, (self.connectAddress.host, self.connectAddress.port))  # type: ignore[attr-defined]

    def _fromServer(self, mapping: _Mapping, datagram: bytes, source: Address) -> None:
        if source != self.connectAddress:
            self.wrongSourceCount += 1
            log.debug(
                "{label}: dropped a datagram from {source} to {peer}'s mapping: only "
                "{target} may answer",
                label=self._label,
                source=str(source),
                peer=str(mapping.peer),
                target=str(self.connectAddress),
            )
            return
        if self._port is None:
            return
        mapping.fromServer += len(datagram)
        self._touch(mapping)
        self._port.write(datagram, (mapping.peer.host, mapping.peer.port))  # type: ignore[attr-defined]

    def _newMapping(self, peer: Address) -> _Mapping | None:
        if peer.host != self.expectedPeer:
            self._refuse(peer, "wrong peer")
            return None
        if self.state is not ActionState.LISTENING:
            self._refuse(peer, "permission already used")
            return None
        self._cancelTimer()
        if RedirectFlags.ALLOW_MULTIPLE not in self.flags:
            self.state = ActionState.USED
        mapping = _Mapping(self, peer)
        bindHost = self.externalAddress
        if bindHost is None or (":" in bindHost) != self.connectAddress.isIPv6:
            bindHost = "::" if self.connectAddress.isIPv6 else "0.0.0.0"
        mapping.port = listenUDPQuietly(self._gateway.reactor, 0, mapping, bindHost)
        self._mappings[peer] = mapping
        self.connectionCount += 1
        self._emit(FirewallEvent.UDP_DESTINATION, peer)
        return mapping

    def _touch(self, mapping: _Mapping) -> None:
        timeout = self._gateway.settings.udpIdleTimeout
        if mapping.idle is not None and mapping.idle.active():
            mapping.idle.reset(timeout)
        else:
            mapping.idle = self._gateway.clock.callLater(
                timeout, self._closeMapping, mapping, "idle timeout"
            )

    def _closeMapping(self, mapping: _Mapping, reason: str) -> None:
        if self._mappings.pop(mapping.peer, None) is None:
            return
        if mapping.idle is not None and mapping.idle.active():
            mapping.idle.cancel()
        if mapping.port is not None:
            self._closer.close(mapping.port)
            mapping.port = None
        self._emit(
            FirewallEvent.CONNECTION_TERMINATING,
            mapping.peer,
            counts=ByteCounts(mapping.fromPeer, mapping.fromServer),
            reason=reason,
        )
        if self.state is ActionState.USED and not self._mappings:
            self._stopListening()
        self._checkDone()
