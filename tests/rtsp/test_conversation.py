"""Tests for fwxtwisted.filters.rtsp.conversation: requests paired with responses by CSeq."""

from __future__ import annotations

import pytest

from fwxtwisted.filters.rtsp.conversation import PendingRequests, parseCSeq
from fwxtwisted.filters.rtsp.errors import RTSPProtocolError
from fwxtwisted.filters.rtsp.message import Headers, Request, Response


def request(method: str, cseq: str | None) -> Request:
    headers = Headers() if cseq is None else Headers([("CSeq", cseq)])
    return Request(method, "rtsp://127.0.0.1:8554/test/stream=0", headers=headers)


def response(cseq: str | None) -> Response:
    headers = Headers() if cseq is None else Headers([("CSeq", cseq)])
    return Response(status=200, headers=headers)


def test_matchByCSeq() -> None:
    pending: PendingRequests[str] = PendingRequests()
    setup = request("SETUP", "3")
    pending.add(setup, "stream=0")
    matched = pending.match(response("3"))
    assert matched is not None
    assert (matched.cseq, matched.method, matched.request, matched.context) == (
        3,
        "SETUP",
        setup,
        "stream=0",
    )


def test_matchedRequestRemoved() -> None:
    pending: PendingRequests[None] = PendingRequests()
    pending.add(request("OPTIONS", "1"))
    pending.match(response("1"))
    assert len(pending) == 0
    assert pending.match(response("1")) is None


def test_outOfOrderResponses() -> None:
    pending: PendingRequests[None] = PendingRequests()
    pending.add(request("SETUP", "3"))
    pending.add(request("SETUP", "4"))
    second = pending.match(response("4"))
    first = pending.match(response("3"))
    assert second is not None and first is not None
    assert (first.cseq, second.cseq) == (3, 4)


def test_unknownCSeqIsNone() -> None:
    pending: PendingRequests[None] = PendingRequests()
    pending.add(request("PLAY", "5"))
    assert pending.match(response("6")) is None
    assert len(pending) == 1


@pytest.mark.parametrize("cseq", [None, "", "x", "-1", "1.0", "99999999999"])
def test_responseWithoutValidCSeqIsNone(cseq: str | None) -> None:
    pending: PendingRequests[None] = PendingRequests()
    pending.add(request("PLAY", "5"))
    assert pending.match(response(cseq)) is None


def test_cseqLeadingZerosAndSpaces() -> None:
    pending: PendingRequests[None] = PendingRequests()
    pending.add(request("PLAY", "007"))
    assert pending.match(response(" 7 ")) is not None


@pytest.mark.parametrize("cseq", [None, "abc", "1 2", "\xb2"])
def test_requestWithoutValidCSeqRefused(cseq: str | None) -> None:
    with pytest.raises(RTSPProtocolError) as caught:
        PendingRequests[None]().add(request("PLAY", cseq))
    assert caught.value.status == 400


def test_duplicateCSeqRefused() -> None:
    pending: PendingRequests[None] = PendingRequests()
    pending.add(request("PLAY", "5"))
    with pytest.raises(RTSPProtocolError) as caught:
        pending.add(request("PAUSE", "5"))
    assert caught.value.status == 400


def test_fullAtLimit() -> None:
    pending: PendingRequests[None] = PendingRequests(limit=64)
    for cseq in range(63):
        pending.add(request("GET_PARAMETER", str(cseq)))
    assert not pending.full
    pending.add(request("GET_PARAMETER", "63"))
    assert pending.full


def test_addWhenFullRefused() -> None:
    pending: PendingRequests[None] = PendingRequests(limit=1)
    pending.add(request("OPTIONS", "1"))
    with pytest.raises(RTSPProtocolError) as caught:
        pending.add(request("OPTIONS", "2"))
    assert caught.value.status == 503


def test_notFullAfterMatch() -> None:
    pending: PendingRequests[None] = PendingRequests(limit=1)
    pending.add(request("OPTIONS", "1"))
    pending.match(response("1"))
    assert not pending.full


def test_clearReturnsInFlight() -> None:
    pending: PendingRequests[None] = PendingRequests()
    pending.add(request("SETUP", "1"))
    pending.add(request("PLAY", "2"))
    assert [item.method for item in pending.clear()] == ["SETUP", "PLAY"]
    assert len(pending) == 0


def test_parseCSeq() -> None:
    assert parseCSeq("42") == 42
    assert parseCSeq(None) is None
    assert parseCSeq("4 2") is None
