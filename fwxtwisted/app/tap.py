"""twistd integration: C{twistd fwx} options and makeService."""

from __future__ import annotations

import sys
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.python import usage

from fwxtwisted.app.build import buildService
from fwxtwisted.app.config import GatewayConfig, parseConfig, readConfigTable
from fwxtwisted.app.demo import DemoOptions, DemoService
from fwxtwisted.app.registry import discoverFilters
from fwxtwisted.app.reload import Reloader
from fwxtwisted.app.reuseport import ReusePortGroup
from fwxtwisted.app.service import ListenError
from fwxtwisted.app.signals import endGrace, hurryOnSecondSignal
from fwxtwisted.app.workers import WorkerPool
from fwxtwisted.errors import ConfigError, oneLine
from fwxtwisted.logs import setLogLevel
from fwxtwisted.net.externals import unbindableAddress

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

    def parseOptions(self, options: list[str] | None = None) -> None:
        """A usage error is one line and a hint on stderr, then exit status 1 (twistd
        would print its whole help above it)."""
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            command = f"fwx {self.subCommand}" if self.subCommand else "fwx"
            sys.stderr.write(
                f"{command}: {oneLine(str(e))}\n{command}: try 'twistd {command} --help'\n"
            )
            raise SystemExit(1) from None

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


def checkExternalAddresses(config: GatewayConfig) -> None:
    """Refuse external addresses this machine cannot send from. @raise ConfigError."""
    for ip in config.settings.externalAddresses:
        why = unbindableAddress(ip)
        if why is not None:
            raise ConfigError(
                f"{config.source}: external_addresses: cannot send from {ip} ({why}): "
                "not an address of this machine?"
            )


class _CommandLineService(MultiService):
    """Turns a listener that cannot open into one line on stderr and exit status 1."""

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except ListenError as e:
            sys.stderr.write(f"fwx: {e}\n")
            raise SystemExit(1) from None

    def stopService(self) -> Any:
        from twisted.internet import reactor

        hurryOnSecondSignal(reactor, lambda: endGrace(self))
        return super().stopService()


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
        checkExternalAddresses(config)
        group = None
        if config.settings.workers > 1 and config.settings.workerSockets == "reuseport":
            from twisted.internet import reactor as groupReactor

            group = ReusePortGroup(groupReactor)
        firewall = buildService(
            config, options.filters, listen=group.listen if group is not None else None
        )
    except ConfigError as e:
        sys.stderr.write(f"fwx: {e}\n")
        raise SystemExit(1) from None
    setLogLevel(config.settings.logLevel)
    top = _CommandLineService()
    from twisted.internet import reactor as mainReactor

    # First: SIGHUP (re-read the file, see reload.py) is handled from before the
    # listeners open.
    reloader = Reloader(mainReactor, firewall, config, options.filters, options["config"])
    reloader.setServiceParent(top)
    firewall.setServiceParent(top)
    if config.metrics is not None:
        from twisted.internet import reactor as metricsReactor

        from fwxtwisted.app.metricsserver import metricsService

        # Before the workers start: they inherit its multiprocess directory.
        metricsService(metricsReactor, config).setServiceParent(top)
    pool = None
    if config.settings.workers > 1:
        from twisted.internet import reactor

        # Added after the firewall: it starts once the listeners are open, and is
        # stopped first (twistd stops services in reverse), in parallel with the drain.
        pool = WorkerPool(
            reactor,
            config.settings.workers,
            lambda: firewall.ports,
            table,
            source,
            config.settings.shutdownGrace,
            group,
        )
        pool.setServiceParent(top)
    reloader.pool = pool
    return top
