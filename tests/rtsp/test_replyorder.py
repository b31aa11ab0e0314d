"""ResponseOrder: responses in request order, whoever answers first."""

from __future__ import annotations

import pytest

from fwxtwisted.filters.rtsp.replyorder import ResponseOrder


def test_a_later_response_waits_for_an_earlier_one() -> None:
    written: list[bytes] = []
    order = ResponseOrder(written.append)
    first, second = order.slot(), order.slot()
    second.fill(b"2")
    assert written == []
    first.fill(b"1")
    assert written == [b"1", b"2"]


def test_a_response_for_the_head_is_written_at_once() -> None:
    written: list[bytes] = []
    order = ResponseOrder(written.append)
    order.slot().fill(b"1")
    assert written == [b"1"] and len(order) == 0


def test_filling_twice_writes_once() -> None:
    written: list[bytes] = []
    order = ResponseOrder(written.append)
    slot = order.slot()
    slot.fill(b"1")
    slot.fill(b"again")
    assert written == [b"1"]


def test_slots_are_bounded() -> None:
    order = ResponseOrder(lambda data: None, limit=2)
    order.slot()
    order.slot()
    assert order.full
    with pytest.raises(OverflowError):
        order.slot()
