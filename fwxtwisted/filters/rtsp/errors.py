"""RTSPProtocolError: a message or header that the gateway refuses, with the status to answer."""

from __future__ import annotations

from typing import Any


class RTSPProtocolError(ValueError):
    """Bytes or a header value that break RTSP, or that the gateway will not pass on.

    C{status} and C{reason} are what to answer the peer (400 Bad Request, 413 Request
    Entity Too Large, 461 Unsupported Transport, ...).  When a L{MessageParser} raises
    it, C{events} holds the events completed by the same C{feed} call before the
    error, so that none is lost; elsewhere it is empty.
    """

    def __init__(self, status: int, reason: str, events: list[Any] | None = None) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.events: list[Any] = [] if events is None else events
