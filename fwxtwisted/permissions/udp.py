"""UDPRedirectAction: a UDP permission mapping the expected peer to a connect address."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer

from fwxtwisted.address import Address, normalizeHost
from fwxtwisted.callchecks import datagramOptionsProblem
from fwxtwisted.interfaces import (
    ActionState,
    ByteCounts,
    DatagramCounts,
    FirewallEvent,
    IUDPRedirect,
    RedirectFlags,
    Transport,
)
from fwxtwisted.logs import Logger
from fwxtwisted.net.kernelnat import fitsKernel
from fwxtwisted.net.quietport import listenUDPQuietly
from fwxtwisted.permissions.datagrams import DatagramPorts, sendDatagram
from fwxtwisted.permissions.kernelflow import KernelPath
from fwxtwisted.permissions.permission import ListeningPermission

log = Logger()


class _Inbound(DatagramProtocol):
    """The internal (peer-facing) socket."""

    def __init__(self, action: UDPRedirectAction) -> None:
        self._action = action

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        action = self._action
        known = action.knownPeer
        if known is not None and addr == action._knownKey:
            action._fromPeer(datagram, known)  # the common case: no Address to build
        else:
            action._fromPeer(datagram, Address(normalizeHost(addr[0]), addr[1]))


class _Mapping(DatagramProtocol):
    """One peer's outbound socket, bound on the external IP; replies come back here."""

    def __init__(self, action: UDPRedirectAction, peer: Address) -> None:
        self.action = action
        self.peer = peer
        #: C{peer} as the tuple a send takes.
        self.peerKey = (peer.host, peer.port)
        self.fromPeer = 0
        self.fromServer = 0
        self.port: IListeningPort | None = None
        self.idle: IDelayedCall | None = None
        #: When a datagram last passed either way (the idle timer checks it on firing).
        self.lastActive = 0.0

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        action = self.action
        connect = action.connectAddress
        if addr[1] == connect.port and addr[0] == connect.host:
            action._fromServer(self, datagram, connect)  # the common case: no parsing
        else:
            action._fromServer(self, datagram, Address(normalizeHost(addr[0]), addr[1]))


@implementer(IUDPRedirect)
class UDPRedirectAction(ListeningPermission):
    """A UDP permission: datagrams from the expected peer's IP to the internal port go to
    the connect address from a socket on the external IP; replies go back to the peer.

    Each peer (IP, port) gets its own mapping, closed after the idle timeout.  Without
    ALLOW_MULTIPLE only the first peer port is mapped.

    Given a known peer (L{expectPeer}), only that address is accepted and its mapping
    is made when the permission starts, so the connect address may send first.  Given
    an outbound socket (L{useOutbound}), the mapping sends from it rather than from a
    socket of its own; it is released (closed) when the permission's listener closes.

    A known peer's mapping is four fixed addresses: with the gateway's kernel UDP path
    (permissions/kerneludp.py) the kernel carries its datagrams, and the sockets, kept
    bound until the kernel has let go, see only strays and strangers.
    """

    transport = Transport.UDP
    refusedWhat = "datagram"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._mappings: dict[Address, _Mapping] = {}
        self.knownPeer: Address | None = None
        #: C{knownPeer} as the (host, port) tuple a read gives.
        self._knownKey: tuple[str, int] | None = None
        self._outbound: DatagramPorts | None = None
        self._outboundIndex = 0
        #: The outbound socket was released and is not closed yet.
        self._outboundClosing = False
        self._packetsFromPeer = self._bytesFromPeer = 0
        self._packetsFromTarget = self._bytesFromTarget = 0
        self._dropped = 0
        #: Datagrams dropped on a mapping for coming from elsewhere than the connect
        #: address (replies must come from the target's address and port).
        self.wrongSourceCount = 0
        #: Seconds a mapping lives without traffic: None for the gateway's
        #: udp_idle_timeout, 0 for as long as the permission (its owner ends it).
        self.idleTimeout: float | None = None
        #: The known peer's flow in the kernel, when the gateway has the kernel path.
        self.kernel: KernelPath | None = None

    # Set-up, by the session (before start).

    def expectPeer(self, peer: Address) -> None:
        """Accept datagrams from C{peer} (IP and port) only; map it as soon as started."""
        self.knownPeer = Address(normalizeHost(peer.host), peer.port)
        self._knownKey = (self.knownPeer.host, self.knownPeer.port)
        self.expectedPeer = self.knownPeer.host

    def useOutbound(self, ports: DatagramPorts, index: int) -> None:
        """Send to the connect address from socket C{index} of C{ports} (adopting it)."""
        ports.adopt(index, self._fromOutbound, self.connectAddress, self.cancel)
        self._outbound = ports
        self._outboundIndex = index

    def start(self, timeout: float) -> None:
        super().start(timeout)
        if self.knownPeer is not None and self.state is ActionState.LISTENING:
            mapping = self._newMapping(self.knownPeer)
            if mapping is not None:
                self._touch(mapping)  # the idle timeout runs from now
                self.kernel = self._kernelPathFor(mapping)

    def ready(self) -> Deferred[None]:
        """Fires once the permission carries datagrams the way it will (in the kernel
        once the kernel holds the flow, else at once); never fails."""
        return succeed(None) if self.kernel is None else self.kernel.whenReady()

    def _kernelPathFor(self, mapping: _Mapping) -> KernelPath | None:
        gateway = self._gateway
        registry = getattr(gateway, "kernelUDP", None)
        if (
            registry is None
            or not gateway.settings.kernelUDP
            or RedirectFlags.NO_KERNEL_MODE in self.flags
            or self.internalAddress is None
        ):
            return None
        if self._outbound is not None:
            external = self._outbound.addressOf(self._outboundIndex)
        elif mapping.port is not None:
            external = Address.fromTwisted(mapping.port.getHost())  # type: ignore[attr-defined]
        else:
            return None
        if external.host in ("0.0.0.0", "::"):
            return None  # a wildcard socket: the source the kernel would write is unknown
        if not fitsKernel(mapping.peer, self.internalAddress, external, self.connectAddress):
            return None
        if not registry.carries(mapping.peer, self.connectAddress):
            return None
        flow = registry.newFlow(mapping.peer, self.internalAddress, external, self.connectAddress)
        return KernelPath(registry, flow, self._label, gateway.clock)

    # IUDPRedirect

    @property
    def datagramCounts(self) -> DatagramCounts:
        dropped = self._dropped
        if self._outbound is not None:
            dropped += self._outbound.countsOf(self._outboundIndex).dropped
        counts = DatagramCounts(
            self._packetsFromPeer,
            self._bytesFromPeer,
            self._packetsFromTarget,
            self._bytesFromTarget,
            dropped,
        )
        if self.kernel is None:
            return counts
        kernel = self.kernel.counts
        return DatagramCounts(
            counts.packetsFromPeer + kernel.packetsToTarget,
            counts.bytesFromPeer + kernel.bytesToTarget,
            counts.packetsFromTarget + kernel.packetsToPeer,
            counts.bytesFromTarget + kernel.bytesToPeer,
            dropped,
        )

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
        return bool(self._mappings) or self._outboundClosing

    def _stopListening(self) -> None:
        if self.kernel is not None and not self.kernel.removed:
            # The ports stay bound until the kernel's maps and conntrack entries no
            # longer name them: the next session given them must not get this flow.
            self._cancelTimer()
            self.kernel.remove().addCallback(lambda _: self._stopListening())
            return
        super()._stopListening()
        if self._outbound is not None and self._outbound.adopted(self._outboundIndex):
            self._outboundClosing = True
            self._outbound.release(self._outboundIndex).addBoth(self._outboundClosed)

    def _outboundClosed(self, _: object) -> None:
        self._outboundClosing = False
        self._checkDone()

    # Datagrams.

    def _fromPeer(self, datagram: bytes, peer: Address) -> None:
        if self.knownPeer is not None and peer != self.knownPeer:
            self._dropForeign(peer)
            return
        if self.kernel is not None and self.kernel.active:
            self._stray()
            return
        mapping = self._mappings.get(peer)
        if mapping is None:
            mapping = self._newMapping(peer)
            if mapping is None:
                self._dropped += 1
                return
        mapping.fromPeer += len(datagram)
        self._packetsFromPeer += 1
        self._bytesFromPeer += len(datagram)
        self._touch(mapping)
        if mapping.port is not None:
            connect = self.connectAddress
            sendDatagram(mapping.port, datagram, (connect.host, connect.port))
        elif self._outbound is not None:
            self._outbound.send(self._outboundIndex, datagram, self.connectAddress)

    def _fromOutbound(self, index: int, datagram: bytes, source: Address) -> None:
        # The outbound socket passes on only what comes from the connect address.
        for mapping in self._mappings.values():
            self._fromServer(mapping, datagram, source)
            return
        self._dropped += 1  # the connect address sent before any peer was mapped

    def _fromServer(self, mapping: _Mapping, datagram: bytes, source: Address) -> None:
        if source != self.connectAddress:
            self._dropped += 1
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
            self._dropped += 1
            return
        if self.kernel is not None and self.kernel.active:
            self._stray()
            return
        mapping.fromServer += len(datagram)
        self._packetsFromTarget += 1
        self._bytesFromTarget += len(datagram)
        self._touch(mapping)
        sendDatagram(self._port, datagram, mapping.peerKey)

    def _stray(self) -> None:
        assert self.kernel is not None
        self._dropped += 1
        self.kernel.stray()

    def _dropForeign(self, source: Address) -> None:
        """A datagram from someone other than the known peer: the first is refused
        aloud (log, REFUSED_CONNECTION), the rest are only counted."""
        self._dropped += 1
        if self.refusedCount == 0:
            self._refuse(source, f"only {self.knownPeer} may send here")
            return
        log.debug(
            "{label}: dropped datagram from {source} to {internal} ({dropped} dropped)",
            label=self._label,
            source=str(source),
            internal=str(self.internalAddress),
            dropped=self._dropped,
        )

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
        if self._outbound is None:
            bindHost = self.externalAddress
            if bindHost is None or (":" in bindHost) != self.connectAddress.isIPv6:
                bindHost = "::" if self.connectAddress.isIPv6 else "0.0.0.0"
            mapping.port = listenUDPQuietly(self._gateway.reactor, 0, mapping, bindHost)
        self._mappings[peer] = mapping
        self.connectionCount += 1
        self._emit(FirewallEvent.UDP_DESTINATION, peer)
        return mapping

    def _touch(self, mapping: _Mapping) -> None:
        # Called for every datagram: it only notes the time.  The one timer, armed
        # once, looks at that time when it fires and re-arms for what is left, instead
        # of a timer reset (a heap operation) per datagram.
        clock = self._gateway.clock
        mapping.lastActive = clock.seconds()
        if mapping.idle is None:
            timeout = self._idleTimeout()
            if timeout > 0:
                mapping.idle = clock.callLater(timeout, self._idleCheck, mapping)

    def _idleTimeout(self) -> float:
        if self.idleTimeout is None:
            return self._gateway.settings.udpIdleTimeout
        return self.idleTimeout

    def _idleCheck(self, mapping: _Mapping) -> None:
        clock = self._gateway.clock
        lastActive = mapping.lastActive
        if self.kernel is not None:
            lastActive = max(lastActive, self.kernel.counts.lastActive)
        left = lastActive + self._idleTimeout() - clock.seconds()
        if left > 0:
            mapping.idle = clock.callLater(left, self._idleCheck, mapping)
            return
        mapping.idle = None
        self._closeMapping(mapping, "idle timeout")

    def _closeMapping(self, mapping: _Mapping, reason: str) -> None:
        if self._mappings.get(mapping.peer) is not mapping:
            return
        if self.kernel is not None and not self.kernel.removed:
            # Closed once the kernel has let go, with the kernel's last counts.
            self.kernel.remove().addCallback(lambda _: self._closeMapping(mapping, reason))
            return
        del self._mappings[mapping.peer]
        if mapping.idle is not None and mapping.idle.active():
            mapping.idle.cancel()
        if mapping.port is not None:
            self._closer.close(mapping.port)
            mapping.port = None
        self._emit(
            FirewallEvent.CONNECTION_TERMINATING,
            mapping.peer,
            counts=self._mappingBytes(mapping),
            reason=reason,
        )
        if self.state is ActionState.USED and not self._mappings:
            self._stopListening()
        self._checkDone()

    def _mappingBytes(self, mapping: _Mapping) -> ByteCounts:
        if self.kernel is None:
            return ByteCounts(mapping.fromPeer, mapping.fromServer)
        kernel = self.kernel.counts
        return ByteCounts(
            mapping.fromPeer + kernel.bytesToTarget, mapping.fromServer + kernel.bytesToPeer
        )


def udpOptionsProblem(
    count: int,
    transport: Transport,
    flags: RedirectFlags,
    outboundPorts: object,
    peerAddresses: Sequence[Address] | None,
) -> str | None:
    """Why C{outboundPorts}/C{peerAddresses} do not fit a redirection of C{count}
    permissions, or None when they do (or are not given): the checks FakeSession makes
    too (L{datagramOptionsProblem}), then what only real ports can say."""
    if outboundPorts is not None and not isinstance(outboundPorts, DatagramPorts):
        return f"outboundPorts must come from openDatagramPorts, not {outboundPorts!r}"
    outboundCount = outboundPorts.count if outboundPorts is not None else None
    problem = datagramOptionsProblem(count, transport, flags, outboundCount, peerAddresses)
    if problem is not None or outboundPorts is None:
        return problem
    if outboundPorts.state is not ActionState.LISTENING:
        return f"{outboundPorts!r} is closed"
    if any(outboundPorts.adopted(i) for i in range(count)):
        return f"{outboundPorts!r} is used by another redirection already"
    return None
