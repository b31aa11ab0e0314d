"""SpliceRelay: the fast path, moving a relay's bytes with Linux splice(2) through pipes.

The bytes never enter Python: each direction is socket -> pipe -> socket inside the
kernel.  Python only reacts to readiness, so a relay costs a few syscalls per
megabyte instead of two copies per 64 KiB.  Flow control is the pipe: when the
destination cannot take more, the source is no longer read.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReadWriteDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

from fwxtwisted.logs import Logger

log = Logger()

#: The pipe size asked for (Linux's default pipe-max-size); reads are as large.
PIPE_SIZE = 1 << 20
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_F_SETPIPE_SZ = 1031
_F_GETPIPE_SZ = 1032
#: The smallest pipe worth splicing through.  A user over its pipe quota
#: (fs.pipe-user-pages-soft: 64 MiB, the two 1 MiB pipes of 32 relays) gets one-page
#: pipes, through which the fast path costs more CPU than relaying in Python.
MIN_PIPE_SIZE = 64 * 1024
#: Rounds of splicing per readiness event before yielding to the reactor.
_ROUNDS = 4


@functools.cache
def available() -> bool:
    """True where the fast path can run (Linux with os.splice)."""
    return sys.platform.startswith("linux") and hasattr(os, "splice")


class PipeUnavailable(Exception):
    """No pipe fit for the fast path: descriptors exhausted, or the pipe quota spent."""


def openPipe() -> tuple[int, int]:
    """A non-blocking pipe of L{PIPE_SIZE} (or at least L{MIN_PIPE_SIZE}) bytes.

    @return: its read and write descriptors.
    @raise PipeUnavailable: with the reason.
    """
    try:
        readFd, writeFd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise PipeUnavailable(f"cannot make a pipe: {e.strerror}") from None
    try:
        # The new size is the call's result: one syscall per pipe, not two.
        size = fcntl.fcntl(writeFd, _F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        # Refused above the quota; the pipe as it is may still be 64 KiB or more.
        try:
            size = fcntl.fcntl(writeFd, _F_GETPIPE_SZ)
        except OSError:
            size = 0
    if size < MIN_PIPE_SIZE:
        os.close(readFd)
        os.close(writeFd)
        raise PipeUnavailable(f"pipes are {size} bytes (the user's pipe quota is spent)")
    return readFd, writeFd


_refusals = 0


def reportUnavailable(reason: str) -> None:
    """Log a relay denied the fast path: the first at warn, the rest at debug."""
    global _refusals
    _refusals += 1
    if _refusals == 1:
        log.warn("fast path unavailable, relaying in Python: {reason}", reason=reason)
    else:
        log.debug("fast path unavailable: {reason}", reason=reason)


def transportEligible(transport: Any) -> bool:
    """True for a plain TCP transport (not TLS) whose write buffer is empty."""
    if getattr(transport, "TLS", False) or not hasattr(transport, "socket"):
        return False
    if getattr(transport, "disconnecting", False) or not getattr(transport, "connected", False):
        return False
    return not transport.dataBuffer and not getattr(transport, "_tempDataBuffer", None)


class _Pump:
    """One direction: source socket -> pipe -> destination socket."""

    def __init__(
        self,
        relay: SpliceRelay,
        source: _End,
        sink: _End,
        count: Callable[[int], None],
        pipe: tuple[int, int],
        head: bytes = b"",
    ):
        self._relay = relay
        self.source = source
        self.sink = sink
        self._count = count
        #: Bytes read in user mode and not yet written: they go out before any spliced.
        self.head = head
        self._readFd, self._writeFd = pipe
        self.pending = 0
        self.eof = False
        self.done = False

    def pull(self) -> None:
        """The source is readable: move what it has through the pipe."""
        for _ in range(_ROUNDS):
            try:
                moved = os.splice(
                    self.source.fileno(), self._writeFd, PIPE_SIZE - self.pending, flags=_FLAGS
                )
            except BlockingIOError:
                break
            if moved == 0:
                self.eof = True
                self.source.stopReadingFor(self)
                break
            self.pending += moved
            self._count(moved)
            if not self.push():
                return
        if self.eof and self.pending == 0:
            self._finish()

    def push(self) -> bool:
        """Drain the pipe into the sink; False when the sink is full (wait to write)."""
        while self.head:
            try:
                sent = self.sink.socket.send(self.head)
            except BlockingIOError:
                self.source.stopReadingFor(self)
                self.sink.startWritingFor(self)
                return False
            self.head = self.head[sent:]
        while self.pending:
            try:
                moved = os.splice(self._readFd, self.sink.fileno(), self.pending, flags=_FLAGS)
            except BlockingIOError:
                self.source.stopReadingFor(self)
                self.sink.startWritingFor(self)
                return False
            self.pending -= moved
        self.sink.stopWritingFor(self)
        if self.eof:
            self._finish()
        else:
            self.source.startReadingFor(self)
        return True

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        self.source.stopReadingFor(self)
        self.sink.stopWritingFor(self)
        try:
            self.sink.socket.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._relay._pumpDone()

    def close(self) -> None:
        for fd in (self._readFd, self._writeFd):
            try:
                os.close(fd)
            except OSError:
                pass


@implementer(IReadWriteDescriptor)
class _End:
    """One socket, registered with the reactor in place of its Twisted transport."""

    def __init__(self, relay: SpliceRelay, transport: Any) -> None:
        self._relay = relay
        self.transport = transport
        self.socket: socket.socket = transport.socket
        self.reading: _Pump | None = None
        self.writing: _Pump | None = None

    def fileno(self) -> int:
        # Asked of the socket each time, never remembered: once it is closed this is
        # -1, so neither the reactor nor a pump can act on a descriptor number that a
        # new socket (another session's listener or connection) has taken since.
        fd: int = self.socket.fileno()
        return fd

    def logPrefix(self) -> str:
        return "SpliceRelay"

    def doRead(self) -> None:
        if self.reading is not None:
            self._relay._guard(self.reading.pull)

    def doWrite(self) -> None:
        if self.writing is not None:
            self._relay._guard(self.writing.push)

    def connectionLost(self, reason: Failure) -> None:
        # The reactor saw the socket hang up or fail and has dropped it already: the
        # pumps cannot go on, and the owner must hear of it.
        self.reading = self.writing = None
        self._relay._lostByReactor(reason)

    def startReadingFor(self, pump: _Pump) -> None:
        if self.reading is None and not pump.eof and not self._relay.stopped:
            self.reading = pump
            self._relay.reactor.addReader(self)

    def stopReadingFor(self, pump: _Pump) -> None:
        if self.reading is pump:
            self.reading = None
            self._relay.reactor.removeReader(self)

    def startWritingFor(self, pump: _Pump) -> None:
        if self.writing is None and not self._relay.stopped:
            self.writing = pump
            self._relay.reactor.addWriter(self)

    def stopWritingFor(self, pump: _Pump) -> None:
        if self.writing is pump:
            self.writing = None
            self._relay.reactor.removeWriter(self)

    def release(self) -> None:
        if self.reading is not None:
            self._relay.reactor.removeReader(self)
        if self.writing is not None:
            self._relay.reactor.removeWriter(self)
        self.reading = self.writing = None


class SpliceRelay:
    """Takes two connected plain TCP transports away from Twisted's reading and writing
    and pumps between them with splice(2).

    When both directions have ended, or on a socket error, it hands the sockets back
    and calls C{onEnd(error)} (None for a clean end); the owner then closes the
    transports the ordinary way, so every close event still happens.
    """

    def __init__(
        self,
        reactor: Any,
        clientTransport: Any,
        serverTransport: Any,
        countFromClient: Callable[[int], None],
        countFromServer: Callable[[int], None],
        onEnd: Callable[[str | None], None],
        fromClient: bytes = b"",
        fromServer: bytes = b"",
    ) -> None:
        pipes = [openPipe()]
        try:
            pipes.append(openPipe())
        except PipeUnavailable:
            os.close(pipes[0][0])
            os.close(pipes[0][1])
            raise
        self.reactor = reactor
        self.stopped = False
        self._onEnd = onEnd
        for transport in (clientTransport, serverTransport):
            transport.stopReading()
            transport.stopWriting()
        self._client = _End(self, clientTransport)
        self._server = _End(self, serverTransport)
        self._pumps = (
            _Pump(self, self._client, self._server, countFromClient, pipes[0], fromClient),
            _Pump(self, self._server, self._client, countFromServer, pipes[1], fromServer),
        )
        for pump in self._pumps:
            if pump.head:
                # Sent first; reading resumes once it is out.
                self.reactor.callLater(0, self._guard, pump.push)
            else:
                pump.source.startReadingFor(pump)

    def stop(self) -> None:
        """Stop pumping (the owner is closing); the pipes are released."""
        if self.stopped:
            return
        self.stopped = True
        self._client.release()
        self._server.release()
        for pump in self._pumps:
            pump.close()

    def _lostByReactor(self, reason: Failure) -> None:
        if self.stopped:
            return
        self.stop()
        self._onEnd(f"connection lost on the fast path: {reason.getErrorMessage()}")

    def _pumpDone(self) -> None:
        if all(pump.done for pump in self._pumps):
            self.stop()
            self._onEnd(None)

    def _guard(self, step: Callable[[], object]) -> None:
        if self.stopped:
            return
        try:
            step()
        except OSError as e:
            reason = errno.errorcode.get(e.errno or 0, str(e.errno))
            self.stop()
            self._onEnd(f"socket error on the fast path: {reason} ({e.strerror})")
