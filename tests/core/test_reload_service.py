"""FirewallService.reload in process: all or nothing, ports kept, opened or closed."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import pytest_twisted
import support
from support import LOCAL, Network, RecordingFilter
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ServerFactory

from fwxtwisted.app.config import ListenerConfig
from fwxtwisted.app.primary import BoundListener
from fwxtwisted.app.service import FirewallService, ListenError
from fwxtwisted.permissions.gateway import Gateway
from fwxtwisted.settings import GatewaySettings

net = support.net


def bound(name: str, listen: str, **kwargs: Any) -> BoundListener:
    recording = RecordingFilter()
    return BoundListener(ListenerConfig(name, recording.name, listen, **kwargs), recording, None)


class Service(FirewallService):
    """Records every port it opens."""

    opened: list[IListeningPort]

    def _listenOnEndpoint(
        self, index: int, listener: BoundListener, factory: ServerFactory
    ) -> Deferred[IListeningPort]:
        d = super()._listenOnEndpoint(index, listener, factory)
        return d.addCallback(self._record)

    def _record(self, port: IListeningPort) -> IListeningPort:
        self.__dict__.setdefault("opened", []).append(port)
        return port


def sleep(seconds: float) -> Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)


def start(net: Network, *listeners: BoundListener) -> Service:
    service = Service(Gateway(reactor, GatewaySettings()), listeners)
    service.startService()
    net._services.append(service)
    return service


@pytest_twisted.ensureDeferred
async def test_a_failed_reload_closes_what_it_opened_and_changes_nothing(net: Network) -> None:
    service = start(net, bound("a", f"tcp:0:interface={LOCAL}"))
    factories, ports, settings = (
        list(service.factories),
        list(service.ports),
        service.gateway.settings,
    )
    with socket.socket() as taken:
        taken.bind((LOCAL, 0))
        taken.listen(1)
        listeners = [
            bound("b", f"tcp:0:interface={LOCAL}:backlog=7"),
            bound("c", f"tcp:{taken.getsockname()[1]}:interface={LOCAL}"),
        ]
        with pytest.raises(ListenError, match=r"listener c\): .*in use"):
            await service.reload(listeners, GatewaySettings(connectTimeout=1.0))
    await sleep(0.05)  # Twisted closes a port a reactor turn later
    assert len(service.opened) == 2 and not service.opened[1].connected  # type: ignore[attr-defined]
    assert (service.factories, service.ports) == (factories, ports)
    assert service.gateway.settings is settings
    assert ports[0].connected  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_same_endpoint_keeps_its_port_and_factory(net: Network) -> None:
    listen = f"tcp:0:interface={LOCAL}"
    service = start(net, bound("a", listen), bound("gone", f"tcp:0:interface={LOCAL}"))
    port, factory, gone = service.ports[0], service.factories[0], service.ports[1]
    new = GatewaySettings(connectTimeout=2.0, portRanges={"*": (30000, 30010)})
    summary = await service.reload([bound("renamed", listen, maxSessions=3)], new)
    assert str(summary) == "changed renamed; removed gone"
    assert service.ports == [port] and service.factories == [factory]
    assert factory.listener.config.maxSessions == 3
    await sleep(0.05)
    assert not gone.connected  # type: ignore[attr-defined]
    assert service.gateway.settings is new
    assert service.gateway.ports.rangeFor("127.0.0.1") == (30000, 30010)


@pytest_twisted.ensureDeferred
async def test_a_bad_endpoint_description_is_a_refusal(net: Network) -> None:
    service = start(net, bound("a", f"tcp:0:interface={LOCAL}"))
    with pytest.raises(ListenError, match="listener b"):
        await service.reload([bound("b", "nonsense:kind")], GatewaySettings())
    assert len(service.ports) == 1
