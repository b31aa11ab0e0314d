"""The gateway's Logger: Twisted's, with one level threshold for the whole process.

twistd's observers write every event they are given, debug included, and formatting
one costs about 70 µs: more than a short session's relaying.  Events below the
threshold are dropped before an event dictionary is even built.

A running gateway also holds its summaries (the one line per session, per FTP
transfer: events with an C{fwx_event}) for up to 50 ms and publishes them together.
Publishing many lines one after another runs the observer's code warm instead of
cold each time: holding them to the end of the reactor turn (a few sessions under
load) made one publication a third cheaper, and holding them 50 ms (a few hundred at
4,000 connections a second) takes another 4 % off a short connection's CPU.  Their
timestamps are when they were logged, and any other event of this Logger publishes
the held ones first, so the gateway's own lines keep their order; a line Twisted
logs itself may come before summaries up to 50 ms older.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from twisted.logger import LogEvent, LogLevel
from twisted.logger import Logger as _TwistedLogger

from fwxtwisted.metrics import hooks

#: Names accepted by --log-level and the log_level key, lowest first.
LEVEL_NAMES = ("debug", "info", "warn", "error", "critical")

_RANK = {LogLevel.levelWithName(name): rank for rank, name in enumerate(LEVEL_NAMES)}
_threshold = _RANK[LogLevel.info]
_DEBUG = _RANK[LogLevel.debug]


def setLogLevel(name: str) -> None:
    """Emit only events at C{name} or above from now on (the default is info).

    @raise ValueError: not one of L{LEVEL_NAMES}.
    """
    global _threshold
    if name not in LEVEL_NAMES:
        raise ValueError(f"log level {name!r} is not one of {', '.join(LEVEL_NAMES)}")
    _threshold = _RANK[LogLevel.levelWithName(name)]


def logLevel() -> str:
    """The name of the current threshold."""
    return LEVEL_NAMES[_threshold]


@functools.cache
def _system(namespace: str, level: LogLevel) -> str:
    """What Twisted's text format shows between brackets, made once per namespace and
    level instead of for every event."""
    return f"{namespace}#{level.name}"


class Logger(_TwistedLogger):
    """A Twisted Logger that drops events below the process's threshold, and renders
    the text of the events it keeps once, with str.format.

    Twisted's observers render the format with string.Formatter, in Python: half the
    cost of a session's one log line.  The event keeps every field and its original
    format (as C{fwx_format}); its C{log_format} becomes the rendered text, braces
    escaped.  A format str.format cannot render (Twisted's C{{f()}} calls) is left
    to Twisted.
    """

    def debug(self, format: str | None = None, **kwargs: object) -> None:
        # Called a few times per session and dropped at the default threshold: one
        # call and one keyword dictionary less than Twisted's debug, which calls emit.
        if _threshold <= _DEBUG:
            self.emit(LogLevel.debug, format, **kwargs)

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: object) -> None:
        if "fwx_event" in kwargs:
            # Metrics count every summary, whatever the log level keeps.
            hooks.observer.summary(kwargs)
        rank = _RANK.get(level)
        if rank is None:
            super().emit(level, format, **kwargs)  # Twisted reports the unknown level
            return
        if rank < _threshold:
            return
        if format is not None and "()" not in format:
            try:
                text = format.format(**kwargs)
            except (KeyError, IndexError, AttributeError, ValueError, TypeError):
                pass
            else:
                kwargs["fwx_format"] = format
                # A format without fields, and its flattening: Twisted's observers
                # then copy the text instead of running string.Formatter over it.
                kwargs["log_flattened"] = {}
                format = text.replace("{", "{{").replace("}", "}}")
        event: LogEvent = kwargs
        event.update(
            log_logger=self,
            log_level=level,
            log_namespace=self.namespace,
            log_source=self.source,
            log_format=format,
            log_time=time.time(),
        )
        if "log_system" not in event:
            event["log_system"] = _system(self.namespace, level)
        if "log_trace" in event:
            event["log_trace"].append((self, self.observer))
        if "fwx_event" in event and summaries.hold(self.observer, event):
            return
        summaries.flush()
        self.observer(event)


class SummaryBuffer:
    """Summary events held for a short while (see the module's docstring), while a
    gateway service runs.

    @ivar limit: held events past which they are published at once.
    @ivar delay: seconds the first of them is held at most.
    """

    limit = 256
    delay = 0.05

    def __init__(self) -> None:
        self._clock: Any = None
        self._users = 0
        self._held: list[tuple[Callable[[LogEvent], None], LogEvent]] = []
        self._flushing: Any = None

    def start(self, clock: Any) -> None:
        """Hold summaries from now on, publishing them L{delay} seconds after the first
        (C{clock.callLater})."""
        self._users += 1
        self._clock = clock

    def stop(self) -> None:
        """Publish what is held; the last user stopping ends the holding."""
        self._users = max(0, self._users - 1)
        self.flush()
        if not self._users:
            self._clock = None

    def hold(self, observer: Callable[[LogEvent], None], event: LogEvent) -> bool:
        """Keep C{event} for C{observer} for up to L{delay} seconds.

        @return: False when nothing is held (no gateway running): publish it now.
        """
        if self._clock is None:
            return False
        self._held.append((observer, event))
        if len(self._held) >= self.limit:
            self.flush()
        elif self._flushing is None:
            self._flushing = self._clock.callLater(self.delay, self._flushLater)
        return True

    def flush(self) -> None:
        """Publish every held event, in the order they were logged."""
        if self._flushing is not None and self._flushing.active():
            self._flushing.cancel()
        self._flushing = None
        while self._held:
            held, self._held = self._held, []
            for observer, event in held:
                observer(event)

    def _flushLater(self) -> None:
        self._flushing = None
        self.flush()


#: The process's one buffer: every gateway Logger publishes through it.
summaries = SummaryBuffer()
