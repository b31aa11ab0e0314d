"""FilterChain without sockets: the order stages see bytes in, and where they end."""

from __future__ import annotations

from zope.interface.verify import verifyObject

from fwxtwisted.interfaces import Direction, IDataChannel
from fwxtwisted.relay.datafilter import PassThroughDataFilter
from fwxtwisted.relay.filterchain import ChainLink, FilterChain


class Tagging(PassThroughDataFilter):
    """Appends its tag to every chunk it passes on."""

    def __init__(self, tag: bytes) -> None:
        self.tag = tag

    def dataReceived(self, direction: Direction, data: bytes) -> None:
        super().dataReceived(direction, data + self.tag)


def chain() -> tuple[FilterChain, list[tuple[Direction, bytes]], list[str]]:
    delivered: list[tuple[Direction, bytes]] = []
    aborted: list[str] = []
    filters = FilterChain(lambda d, b: delivered.append((d, b)), lambda d: None, aborted.append)
    return filters, delivered, aborted


def test_the_link_is_a_data_channel() -> None:
    filters, _, _ = chain()
    assert verifyObject(IDataChannel, ChainLink(filters, PassThroughDataFilter()))


def test_client_bytes_go_up_the_priorities_server_bytes_down() -> None:
    filters, delivered, _ = chain()
    filters.attach(Tagging(b"b"), 5)
    filters.attach(Tagging(b"a"), 1)
    filters.attach(Tagging(b"c"), 5)
    filters.received(Direction.CLIENT_TO_SERVER, b">")
    filters.received(Direction.SERVER_TO_CLIENT, b"<")
    assert delivered == [
        (Direction.CLIENT_TO_SERVER, b">abc"),
        (Direction.SERVER_TO_CLIENT, b"<cba"),
    ]


def test_an_empty_chain_is_false_and_a_filled_one_true() -> None:
    filters, _, _ = chain()
    assert not filters
    filters.attach(PassThroughDataFilter(), 0)
    assert filters


def test_a_stage_closing_its_channel_aborts_the_relay() -> None:
    filters, _, aborted = chain()
    stage = PassThroughDataFilter()
    filters.attach(stage, 0)
    ChainLink(filters, stage).close("bad bytes")
    assert aborted == ["bad bytes"]
