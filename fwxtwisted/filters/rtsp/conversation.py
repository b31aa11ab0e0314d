"""PendingRequests: forwarded requests awaiting their responses, paired by CSeq."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Generic, TypeVar

from fwxtwisted.filters.rtsp.errors import RTSPProtocolError
from fwxtwisted.filters.rtsp.message import Request, Response

_CSEQ = re.compile(r"[0-9]{1,10}\Z")

Context = TypeVar("Context")


def parseCSeq(value: str | None) -> int | None:
    """The CSeq number in a header value, or None when it is absent or not a number."""
    if value is None:
        return None
    value = value.strip(" \t")
    return int(value) if _CSEQ.match(value) else None


@dataclass(frozen=True)
class Pending(Generic[Context]):
    """A forwarded request and what the filter attached to it (a SETUP's track, say)."""

    cseq: int
    method: str
    request: Request
    context: Context | None = None


class PendingRequests(Generic[Context]):
    """The requests sent one way on a connection whose responses have not come back.

    One instance per direction: client requests answered by the server, and server
    requests (ANNOUNCE, SET_PARAMETER) answered by the client.  Responses may come in
    any order; each is paired by its CSeq.  At most C{limit} requests are in flight:
    when L{full}, the I/O layer stops reading requests from their sender.
    """

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self._pending: dict[int, Pending[Context]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def full(self) -> bool:
        """Whether C{limit} requests are in flight: no more may be added."""
        return len(self._pending) >= self.limit

    def add(self, request: Request, context: Context | None = None) -> Pending[Context]:
        """Record C{request}, about to be forwarded, with the filter's C{context}.

        @raise RTSPProtocolError: 400 when its CSeq is missing, not a number or already
            in flight (its response could not be told apart); 503 when L{full}.
        """
        cseq = parseCSeq(request.headers.get("CSeq"))
        if cseq is None:
            raise RTSPProtocolError(400, f"{request.method} without a valid CSeq")
        if cseq in self._pending:
            raise RTSPProtocolError(400, f"CSeq {cseq} is already in flight")
        if self.full:
            raise RTSPProtocolError(503, f"more than {self.limit} requests in flight")
        pending = Pending(cseq, request.method, request, context)
        self._pending[cseq] = pending
        return pending

    def match(self, response: Response) -> Pending[Context] | None:
        """Take out and return the request C{response} answers.

        @return: None when the response has no valid CSeq or names no request in
            flight (a stray or duplicate response: the filter drops it).
        """
        cseq = parseCSeq(response.headers.get("CSeq"))
        if cseq is None:
            return None
        return self._pending.pop(cseq, None)

    def clear(self) -> list[Pending[Context]]:
        """Forget every request in flight (the connection closed) and return them."""
        pending = list(self._pending.values())
        self._pending.clear()
        return pending
