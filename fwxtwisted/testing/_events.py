"""What a fake session plays for a permission: its events, as the real one sends them."""

from __future__ import annotations

from fwxtwisted.address import Address
from fwxtwisted.interfaces import (
    ActionState,
    ByteCounts,
    FirewallEvent,
    FirewallNotification,
    IFirewallAction,
)


class PlaysPermissions:
    """FakeSession's helpers that play a permission's connections and their events."""

    def fireEvent(self, notification: FirewallNotification) -> None:
        raise NotImplementedError

    def actionEvent(
        self,
        action: IFirewallAction,
        event: FirewallEvent,
        clientAddress: Address | None = None,
        counts: ByteCounts | None = None,
        reason: str | None = None,
        fastPath: bool = False,
    ) -> FirewallNotification:
        """Deliver C{event} about C{action} as its permission would: with the action's
        context, and its connect address as C{serverAddress}.  @return: the notification."""
        notification = FirewallNotification(
            event,
            action,
            context=action.context,
            clientAddress=clientAddress,
            serverAddress=action.connectAddress,
            counts=counts or ByteCounts(),
            reason=reason,
            fastPath=fastPath,
        )
        self.fireEvent(notification)
        return notification

    def connectThrough(self, action: IFirewallAction, peer: Address | None = None) -> None:
        """Play a TCP permission taking a connection from C{peer} (by default its
        expected peer, port 50001) and connecting out: the action counts it (USED unless
        ALLOW_MULTIPLE), then ACCEPTED_CONNECTION, CONNECT_TCP, ESTABLISHED_CONNECTION."""
        peer = peer or Address(action.expectedPeer, 50001)
        _accept(action)
        for event in (
            FirewallEvent.ACCEPTED_CONNECTION,
            FirewallEvent.CONNECT_TCP,
            FirewallEvent.ESTABLISHED_CONNECTION,
        ):
            self.actionEvent(action, event, peer)

    def endConnection(
        self,
        action: IFirewallAction,
        peer: Address | None = None,
        counts: ByteCounts | None = None,
        reason: str | None = None,
    ) -> None:
        """Play a connection (or UDP mapping) of C{action} ending: CONNECTION_TERMINATING
        with C{counts}; a single-use action is then finished."""
        self.actionEvent(
            action,
            FirewallEvent.CONNECTION_TERMINATING,
            peer or Address(action.expectedPeer, 50001),
            counts,
            reason,
        )
        if action.state is not ActionState.LISTENING:
            finish = getattr(action, "finish", None)
            if finish is not None:
                finish()

    def mapUDPPeer(self, action: IFirewallAction, peer: Address) -> None:
        """Play a UDP permission's first datagram from C{peer}: the action counts a
        mapping (USED unless ALLOW_MULTIPLE), then UDP_DESTINATION with the peer."""
        _accept(action)
        self.actionEvent(action, FirewallEvent.UDP_DESTINATION, peer)


def _accept(action: IFirewallAction) -> None:
    """Count a connection on a fake action (a real one is counted by its listener)."""
    accept = getattr(action, "accept", None)
    if accept is not None:
        accept()
