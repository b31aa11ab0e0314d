"""buildService: the FirewallService a validated configuration describes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fwxtwisted.app.config import GatewayConfig
from fwxtwisted.app.primary import BoundListener
from fwxtwisted.app.registry import ProtocolRegistry, discoverFilters
from fwxtwisted.app.service import FirewallService, ListenFunction
from fwxtwisted.errors import ConfigError
from fwxtwisted.interfaces import IFilter, ITransparentFilter
from fwxtwisted.permissions.gateway import Gateway


def buildService(
    config: GatewayConfig,
    filters: Mapping[str, IFilter],
    reactor: Any = None,
    *,
    sessionPrefix: str = "s",
    listen: ListenFunction | None = None,
    process: int = 0,
) -> FirewallService:
    """A FirewallService for C{config}. @raise ConfigError: unknown filter or option.

    @param sessionPrefix: starts every session id (a worker process has its own).
    @param listen: how listeners are opened (see L{FirewallService}).
    @param process: 0 for the gateway's own process, a worker's index for a worker:
        with C{worker_sockets = "reuseport"} it binds in its own slice of each port
        range.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    bound = bindListeners(config, filters)
    settings = config.settings
    portSlice = None
    if settings.workers > 1 and settings.workerSockets == "reuseport":
        portSlice = (process, settings.workers)
    gateway = Gateway(reactor, settings, sessionPrefix=sessionPrefix, portSlice=portSlice)
    return FirewallService(gateway, bound, listen)


def bindListeners(config: GatewayConfig, filters: Mapping[str, IFilter]) -> list[BoundListener]:
    """Each listener of C{config} with its filter and parsed options.

    @raise ConfigError: unknown filter or option.
    """
    registry = ProtocolRegistry()
    discoverFilters(filters.values(), registry)
    bound = []
    for index, listener in enumerate(config.listeners):
        where = f"{config.source}: listeners[{index}]"
        filterPlugin = filters.get(listener.filter)
        if filterPlugin is None:
            known = ", ".join(sorted(filters)) or "none"
            raise ConfigError(
                f"{where}.filter: unknown filter {listener.filter!r} (known: {known})"
            )
        try:
            if listener.transparent:
                parsed = _transparentOptions(filterPlugin, listener.options)
            else:
                parsed = filterPlugin.parseOptions(listener.options, listener.upstream)
        except ConfigError as e:
            raise ConfigError(f"{where}.{e}") from None
        bound.append(BoundListener(listener, filterPlugin, parsed))
    return bound


def _transparentOptions(filterPlugin: IFilter, options: Mapping[str, object]) -> object:
    transparent = ITransparentFilter(filterPlugin, None)
    if transparent is None:
        raise ConfigError(f"transparent: the {filterPlugin.name} filter has no transparent mode")
    return transparent.parseTransparentOptions(options)
