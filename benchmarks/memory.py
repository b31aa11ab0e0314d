"""d. Memory: the gateway's RSS growth per idle, logged-in FTP session."""

from __future__ import annotations

import json
import selectors
import time
from typing import Any

from benchmarks.context import LOOPBACK, Context, freePort, gatewayPid, startGateway
from benchmarks.procs import Proc, openFileLimit, pythonProc, rssKiB, waitListening
from benchmarks.report import Column, Section

FTP_ROW = "fwx ftp, idle logged-in sessions"
TCP_ROW = "fwx tcp, user mode (reference: no FTP filter)"
#: Sessions logging in at once: under Twisted's default listen backlog (50).  A burst
#: beyond the backlog strands clients: with SYN cookies their connect succeeds, the
#: gateway never accepts, and an FTP client waits for a greeting that never comes.
IN_FLIGHT = 32
#: Sessions opened and closed before the baseline, so first-use allocations
#: (imports, caches, the first log file writes) are not counted per session.
WARMUP_SESSIONS = 50

COLUMNS = [
    Column("perSession", "KiB per session", 1),
    Column("held", "sessions held"),
    Column("before", "RSS before, KiB"),
    Column("after", "RSS after, KiB"),
    Column("seconds", "seconds to open"),
]


def hold(ctx: Context, port: int, count: int, label: str) -> tuple[Proc, dict[str, Any]]:
    """Open `count` logged-in sessions; return the holder (still holding) and its report."""
    holder = pythonProc(
        f"hold-{label}-{port}",
        ctx.logDir,
        "hold",
        "--port",
        str(port),
        "--count",
        str(count),
        "--sources",
        "127.0.0.2-127.0.0.201",
        "--in-flight",
        str(IN_FLIGHT),
        "--timeout",
        "300",
        pipes=True,
    ).start()
    ready = selectors.DefaultSelector()
    ready.register(holder.stdout, selectors.EVENT_READ)
    if not ready.select(timeout=330.0):
        holder.stop()
        raise TimeoutError(f"{count} sessions not opened in 330 s")
    line = holder.stdout.readline().decode()
    return holder, json.loads(line or "{}")


def release(holder: Proc) -> None:
    """Close the holder's stdin: it closes its sessions and exits."""
    assert holder.process is not None and holder.process.stdin is not None
    holder.process.stdin.close()
    try:
        holder.wait(30.0)
    finally:
        holder.stop()


def measureOnce(ctx: Context, filterName: str, upstream: int) -> dict[str, float]:
    # FTP control connections never take the fast path (the filter reads them); the tcp
    # reference runs in user mode so that it is the same relay without the filter.
    with startGateway(filterName, (LOOPBACK, upstream), fastPath=filterName == "ftp") as gateway:
        pid = gatewayPid(gateway)
        port = gateway.address[1]
        limit = openFileLimit(pid)
        warm, _ = hold(ctx, port, WARMUP_SESSIONS, "warmup")
        release(warm)
        time.sleep(1.0)
        before = rssKiB(pid)
        holder, report = hold(ctx, port, ctx.sessions, filterName)
        try:
            time.sleep(1.0)
            after = rssKiB(pid)
        finally:
            release(holder)
    held = int(report.get("ready", 0))
    if report.get("failed") or report.get("stuck"):
        ctx.progress(f"  failed: {report.get('failed')}, stuck: {report.get('stuck')}")
    return {
        "held": float(held),
        "before": float(before),
        "after": float(after),
        "perSession": (after - before) / held if held else float("nan"),
        "seconds": float(report.get("seconds", 0.0)),
        "limit": float(limit.split("/")[0]) if limit.split("/")[0].isdigit() else 0.0,
    }


def run(ctx: Context, fileLimit: str) -> Section:
    section = Section(
        "memory",
        f"d. Memory: gateway RSS growth per idle FTP session at {ctx.sessions:,} sessions",
        COLUMNS,
        "perSession",
    )
    section.row(FTP_ROW)
    section.row(TCP_ROW)
    section.notes += [
        "Upstream: a minimal FTP server in benchmarks/loadgen.py (220, USER 331, PASS 230) "
        "that holds every session; the client logs each session in (USER/PASS) and keeps "
        "it open. RSS = VmRSS of the gateway process (/proc/PID/status), read before "
        f"(after {WARMUP_SESSIONS} sessions were opened and closed) and 1 s after the last "
        "session logged in. A fresh gateway per run.",
        f"Open files: {fileLimit}",
    ]
    upstream = freePort(LOOPBACK)
    greeter = pythonProc("greeter", ctx.logDir, "greeter", "--port", str(upstream))
    ctx.stack.enter_context(greeter)
    waitListening(LOOPBACK, upstream, greeter)
    limits: set[str] = set()
    for runIndex in range(ctx.runs):
        for name, filterName in ((FTP_ROW, "ftp"), (TCP_ROW, "tcp")):
            result = measureOnce(ctx, filterName, upstream)
            limits.add(f"{result.pop('limit'):.0f}")
            row = section.row(name)
            for metric, value in result.items():
                row.add(metric, value)
            if result["held"] < ctx.sessions:
                row.note(f"run {runIndex + 1}: only {result['held']:.0f} sessions held")
            ctx.progress(
                f"memory run {runIndex + 1}/{ctx.runs}: {name}: "
                f"{result['perSession']:.1f} KiB/session "
                f"({result['held']:.0f} sessions, {result['before']:.0f} -> "
                f"{result['after']:.0f} KiB)"
            )
    section.notes.append(
        "The gateway's own open-file limit (its /proc/PID/limits, inherited): "
        + ", ".join(sorted(limits))
    )
    return section
