"""Writes, half-closes and closes done at once on an idle plain TCP transport.

Twisted queues every write and every close until the reactor's next turn: the
transport starts watching for writability, the next poll reports it, and only then
is the socket written or shut.  A relay that forwards a few bytes, or a FIN, to a
socket with nothing queued pays that round trip (two epoll changes and a dispatch)
for nothing.  Here the bytes or the FIN go out at once when nothing waits before
them; anything else (TLS, bytes queued, a close under way, a transport of another
kind, or a socket that takes only part) is left to Twisted, which then behaves as
it always does.

This touches the transport's state the way its own doWrite does, through attributes
Twisted's FileDescriptor has had for many years; where they are missing the
functions fall back to the public calls.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import tcp
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from fwxtwisted.net.outbound import OutboundConnection

#: The transports this module may act on: Twisted's plain TCP connections.
_PLAIN = (tcp.Server, tcp.Client, OutboundConnection)

#: Twisted shares one Failure for clean closes too; making one costs an MRO walk.
CONNECTION_DONE = Failure(ConnectionDone())

#: The FileDescriptor state this relies on.  Checked once: a Twisted without it gets
#: the ordinary calls.
SUPPORTED = all(
    hasattr(tcp.Server, name)
    for name in (
        "dataBuffer",
        "_writeDisconnecting",
        "_writeDisconnected",
        "disconnecting",
        "_shouldShutdown",
    )
)


def _plainAndEmpty(transport: Any) -> bool:
    """A connected plain TCP transport, not closing, with nothing queued."""
    return (
        SUPPORTED
        and type(transport) in _PLAIN
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and not transport.dataBuffer
        and not getattr(transport, "_tempDataBuffer", True)
    )


def _idle(transport: Any) -> bool:
    """Plain, empty, and its writing half still open."""
    return _plainAndEmpty(transport) and not transport._writeDisconnecting


def writeNow(transport: Any, data: bytes) -> None:
    """Write C{data} to C{transport}: sent at once if the transport is idle, the rest
    (or all of it) queued the ordinary way."""
    if data and _idle(transport):
        try:
            sent = transport.socket.send(data)
        except OSError:
            # Would block, or failed: Twisted's own attempt meets the same condition
            # and reports a failure as the connection's loss.
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


def shutWritingNow(transport: Any) -> bool:
    """Send FIN on an idle transport now, leaving it as Twisted's loseWriteConnection
    does once its buffer is empty (writing half closed, reading on).

    @return: False when the transport is not idle: call loseWriteConnection then.
    """
    if not _idle(transport):
        return False
    transport._writeDisconnecting = True
    transport._writeDisconnected = True
    try:
        transport.socket.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the peer is gone: the read side reports it
    return True


def closeNow(transport: Any) -> bool:
    """Close, now, a plain TCP transport whose reading has ended (the reactor has
    stopped watching it for the peer's EOF) and whose writing half is shut, with
    nothing queued.

    Only for such a transport: a descriptor closed while the reactor still watches it
    may have a poll result waiting in the current round, and a new socket given the
    same descriptor number would receive it.  Twisted's loseConnection closes a
    transport in this state at once too, but makes a new Failure for it each time,
    and shuts down both directions first, though both have ended: a syscall for
    nothing, which is skipped here.

    @return: False when the transport is not in that state: call loseConnection then.
    """
    if not (_plainAndEmpty(transport) and transport._writeDisconnected):
        return False
    transport._shouldShutdown = False
    transport.connectionLost(CONNECTION_DONE)
    return True


def writingShutElsewhere(transport: Any) -> None:
    """Tell an idle plain transport that its writing half was shut by other means (the
    fast path's splice pump sent its FIN): L{closeNow} may then close it as done,
    where Twisted would see the hung-up socket and report a non-clean loss."""
    if _idle(transport):
        transport._writeDisconnecting = True
        transport._writeDisconnected = True
