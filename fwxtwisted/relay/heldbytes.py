"""HeldBytes: what a relay keeps for a leg that is not connected yet."""

from __future__ import annotations


class HeldBytes:
    """The bytes, and the half-close after them, held for one leg until it connects.

    @ivar size: bytes held.
    @ivar eof: True once a half-close is held after them.
    @ivar senderPaused: True once the peer sending them was paused because they passed
        the relay's limit; it is resumed when they are sent.
    """

    __slots__ = ("_chunks", "eof", "senderPaused", "size")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self.size = 0
        self.eof = False
        self.senderPaused = False

    def add(self, data: bytes) -> int:
        """Hold C{data} after what is held; returns the bytes held now."""
        self._chunks.append(data)
        self.size += len(data)
        return self.size

    def take(self) -> bytes:
        """The bytes held, in order, as one string; nothing is held after."""
        data = b"".join(self._chunks)
        self._chunks = []
        self.size = 0
        return data
