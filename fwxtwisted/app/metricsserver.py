"""Serving C{/metrics}, and sharing the counts of worker processes.

One process (C{--workers 1}): the metrics live in a private registry of this process;
a scrape renders it.

Several (C{--workers N}): prometheus_client's multiprocess mode.  The gateway's
process makes a directory for this run and puts it in C{PROMETHEUS_MULTIPROC_DIR}
before prometheus_client is first imported; the workers inherit the variable (they
are started with the gateway's environment) and so write their values to files
there, one set per process id.  A scrape, served by the gateway's process only,
sums every process's files: counters of a worker that died are kept, its live
gauges (C{livesum}) are dropped when it ends (L{GatewayMetrics.processEnded}).  The
directory is removed after the reactor stops, once every worker has ended.

The page is a plain L{Resource}: C{render_GET} runs on the reactor thread and only
reads values (no collector reads gateway state), so a scrape costs one pass over
the metrics (and, in multiprocess mode, over a few small files per process).
prometheus_client's own Twisted resource renders in a thread pool, which this
avoids.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from fwxtwisted.app.config import GatewayConfig
from fwxtwisted.app.service import ListenError
from fwxtwisted.logs import Logger
from fwxtwisted.metrics import hooks

log = Logger()

#: The environment variable prometheus_client reads at import for multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def checkEndpoint(description: str) -> None:
    """@raise ValueError: C{description} is not a Twisted server endpoint string."""
    try:
        serverFromString(None, description)
    except Exception as e:  # Twisted raises ValueError, KeyError, TypeError...
        raise ValueError(str(e) or type(e).__name__) from None


def prepareMultiprocess() -> str:
    """Make this run's directory and name it in the environment (before
    prometheus_client is imported, which this checks).

    @raise RuntimeError: prometheus_client was imported already, in one-process mode.
    """
    if "prometheus_client.values" in sys.modules and MULTIPROC_ENV not in os.environ:
        raise RuntimeError("prometheus_client was imported before multiprocess mode was set")
    directory = tempfile.mkdtemp(prefix="fwx-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    return directory


class MetricsPage(Resource):
    """C{GET /metrics}: the Prometheus text format, rendered on the reactor thread."""

    isLeaf = True

    def __init__(self, registry: Any) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        page: bytes = generate_latest(self._registry)
        return page


class _QuietSite(Site):
    """No access log line per scrape, nor the factory's start and stop lines."""

    noisy = False

    def log(self, request: http.Request) -> None:
        pass


class MetricsService(Service):
    """Counts the gateway's events from its making and serves them at C{endpoint}.

    @param shared: the multiprocess directory (the gateway has workers), or None.
    """

    def __init__(
        self, reactor: Any, endpoint: str, config: GatewayConfig, shared: str | None
    ) -> None:
        from prometheus_client import CollectorRegistry, disable_created_metrics
        from prometheus_client.multiprocess import MultiProcessCollector

        from fwxtwisted.metrics.collect import GatewayMetrics

        disable_created_metrics()
        self._reactor = reactor
        self.endpoint = endpoint
        self.directory = shared
        self.registry = CollectorRegistry(auto_describe=True)
        if shared is None:
            self.metrics = GatewayMetrics(self.registry)
        else:
            MultiProcessCollector(self.registry, shared)
            self.metrics = GatewayMetrics(None, shared)
        self.metrics.portRanges(config.settings.portRanges)
        hooks.install(self.metrics)
        self.port: IListeningPort | None = None
        # Sessions draining at stop are still counted; the workers have ended by then.
        reactor.addSystemEventTrigger("after", "shutdown", self._removeDirectory)

    def privilegedStartService(self) -> None:
        if self.port is None:
            root = Resource()
            root.putChild(b"metrics", MetricsPage(self.registry))
            failures: list[Failure] = []
            d = serverFromString(self._reactor, self.endpoint).listen(_QuietSite(root))
            d.addCallbacks(self._listening, failures.append)
            if failures:
                raise ListenError(
                    f"cannot serve metrics on {self.endpoint!r}: {failures[0].getErrorMessage()}"
                )
            log.info(
                "metrics on {endpoint} at /metrics{shared}",
                endpoint=self.endpoint,
                shared=f" (workers count in {self.directory})" if self.directory else "",
            )
        super().privilegedStartService()

    def _listening(self, port: IListeningPort) -> None:
        self.port = port

    def stopService(self) -> Deferred[Any] | None:
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return None
        stopping: Deferred[Any] = maybeDeferred(port.stopListening)
        return stopping

    def _removeDirectory(self) -> None:
        hooks.uninstall()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def metricsService(reactor: Any, config: GatewayConfig) -> MetricsService:
    """The gateway process's metrics, for C{config} (whose C{metrics} is set)."""
    assert config.metrics is not None
    shared = prepareMultiprocess() if config.settings.workers > 1 else None
    return MetricsService(reactor, config.metrics, config, shared)


def recordInWorker(config: GatewayConfig) -> None:
    """A worker process counts into its gateway's directory (inherited in the
    environment); without one (not started by a gateway with metrics) it counts nothing."""
    if config.metrics is None or not os.environ.get(MULTIPROC_ENV):
        return
    from prometheus_client import disable_created_metrics

    from fwxtwisted.metrics.collect import GatewayMetrics

    disable_created_metrics()
    hooks.install(GatewayMetrics(None))
