"""Fakes for filter authors: FakeSession, its actions and datagram ports, for tests with no
network."""

from __future__ import annotations

from fwxtwisted.testing._actions import (
    DEFAULT_CLIENT,
    DEFAULT_EXTERNAL_IP,
    DEFAULT_INTERNAL,
    DEFAULT_UPSTREAM,
    FakeFirewallAction,
    FakeJoin,
)
from fwxtwisted.testing._calls import JoinCall, RedirectCall, UpstreamConnect
from fwxtwisted.testing._chain import AttachedDataFilter
from fwxtwisted.testing._datagrams import FakeDatagramPorts, SentDatagram
from fwxtwisted.testing._future import AllowCall
from fwxtwisted.testing._session import FakeSession

__all__ = [
    "AllowCall",
    "DEFAULT_CLIENT",
    "DEFAULT_EXTERNAL_IP",
    "DEFAULT_INTERNAL",
    "DEFAULT_UPSTREAM",
    "AttachedDataFilter",
    "FakeDatagramPorts",
    "FakeFirewallAction",
    "FakeJoin",
    "FakeSession",
    "JoinCall",
    "RedirectCall",
    "SentDatagram",
    "UpstreamConnect",
]
