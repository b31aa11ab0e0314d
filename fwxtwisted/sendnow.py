"""Send on a plain TCP transport at once when nothing waits in its write buffer.

Twisted's transports never send from write(): they buffer, arm write readiness
(an epoll_ctl), wait for the next reactor turn, send, then disarm it (another
epoll_ctl).  A relay answering a one-byte request, or an FTP reply, pays for that on
every write: a third of a short session's dispatch cost.  asyncio's transports try the
send first; so do these helpers, for Twisted's own TCP connections only (anything
else, TLS included, takes the ordinary path), and only while the transport's buffer
is empty, so the bytes keep their order.  What the kernel does not take goes to the
ordinary write, with its flow control.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp


def _idle(transport: Any) -> bool:
    """A plain, connected TCP transport with nothing buffered and no close under way."""
    return (
        isinstance(transport, tcp.Connection)
        and not transport.TLS
        and bool(transport.connected)
        and not transport.disconnecting
        and not transport._writeDisconnecting
        and not transport.dataBuffer
        and not transport._tempDataBuffer
    )


def writeNow(transport: Any, data: bytes) -> None:
    """Write C{data} to C{transport}: sent at once if the kernel takes it, else buffered
    by the transport as its write() does (an error is left for it to find and report)."""
    if _idle(transport):
        try:
            sent = transport.socket.send(data)
        except OSError:
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


def halfCloseNow(transport: Any) -> None:
    """Shut the writing half of C{transport} down: at once if nothing is buffered."""
    if _idle(transport) and transport.producer is None:
        # What the transport's doWrite would do on its next turn (abstract.py).
        transport._writeDisconnecting = True
        transport._writeDisconnected = True
        transport.stopWriting()
        transport._closeWriteConnection()
        return
    transport.loseWriteConnection()
