"""b. Primary connection rate: connect, 1 byte, half-close, read to EOF, close."""

from __future__ import annotations

import json
import time

from benchmarks.bulk import DIRECT, FAST, PORTFORWARD, USER
from benchmarks.context import LOOPBACK, WORKERS, Context, freePort, gatewayPid, rotated
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
    timeWaitCount,
    treeCpuSeconds,
    twistdProc,
    waitForTimeWait,
    waitListening,
)
from benchmarks.report import Column, Section

FAST_WORKERS = f"fwx tcp, fast path, {WORKERS} workers, shared socket"
FAST_REUSEPORT = f"fwx tcp, fast path, {WORKERS} workers, reuseport"
#: The default gateway but for its one info line per session: what that line costs.
FAST_QUIET = "fwx tcp, fast path, --log-level warn"

#: Load generator processes, and connections each keeps in flight.  32 in flight stays
#: under Twisted's default listen backlog (50), so no SYN is dropped at the relay.
GENERATORS = 2
CONCURRENCY = 16
#: Source IPs 127.0.0.2 .. 127.0.0.65, split between the generators.
SOURCES_PER_GENERATOR = 32
#: Wait before each measurement while more sockets than this sit in TIME_WAIT.  With
#: tens of thousands left by the run before, every connect (the generators' and the
#: relay's own toward the echo server) searches a crowded port space; and the kernel
#: reaps them about 60 s after they were made, in bulk.  With a ceiling of 5,000, 8 of
#: 9 relay runs in one benchmark got half a core or less (portforward as often as
#: ours); with 1,000 and a short settle, 4 of 9 got 70-90 %.  Not the whole cause.
TIME_WAIT_CEILING = 1_000
#: Seconds to let the reaping finish after the count falls below the ceiling.
TIME_WAIT_SETTLE = 2.0
#: A relay below this share of a core during a run was not the bottleneck: said in the
#: row's notes, since its rate then measures something else.
SATURATED_BUSY = 90.0

COLUMNS = [
    Column("rate", "conns/s"),
    Column("rate", "ratio", ratio=True),
    Column("relayCpuUs", "relay CPU µs/conn"),
    Column("relayBusy", "relay CPU % of a core"),
    Column("genBusy", "load generator CPU % (per process)"),
    Column("machineBusy", "machine CPU busy %"),
    Column("stolen", "CPU stolen by the host %"),
    Column("lost", "echo lost %", 1),
    Column("p99", "p99 ms", 1),
]


def measure(ctx: Context, port: int, pid: int | None, maxConnections: int) -> dict[str, float]:
    startAt = time.time() + 0.5
    generators: list[Proc] = []
    for index in range(GENERATORS):
        first = 2 + index * SOURCES_PER_GENERATOR
        sources = f"127.0.0.{first}-127.0.0.{first + SOURCES_PER_GENERATOR - 1}"
        generators.append(
            pythonProc(
                f"connect-{port}-{index}",
                ctx.logDir,
                "connect",
                "--port",
                str(port),
                "--concurrency",
                str(CONCURRENCY),
                "--duration",
                str(ctx.duration),
                "--warmup",
                str(ctx.warmup),
                "--max-connections",
                str(maxConnections),
                "--sources",
                sources,
                "--start-at",
                str(startAt),
                pipes=True,
            ).start()
        )
    try:
        relayBefore = relayAfter = 0.0
        windowStart = startAt + ctx.warmup
        time.sleep(max(0.0, windowStart - time.time()))
        ticksBefore = machineTicks()
        stealBefore = stealTicks()
        if pid:
            relayBefore = treeCpuSeconds(pid)
        time.sleep(max(0.0, windowStart + ctx.duration - time.time()))
        if pid:
            relayAfter = treeCpuSeconds(pid)
        ticksAfter = machineTicks()
        stealAfter = stealTicks()
        reports = [
            json.loads(g.output(ctx.warmup + ctx.duration + 30.0) or "{}") for g in generators
        ]
    finally:
        for generator in generators:
            generator.stop()
    completed = sum(r.get("completed", 0) for r in reports)
    echoed = sum(r.get("echoed", 0) for r in reports)
    errors: dict[str, int] = {}
    for report in reports:
        for kind, count in report.get("errors", {}).items():
            errors[kind] = errors.get(kind, 0) + count
    p99s = [r["p99"] for r in reports if r.get("p99") is not None]
    result: dict[str, float] = {
        "rate": completed / ctx.duration,
        "genBusy": 100 * sum(r.get("cpu", 0.0) for r in reports) / (GENERATORS * ctx.duration),
        "lost": 100 * (completed - echoed) / completed if completed else 0.0,
        "errors": float(sum(errors.values())),
        "machineBusy": busyPercent(ticksBefore, ticksAfter),
        "stolen": stolenPercent(stealBefore, stealAfter),
    }
    if p99s:
        result["p99"] = 1000 * max(p99s)
    if pid and completed:
        result["relayCpuUs"] = 1e6 * (relayAfter - relayBefore) / completed
        result["relayBusy"] = 100 * (relayAfter - relayBefore) / ctx.duration
    if errors:
        ctx.progress(f"  errors: {errors}")
    return result


def run(ctx: Context) -> Section:
    section = Section(
        "conn",
        "b. Primary connection rate through the tcp filter "
        "(connect, 1 byte, half-close, read to EOF, close)",
        COLUMNS,
        "rate",
    )
    names = (DIRECT, FAST, USER, FAST_WORKERS, FAST_REUSEPORT, FAST_QUIET, PORTFORWARD)
    for name in names:
        if ctx.wants(name, reference=name == PORTFORWARD):
            section.row(name, None if name == PORTFORWARD else PORTFORWARD)
    section.notes += [
        f"Load: {GENERATORS} generator processes (benchmarks/loadgen.py, selectors) with "
        f"{CONCURRENCY} connections each in flight, from source IPs 127.0.0.2-"
        f"127.0.0.{1 + GENERATORS * SOURCES_PER_GENERATOR} (IP_BIND_ADDRESS_NO_PORT); the "
        "upstream is an echo-and-close server (one process) that closes after reading EOF.",
        f"Each run: {ctx.warmup:g} s warm-up, then {ctx.duration:g} s counted. The direct row "
        "is the generator against the echo server alone: the ceiling of the load side.",
        "echo lost %: connections that ended without the echoed byte (a relay that does not "
        "pass half-close closes both sides on the client's FIN).",
        f"{FAST_WORKERS}: --workers {WORKERS} --worker-sockets shared, processes sharing "
        "the listening socket; its relay CPU is the sum over them (% of a core may pass "
        f"100). {FAST_REUSEPORT}: --worker-sockets reuseport, an SO_REUSEPORT socket per "
        "process and a slice of the port range each.",
        f"{FAST_QUIET}: the default gateway without its one info line per session (the "
        "session's summary, written by twistd's log observer); the difference from the "
        f"{FAST} row is what that line costs.",
        STEAL_POLICY,
    ]
    upstream = freePort(LOOPBACK)
    echo = pythonProc("echo", ctx.logDir, "echo", "--port", str(upstream))
    ctx.stack.enter_context(echo)
    waitListening(LOOPBACK, upstream, echo)
    targets: list[tuple[str, int, int | None]] = []
    if ctx.wants(DIRECT):
        targets.append((DIRECT, upstream, echo.pid))
    workersOption = ("--workers", str(WORKERS), "--worker-sockets")
    gateways = (
        (FAST, True, ()),
        (USER, False, ()),
        (FAST_WORKERS, True, (*workersOption, "shared")),
        (FAST_REUSEPORT, True, (*workersOption, "reuseport")),
        (FAST_QUIET, True, ("--log-level", "warn")),
    )
    for name, fast, extra in gateways:
        if not ctx.wants(name):
            continue
        gateway = ctx.gateway("tcp", (LOOPBACK, upstream), fast, extra)
        targets.append((name, gateway.address[1], gatewayPid(gateway)))
    port = freePort(LOOPBACK)
    portforward = twistdProc(
        "portforward-conn",
        ctx.logDir,
        "portforward",
        "-p",
        f"tcp:{port}:interface={LOOPBACK}",
        "-h",
        LOOPBACK,
        "-d",
        str(upstream),
    )
    ctx.stack.enter_context(portforward)
    waitListening(LOOPBACK, port, portforward, timeout=30.0)
    targets.append((PORTFORWARD, port, portforward.pid))

    # Bounded: at most 4000 conns/s per generator over the window.
    maxConnections = int(4000 * (ctx.duration + ctx.warmup))
    peakTimeWait = 0
    for runIndex in range(ctx.runs):
        for name, port, pid in rotated(targets, runIndex):

            def attempt(port: int = port, pid: int | None = pid) -> dict[str, float]:
                nonlocal peakTimeWait
                waiting = timeWaitCount()
                if waiting >= TIME_WAIT_CEILING:
                    ctx.progress(f"  {waiting} sockets in TIME_WAIT: waiting (at most 65 s)")
                    waitForTimeWait(TIME_WAIT_CEILING, 65.0)
                    time.sleep(TIME_WAIT_SETTLE)
                result = measure(ctx, port, pid, maxConnections)
                peakTimeWait = max(peakTimeWait, timeWaitCount())
                return result

            result, stolen = leastStolen(attempt, ctx.progress, name)
            row = section.row(name)
            for metric, value in result.items():
                row.add(metric, value)
            if name == DIRECT:
                # The echo server's CPU, not a relay's.
                row.samples.pop("relayCpuUs", None)
                row.samples.pop("relayBusy", None)
            if result.get("errors"):
                row.note(f"{int(result['errors'])} errors in run {runIndex + 1}")
            if name != DIRECT and result.get("relayBusy", 100.0) < SATURATED_BUSY:
                row.note(f"run {runIndex + 1}: relay at {result['relayBusy']:.0f}% of a core")
            stolenNote = stealNote(runIndex, stolen)
            if stolenNote:
                row.note(stolenNote)
            ctx.progress(
                f"conn run {runIndex + 1}/{ctx.runs}: {name}: {result['rate']:,.0f} conns/s"
                + (
                    f", relay {result['relayCpuUs']:.0f} µs/conn at {result['relayBusy']:.0f}%"
                    if "relayCpuUs" in result and name != DIRECT
                    else ""
                )
                + f", generators {result['genBusy']:.0f}%, lost {result['lost']:.1f}%"
                + f", stolen {result['stolen']:.0f}%"
            )
    section.notes.append(
        f"TIME_WAIT sockets machine-wide after a measurement, at most: {peakTimeWait:,} "
        "(net.ipv4.tcp_tw_reuse lets loopback connects reuse them)."
    )
    return section


__all__ = [
    "DIRECT",
    "FAST",
    "FAST_QUIET",
    "FAST_REUSEPORT",
    "FAST_WORKERS",
    "PORTFORWARD",
    "USER",
    "measure",
    "run",
]
