"""What one session summary line costs, written the way twistd writes its log.

    python benchmarks/logline.py [--lines N] [--runs N]

Emits the tcp filter's session line N times through twistd's text observer to a
LogFile in a temporary directory, once with Twisted's own Logger (the reference) and
once with the gateway's, alternating, and prints the median microseconds per line.
A warm loop: under load the same line costs about twice as much (docs/performance.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from twisted.logger import Logger as TwistedLogger  # noqa: E402
from twisted.logger import LogPublisher, textFileLogObserver  # noqa: E402
from twisted.python.logfile import LogFile  # noqa: E402

from fwxtwisted.logs import Logger  # noqa: E402
from fwxtwisted.permissions.closing import CLOSED_LINE  # noqa: E402

#: The fields of the session's line for a short connection.
FIELDS: dict[str, object] = {
    "fwx_event": "session.closed",
    "client": "127.0.0.5:40000",
    "server": "127.0.0.1:61001",
    "external": "127.0.0.1",
    "listener": "tcp-0",
    "reason": "normal close",
    "duration": 0.0021,
    "fromClient": 1,
    "fromServer": 1,
}


def perLine(logger: TwistedLogger, lines: int) -> float:
    """Microseconds per line for C{lines} lines through C{logger}."""
    started = time.perf_counter()
    for index in range(lines):
        logger.info(CLOSED_LINE, session=f"s{index}", **FIELDS)
    return 1e6 * (time.perf_counter() - started) / lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20_000, help="lines per run (20000)")
    parser.add_argument("--runs", type=int, default=5, help="runs per logger (5)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fwx-logline-") as directory:
        logFile = LogFile.fromFullPath(str(Path(directory) / "gateway.log"))
        publisher = LogPublisher(textFileLogObserver(logFile))
        loggers: dict[str, Callable[[], TwistedLogger]] = {
            "Twisted's Logger": lambda: TwistedLogger(
                "fwxtwisted.permissions.session", observer=publisher
            ),
            "fwxtwisted.logs.Logger": lambda: Logger(
                "fwxtwisted.permissions.session", observer=publisher
            ),
        }
        samples: dict[str, list[float]] = {name: [] for name in loggers}
        for make in loggers.values():
            perLine(make(), options.lines // 10)  # warm-up
        for _ in range(options.runs):
            for name, make in loggers.items():
                samples[name].append(perLine(make(), options.lines))
        logFile.close()
    reference = statistics.median(samples["Twisted's Logger"])
    print("| logger | µs per line | ratio | runs |")
    print("|---|---:|---:|---|")
    for name, values in samples.items():
        median = statistics.median(values)
        runs = ", ".join(f"{value:.1f}" for value in values)
        print(f"| {name} | {median:.1f} | {median / reference:.2f}× | {runs} |")
    print(
        f"\n{options.lines:,} lines a run, alternating, through twistd's text observer on a "
        "LogFile. The gateway's holding of summaries while it runs is not exercised here."
    )


if __name__ == "__main__":
    main()
