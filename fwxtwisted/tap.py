"""twistd integration: C{twistd fwx} options and makeService."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.python import usage

from fwxtwisted.config import GatewayConfig, parseConfig, readConfigTable
from fwxtwisted.demoservice import DemoOptions, DemoService
from fwxtwisted.errors import ConfigError
from fwxtwisted.gateway import Gateway
from fwxtwisted.interfaces import IFilter
from fwxtwisted.logs import setLogLevel
from fwxtwisted.registry import ProtocolRegistry, discoverFilters
from fwxtwisted.service import BoundListener, FirewallService, ListenError, ListenFunction
from fwxtwisted.workers import WorkerPool

DEMO_DESCRIPTION = "The FTP gateway on 127.0.0.1:2121 before an embedded FTP server."


class Options(usage.Options):
    """twistd fwx --config FILE, or twistd fwx FILTER [options] for a single listener."""

    synopsis = "[--config FILE | FILTER [options]]"
    longdesc = (
        "fwxtwisted application-level gateway. Either give a TOML configuration with "
        "--config, or a filter command for one listener; 'twistd fwx FILTER --help' "
        "lists that filter's options."
    )
    optParameters: list[list[Any]] = [
        ["config", "c", None, "TOML configuration file (listeners, filters, addresses)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self.filters = discoverFilters()

    @property
    def subCommands(self) -> list[tuple[str, None, Any, str]]:  # type: ignore[override]
        commands = []
        for name, filterPlugin in sorted(self.filters.items()):
            if filterPlugin.commandLineOptions() is not None:
                commands.append(
                    (name, None, filterPlugin.commandLineOptions, filterPlugin.description)
                )
        if "ftp" in self.filters:
            commands.append(("demo", None, DemoOptions, DEMO_DESCRIPTION))
        return commands

    def postOptions(self) -> None:
        if self.subCommand is None and not self["config"]:
            names = ", ".join(sorted(self.filters))
            raise usage.UsageError(f"give --config FILE, or a filter command ({names})")
        if self.subCommand is not None and self["config"]:
            raise usage.UsageError("give either --config or a filter command, not both")


def configFromOptions(options: Options) -> GatewayConfig:
    """The configuration the options name. @raise ConfigError."""
    return parseConfig(*configTableFromOptions(options))


def configTableFromOptions(options: Options) -> tuple[dict[str, object], str]:
    """The configuration table the options name, not validated yet, and its source."""
    if options.subCommand is not None:
        sub = options.subOptions
        table: dict[str, object] = dict(sub.gatewayTable())
        table["listeners"] = [sub.listenerConfig()]
        return table, "command line"
    return readConfigTable(options["config"]), options["config"]


def buildService(
    config: GatewayConfig,
    filters: Mapping[str, IFilter],
    reactor: Any = None,
    *,
    sessionPrefix: str = "s",
    listen: ListenFunction | None = None,
) -> FirewallService:
    """A FirewallService for C{config}. @raise ConfigError: unknown filter or option.

    @param sessionPrefix: starts every session id (a worker process has its own).
    @param listen: how listeners are opened (see L{FirewallService}).
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
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
            parsed = filterPlugin.parseOptions(listener.options, listener.upstream)
        except ConfigError as e:
            raise ConfigError(f"{where}.{e}") from None
        bound.append(BoundListener(listener, filterPlugin, parsed))
    gateway = Gateway(reactor, config.settings, sessionPrefix=sessionPrefix)
    return FirewallService(gateway, bound, listen)


class _CommandLineService(MultiService):
    """Turns a listener that cannot open into one line on stderr and exit status 1."""

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except ListenError as e:
            sys.stderr.write(f"fwx: {e}\n")
            raise SystemExit(1) from None


def makeService(options: Options) -> IService:
    """twistd's entry point: a config error is one line on stderr and exit status 1."""
    if options.subCommand == "demo":
        from twisted.internet import reactor

        top = _CommandLineService()
        DemoService(options.subOptions, options.filters, reactor).setServiceParent(top)
        return top
    try:
        table, source = configTableFromOptions(options)
        config = parseConfig(table, source)
        firewall = buildService(config, options.filters)
    except ConfigError as e:
        sys.stderr.write(f"fwx: {e}\n")
        raise SystemExit(1) from None
    setLogLevel(config.settings.logLevel)
    top = _CommandLineService()
    firewall.setServiceParent(top)
    if config.settings.workers > 1:
        from twisted.internet import reactor

        # Added after the firewall: it starts once the listeners are open, and is
        # stopped first (twistd stops services in reverse), in parallel with the drain.
        WorkerPool(
            reactor,
            config.settings.workers,
            lambda: firewall.ports,
            table,
            source,
            config.settings.shutdownGrace,
        ).setServiceParent(top)
    return top
