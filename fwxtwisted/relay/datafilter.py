"""PassThroughDataFilter: a data filter that forwards every byte unchanged, to subclass."""

from __future__ import annotations

from zope.interface import implementer

from fwxtwisted.interfaces import Direction, IDataChannel, IDataFilter


@implementer(IDataFilter)
class PassThroughDataFilter:
    """An L{IDataFilter} that passes bytes and half-closes on unchanged.

    Subclasses override L{dataReceived} and L{eofReceived} and pass on what they keep
    with L{write} and L{writeEOF}.

    @ivar channel: the next stage of the chain while attached, else None.
    """

    channel: IDataChannel | None = None

    def attached(self, channel: IDataChannel) -> None:
        """Remember the channel everything is passed on to."""
        self.channel = channel

    def dataReceived(self, direction: Direction, data: bytes) -> None:
        """Pass C{data} on unchanged."""
        self.write(direction, data)

    def eofReceived(self, direction: Direction) -> None:
        """Pass the half-close on."""
        self.writeEOF(direction)

    def detached(self) -> None:
        """Let go of the channel."""
        self.channel = None

    def write(self, direction: Direction, data: bytes) -> None:
        """Pass C{data} on in C{direction}.

        Dropped when not attached: a subclass may still be called back (a Deferred
        firing late) after its connection is over, and those bytes have nowhere to go.
        """
        if self.channel is not None:
            self.channel.write(direction, data)

    def writeEOF(self, direction: Direction) -> None:
        """Pass a half-close on in C{direction}; dropped when not attached, as L{write}."""
        if self.channel is not None:
            self.channel.writeEOF(direction)
