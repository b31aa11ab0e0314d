"""The one place the core reports to metrics: C{hooks.observer.EVENT(...)}.

The core calls the methods of L{observer} at a few points (a session opened, refused
or closed; permissions granted or refused; datagram ports opened; every firewall
notification of a session; every structured summary event logged; a worker process
ended).  Without metrics configured the observer is a L{NullObserver} whose methods do
nothing, so a gateway without C{--metrics} pays one call per such event.  This module
imports nothing of the gateway, so any module may import it without a cycle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class NullObserver:
    """What the core tells metrics; every method does nothing here.

    L{fwxtwisted.metrics.collect.GatewayMetrics} overrides them.  Arguments are the
    core's own objects (typed loosely: this module may not import them).
    """

    def sessionOpened(self, session: Any, listener: str, filterName: str) -> None:
        """A primary connection was accepted and its session started."""

    def sessionClosed(self, session: Any) -> None:
        """A session opened with L{sessionOpened} is closed (its primary relay is over)."""

    def sessionRefused(self, listener: str, filterName: str, reason: str) -> None:
        """A primary connection was refused before its session started.

        @param reason: C{max_sessions}, C{max_sessions_per_ip}, C{shutting_down},
            C{filter_error}.
        """

    def permissionsGranted(
        self, session: Any, actions: Sequence[Any], portRanges: Sequence[tuple[int, int] | None]
    ) -> None:
        """C{session} granted the permissions C{actions} (TCP or UDP redirects, or a
        join); C{portRanges}: the range of each port they bound (None: a port the
        filter named), one per redirect, or one per listening side of a join."""

    def permissionRefused(self, session: Any, transport: str, reason: str) -> None:
        """C{session} refused a filter's request for permissions.

        @param reason: C{ports_exhausted}, C{port_unavailable}, C{too_many_pending}.
        """

    def datagramPortsOpened(self, session: Any, ports: Any, portRange: tuple[int, int]) -> None:
        """C{session} bound the sockets of C{ports} (an C{IDatagramPorts}) from C{portRange}."""

    def notification(self, session: Any, notification: Any) -> None:
        """Every C{FirewallNotification} of C{session}, before its filter sees it."""

    def summary(self, event: Mapping[str, Any]) -> None:
        """A structured summary event (C{fwx_event}: C{session.closed}, C{ftp.transfer},
        C{rtsp.session}) as logged, whether or not the log level keeps it."""

    def processEnded(self, pid: int) -> None:
        """A worker process of this gateway ended (its live gauges are gone)."""


#: The process's observer: a L{NullObserver} until metrics are installed.
observer: NullObserver = NullObserver()


def install(new: NullObserver) -> None:
    """Report to C{new} from now on."""
    global observer
    observer = new


def uninstall() -> None:
    """Report to nobody again."""
    global observer
    observer = NullObserver()
