"""Reloader: SIGHUP re-reads the configuration file and runs it, all or nothing.

The new file is read, validated and bound to its filters, its new endpoints are
opened, and only then does anything change (L{FirewallService.reload}): a file that
fails any step is refused with one log line and the running configuration stays
whole.  Listeners whose endpoint stays keep their listening port; running sessions
finish under the configuration they started with.  Gateway-wide settings apply to
what is made from then on; C{workers}, C{worker_sockets} and C{metrics} need a
restart (logged, the running values kept).  With workers, the pool starts new workers
with the new configuration and the old ones finish their sessions and exit (see
workers.py).
"""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from fwxtwisted.app.build import bindListeners
from fwxtwisted.app.config import GatewayConfig, parseConfig, readConfigTable
from fwxtwisted.app.service import FirewallService, ListenError, ReloadSummary
from fwxtwisted.app.workers import WorkerPool
from fwxtwisted.errors import ConfigError
from fwxtwisted.interfaces import IFilter
from fwxtwisted.logs import Logger, setLogLevel

log = Logger()

#: Configuration keys read once at start: a reload logs their change and keeps them.
RESTART_KEYS = ("workers", "worker_sockets", "metrics", "kernel_udp")


def _settingKey(name: str) -> str:
    """The configuration key of a GatewaySettings field (connectTimeout: connect_timeout)."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


class Reloader(Service):
    """Installs the SIGHUP handler while running, and reloads on it.

    @param path: the configuration file, or None (a command-line gateway: nothing
        to re-read).
    """

    def __init__(
        self,
        reactor: Any,
        firewall: FirewallService,
        config: GatewayConfig,
        filters: Mapping[str, IFilter],
        path: str | None,
        pool: WorkerPool | None = None,
    ) -> None:
        self._reactor = reactor
        self._firewall = firewall
        self.config = config
        self._filters = filters
        self._path = path
        #: Told to replace its workers after a reload (set once it exists).
        self.pool = pool
        self._previous: Any = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._previous = signal.signal(signal.SIGHUP, self._signalled)

    def stopService(self) -> None:
        super().stopService()
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def _signalled(self, signum: int, frame: Any) -> None:
        self._reactor.callFromThread(self.reload)

    def reload(self) -> Deferred[bool]:
        """Re-read the file and run it; fires with whether it was taken."""
        path = self._path
        if path is None:
            log.info("SIGHUP: this gateway was configured on the command line: nothing to re-read")
            return succeed(False)
        try:
            table = readConfigTable(path)
            config = parseConfig(table, path)
            kept = self._keepRestartOnly(table, config)
            if kept:
                config = parseConfig(table, path)
            bound = bindListeners(config, self._filters)
        except ConfigError as e:
            self._refuse(str(e))
            return succeed(False)
        reloading = self._firewall.reload(bound, config.settings)
        result: Deferred[bool] = reloading.addCallbacks(
            self._committed,
            self._failed,
            callbackArgs=(config, table, kept),
        )
        return result

    def _keepRestartOnly(self, table: dict[str, object], config: GatewayConfig) -> list[str]:
        """Put the running values of L{RESTART_KEYS} into C{table}; what differed."""
        running = self.config
        kept = []
        if config.settings.workers != running.settings.workers:
            kept.append(f"workers {config.settings.workers} (running {running.settings.workers})")
            table["workers"] = running.settings.workers
        if config.settings.workerSockets != running.settings.workerSockets:
            kept.append(
                f"worker_sockets {config.settings.workerSockets} "
                f"(running {running.settings.workerSockets})"
            )
            table["worker_sockets"] = running.settings.workerSockets
        if config.settings.kernelUDP != running.settings.kernelUDP:
            # Its nftables table is made at start (with the privileges of the start).
            kept.append(
                f"kernel_udp {str(config.settings.kernelUDP).lower()} "
                f"(running {str(running.settings.kernelUDP).lower()})"
            )
            table["kernel_udp"] = running.settings.kernelUDP
        if config.metrics != running.metrics:
            kept.append(f"metrics {config.metrics} (running {running.metrics})")
            if running.metrics is None:
                table.pop("metrics", None)
            else:
                table["metrics"] = running.metrics
        return kept

    def _refuse(self, error: str) -> None:
        prefix = f"{self._path}: "
        if error.startswith(prefix):
            error = error[len(prefix) :]
        log.error(
            "reload of {path} refused, the running configuration stays: {error}",
            path=self._path,
            error=error,
        )

    def _failed(self, failure: Failure) -> bool:
        if failure.check(ListenError) is None:
            log.failure("reload of {path} failed", failure, path=self._path)
        else:
            self._refuse(failure.getErrorMessage())
        return False

    def _committed(
        self,
        summary: ReloadSummary,
        config: GatewayConfig,
        table: dict[str, object],
        kept: list[str],
    ) -> bool:
        old, self.config = self.config.settings, config
        settings = [
            _settingKey(f.name)
            for f in dataclasses.fields(config.settings)
            if getattr(old, f.name) != getattr(config.settings, f.name)
        ]
        setLogLevel(config.settings.logLevel)
        log.info(
            "reloaded {path}: {summary}; {settings}",
            path=self._path,
            summary=str(summary),
            settings=f"settings changed: {', '.join(settings)}" if settings else "same settings",
        )
        for what in kept:
            log.warn("reload of {path}: {what} needs a restart", path=self._path, what=what)
        if self.pool is not None:
            self.pool.reload(table, config.source, config.settings.shutdownGrace)
        return True
