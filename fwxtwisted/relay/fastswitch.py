"""FastPathSwitch: when a relay moves its bytes onto the splice(2) fast path, and back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fwxtwisted.interfaces import Direction, Side
from fwxtwisted.net.sendnow import writingShutElsewhere
from fwxtwisted.relay import splice
from fwxtwisted.relay.legs import RelayLeg

if TYPE_CHECKING:
    from fwxtwisted.relay.filterchain import FilterChain

#: Bytes a relay carries in user mode before it moves to the fast path.  Setting up
#: the pipes costs more than relaying a short exchange in Python: an interactive
#: session, a directory listing or a one-byte request never pays for them, and idle
#: connections hold no pipes.
FAST_PATH_AFTER = 64 * 1024


class FastPathSwitch:
    """The part of a L{fwxtwisted.relay.relay.Relay} that hands an unfiltered plain
    relay to L{splice.SpliceRelay} once both write buffers are empty."""

    _fastPathAllowed: bool
    _fast: splice.SpliceRelay | None
    _chain: FilterChain | None
    _closeReason: str | None
    _lost: set[Side]
    _eofSent: set[Direction]
    _legs: dict[Side, RelayLeg]
    _readEnded: set[Side]
    _reactor: Any
    _fromClient: int
    _fromServer: int
    onFastPath: bool

    if TYPE_CHECKING:

        def close(self, reason: str | None = None) -> None: ...

        def abort(self, reason: str) -> None: ...

    def _tryFastPath(self, inHand: tuple[Direction, bytes] | None = None) -> bool:
        """Move to the fast path if the relay may and both write buffers are empty.

        @param inHand: bytes just read in user mode, not yet delivered: the fast path
            sends them first.
        @return: True when the relay is on the fast path now.
        """
        if not self._fastPathAllowed or self._fast is not None or self._chain is not None:
            return False
        if self._closeReason is not None or self._lost or self._eofSent:
            return False
        client, server = self._legs.get(Side.CLIENT), self._legs.get(Side.SERVER)
        if client is None or server is None:
            return False
        clientTransport, serverTransport = client.transport, server.transport
        if not (
            splice.transportEligible(clientTransport) and splice.transportEligible(serverTransport)
        ):
            # Bytes still sit in a Twisted write buffer: a later read tries again.
            return False
        try:
            self._fast = splice.SpliceRelay(
                self._reactor,
                clientTransport,
                serverTransport,
                self._countFromClient,
                self._countFromServer,
                self._fastPathEnded,
                fromClient=inHand[1] if inHand and inHand[0] is Direction.CLIENT_TO_SERVER else b"",
                fromServer=inHand[1] if inHand and inHand[0] is Direction.SERVER_TO_CLIENT else b"",
            )
        except splice.PipeUnavailable as e:
            # Relaying in Python beats splicing through one-page pipes, and a relay
            # must not fail for want of them.
            self._fastPathAllowed = False
            splice.reportUnavailable(str(e))
            return False
        for transport in (clientTransport, serverTransport):
            transport.unregisterProducer()  # type: ignore[union-attr]
        self.onFastPath = True
        return True

    def _countFromClient(self, count: int) -> None:
        self._fromClient += count

    def _countFromServer(self, count: int) -> None:
        self._fromServer += count

    def _fastPathEnded(self, error: str | None) -> None:
        self._fast = None
        if error is None:
            self._eofSent.update(Direction)
            for leg in self._legs.values():
                # The pumps read each socket's EOF and shut its writing half: a clean
                # end, not the hang-up Twisted would report as a non-clean loss.
                self._readEnded.add(leg.side)
                writingShutElsewhere(leg.transport)
            self.close()
        else:
            self.abort(error)

    def _stopFastPath(self) -> None:
        if self._fast is not None:
            fast, self._fast = self._fast, None
            fast.stop()
