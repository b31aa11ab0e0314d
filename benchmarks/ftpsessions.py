"""c. FTP sessions per second: log in, EPSV, RETR 1 MiB, QUIT, 16 clients at once."""

from __future__ import annotations

import json
import time
from functools import partial

from benchmarks.context import (
    SMALL_FILE,
    SMALL_SIZE,
    WORKERS,
    Context,
    gatewayPid,
    rotated,
)
from benchmarks.procs import (
    STEAL_POLICY,
    Proc,
    busyPercent,
    leastStolen,
    machineTicks,
    pythonProc,
    stealNote,
    stealTicks,
    stolenPercent,
    treeCpuSeconds,
)
from benchmarks.report import Column, Section

DIRECT = "direct to vsftpd"
FAST = "via fwx ftp, fast path"
USER = "via fwx ftp, user mode"
FAST_WORKERS = f"via fwx ftp, fast path, {WORKERS} workers, shared socket"
FAST_REUSEPORT = f"via fwx ftp, fast path, {WORKERS} workers, reuseport"
#: Driver processes; the clients are threads spread over them.
DRIVERS = 4

COLUMNS = [
    Column("rate", "sessions/s", 1),
    Column("rate", "ratio", ratio=True),
    Column("gatewayCpuMs", "gateway CPU ms/session", 2),
    Column("gatewayBusy", "gateway CPU % of a core"),
    Column("driverBusy", "driver CPU % (all processes)"),
    Column("machineBusy", "machine CPU busy %"),
    Column("stolen", "CPU stolen by the host %"),
    Column("p50", "p50 ms", 1),
    Column("p99", "p99 ms", 1),
]


def measure(ctx: Context, port: int, pid: int | None) -> dict[str, float]:
    startAt = time.time() + 0.5
    drivers: list[Proc] = []
    perDriver = [ctx.ftpClients // DRIVERS + (i < ctx.ftpClients % DRIVERS) for i in range(DRIVERS)]
    for index, clients in enumerate(c for c in perDriver if c):
        first = 100 + index * 16
        drivers.append(
            pythonProc(
                f"ftp-{port}-{index}",
                ctx.logDir,
                "ftp",
                "--port",
                str(port),
                "--clients",
                str(clients),
                "--duration",
                str(ctx.duration),
                "--warmup",
                str(ctx.warmup),
                "--max-sessions",
                str(int(2000 * (ctx.duration + ctx.warmup))),
                "--path",
                SMALL_FILE,
                "--size",
                str(SMALL_SIZE),
                "--sources",
                f"127.0.0.{first}-127.0.0.{first + 15}",
                "--start-at",
                str(startAt),
                pipes=True,
            ).start()
        )
    try:
        before = after = 0.0
        windowStart = startAt + ctx.warmup
        time.sleep(max(0.0, windowStart - time.time()))
        ticksBefore = machineTicks()
        stealBefore = stealTicks()
        if pid:
            before = treeCpuSeconds(pid)
        time.sleep(max(0.0, windowStart + ctx.duration - time.time()))
        if pid:
            after = treeCpuSeconds(pid)
        ticksAfter = machineTicks()
        stealAfter = stealTicks()
        reports = [json.loads(d.output(ctx.warmup + ctx.duration + 60.0) or "{}") for d in drivers]
    finally:
        for driver in drivers:
            driver.stop()
    completed = sum(r.get("completed", 0) for r in reports)
    errors: dict[str, int] = {}
    for report in reports:
        for kind, count in report.get("errors", {}).items():
            errors[kind] = errors.get(kind, 0) + count
    result: dict[str, float] = {
        "rate": completed / ctx.duration,
        # Driver CPU covers its whole life (start-up included): an upper bound.
        "driverBusy": 100 * sum(r.get("cpu", 0.0) for r in reports) / (ctx.duration + ctx.warmup),
        "errors": float(sum(errors.values())),
        "machineBusy": busyPercent(ticksBefore, ticksAfter),
        "stolen": stolenPercent(stealBefore, stealAfter),
    }
    p50s = [r["p50"] for r in reports if r.get("p50") is not None]
    p99s = [r["p99"] for r in reports if r.get("p99") is not None]
    if p50s:
        result["p50"] = 1000 * sorted(p50s)[len(p50s) // 2]
    if p99s:
        result["p99"] = 1000 * max(p99s)
    if pid and completed:
        result["gatewayCpuMs"] = 1000 * (after - before) / completed
        result["gatewayBusy"] = 100 * (after - before) / ctx.duration
    if errors:
        ctx.progress(f"  errors: {errors}")
    return result


def run(ctx: Context) -> Section:
    section = Section(
        "ftp",
        f"c. FTP sessions per second, {ctx.ftpClients} concurrent clients "
        "(log in, TYPE I, EPSV, RETR 1 MiB, QUIT)",
        COLUMNS,
        "rate",
    )
    for name in (DIRECT, FAST, USER, FAST_WORKERS, FAST_REUSEPORT):
        if ctx.wants(name, reference=name == DIRECT):
            section.row(name, None if name == DIRECT else DIRECT)
    section.notes += [
        f"Driver: Python ftplib (EPSV), {ctx.ftpClients} client threads in {DRIVERS} "
        "processes, each running sessions back to back; cheaper than a curl process per "
        "session (a fork+exec each on the same 2 cores).",
        f"Each run: {ctx.warmup:g} s warm-up, then {ctx.duration:g} s counted.",
        "vsftpd: the tests' fixture (seccomp sandbox, one process per session), "
        "log_ftp_protocol=NO.",
        f"{FAST_WORKERS}: --workers {WORKERS} --worker-sockets shared, processes sharing "
        "the listening socket; its gateway CPU is the sum over them (% of a core may pass "
        f"100). {FAST_REUSEPORT}: --worker-sockets reuseport, an SO_REUSEPORT socket per "
        "process and a slice of the port range each.",
        STEAL_POLICY,
    ]
    server = ctx.vsftpd()
    if isinstance(server, str):
        for row in section.rows:
            row.status = server
        return section
    targets: list[tuple[str, int, int | None]] = [(DIRECT, server.port, None)]
    workersOption = ("--workers", str(WORKERS), "--worker-sockets")
    gateways = (
        (FAST, True, ()),
        (USER, False, ()),
        (FAST_WORKERS, True, (*workersOption, "shared")),
        (FAST_REUSEPORT, True, (*workersOption, "reuseport")),
    )
    for name, fast, extra in gateways:
        if not ctx.wants(name):
            continue
        gateway = ctx.gateway("ftp", server.address, fast, extra)
        targets.append((name, gateway.address[1], gatewayPid(gateway)))
    for runIndex in range(ctx.runs):
        for name, port, pid in rotated(targets, runIndex):
            result, stolen = leastStolen(partial(measure, ctx, port, pid), ctx.progress, name)
            row = section.row(name)
            for metric, value in result.items():
                row.add(metric, value)
            if result.get("errors"):
                row.note(f"{int(result['errors'])} failed sessions in run {runIndex + 1}")
            stolenNote = stealNote(runIndex, stolen)
            if stolenNote:
                row.note(stolenNote)
            ctx.progress(
                f"ftp run {runIndex + 1}/{ctx.runs}: {name}: {result['rate']:,.1f} sessions/s"
                + (
                    f", gateway {result['gatewayCpuMs']:.2f} ms/session"
                    if "gatewayCpuMs" in result
                    else ""
                )
                + f", stolen {result['stolen']:.0f}%"
            )
    return section


__all__ = ["DIRECT", "FAST", "FAST_REUSEPORT", "FAST_WORKERS", "USER", "measure", "run"]
