"""Primary listeners get a listen backlog fit for bursts unless the endpoint names one."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from fwxtwisted.app.config import ListenerConfig
from fwxtwisted.app.primary import BoundListener
from fwxtwisted.app.service import DEFAULT_BACKLOG, FirewallService, withBacklog
from fwxtwisted.filters.tcp import tcpFilter
from fwxtwisted.permissions.gateway import Gateway


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("tcp:2121", "tcp:2121:backlog=1024"),
        ("tcp6:2121:interface=\\:\\:1", "tcp6:2121:interface=\\:\\:1:backlog=1024"),
        ("ssl:990:privateKey=k.pem", "ssl:990:privateKey=k.pem:backlog=1024"),
        ("tcp:2121:backlog=7", "tcp:2121:backlog=7"),
        ("unix:/run/fwx.sock", "unix:/run/fwx.sock"),
    ],
)
def test_description_gets_the_default_backlog_only_where_it_applies(
    description: str, expected: str
) -> None:
    assert withBacklog(description) == expected


@pytest.mark.parametrize(("listen", "backlog"), [("", DEFAULT_BACKLOG), (":backlog=7", 7)])
@pytest_twisted.ensureDeferred
async def test_the_listening_port_has_that_backlog(listen: str, backlog: int) -> None:
    config = ListenerConfig("b", "tcp", f"tcp:0:interface=127.0.0.1{listen}")
    service = FirewallService(Gateway(reactor), [BoundListener(config, tcpFilter, None)])
    service.startService()
    try:
        assert service.ports[0].backlog == backlog  # type: ignore[attr-defined]
    finally:
        await service.stopService()
