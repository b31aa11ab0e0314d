"""ReplyQueue: keeps replies to the client in command order, whoever writes them."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class ReplySlot:
    """The place of one command's final reply in the client's reply stream."""

    __slots__ = ("done", "final", "early")

    def __init__(self) -> None:
        self.done = False
        self.final = b""
        self.early: list[bytes] = []


class ReplyQueue:
    """Replies come from the server (relayed or rewritten) and from the gateway itself
    (refusals, local answers), sometimes after an asynchronous step; the client must
    still see them in the order of its commands."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._slots: deque[ReplySlot] = deque()

    def reserve(self) -> ReplySlot:
        """A slot for the next command's reply, behind every earlier one."""
        slot = ReplySlot()
        self._slots.append(slot)
        return slot

    def preliminary(self, slot: ReplySlot, data: bytes) -> None:
        """A 1yz reply for C{slot}: out now if C{slot} is first, else when it is."""
        if self._slots and self._slots[0] is slot:
            self._write(data)
        else:
            slot.early.append(data)

    def complete(self, slot: ReplySlot, data: bytes) -> None:
        """The final reply for C{slot}; it goes out once every earlier slot has."""
        if slot.done:
            return
        slot.done = True
        slot.final = data
        self._flush()

    def local(self, data: bytes) -> None:
        """A reply the gateway gives itself, in order after every pending one."""
        self.complete(self.reserve(), data)

    def abandon(self) -> None:
        """The session is ending: write every reply already known, in command order,
        and give up on those still awaited (they will never come)."""
        while self._slots:
            slot = self._slots.popleft()
            for data in slot.early:
                self._write(data)
            slot.early.clear()
            if slot.done:
                self._write(slot.final)

    @property
    def pending(self) -> int:
        """How many replies are still awaited."""
        return len(self._slots)

    def _flush(self) -> None:
        while self._slots and self._slots[0].done:
            slot = self._slots.popleft()
            self._write(slot.final)
            if self._slots:
                head = self._slots[0]
                for data in head.early:
                    self._write(data)
                head.early.clear()
