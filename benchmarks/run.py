"""fwxtwisted benchmarks: every section side by side, one command, loopback only.

    python benchmarks/run.py [--quick] [--only bulk,conn,ftp,memory] [--runs N]
                             [--size 1G] [--output FILE.md]

Prints one markdown table per section (medians of --runs runs, every run listed) and
the floors; with --output the same markdown is written to FILE.  Progress goes to
stderr.  See benchmarks/README.md for what each row measures.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks import bulk, connrate, ftpsessions, memory, rtsp  # noqa: E402
from benchmarks.context import WORKERS, Context  # noqa: E402
from benchmarks.procs import (  # noqa: E402
    findTool,
    makeLogDir,
    raiseOpenFileLimit,
    stopAll,
    timeWaitCount,
    waitForTimeWait,
)
from benchmarks.report import Floor, Section, renderFloors, renderSection  # noqa: E402

SECTIONS = ("bulk", "conn", "ftp", "memory", "rtsp")
#: A section starts once the TIME_WAIT sockets of the one before are down to this
#: (the connection-rate section leaves some 60,000; every connect then pays for them).
SETTLED_TIME_WAIT = 2_000
#: The reference tools and the Debian 12 packages that provide them.
PACKAGES = {
    "iperf3": "iperf3",
    "socat": "socat",
    "haproxy": "haproxy",
    "vsftpd": "vsftpd",
    "curl": "curl",
    "setpriv": "util-linux",
}


def parseSize(text: str) -> int:
    """``1G``, ``256M``, ``64K`` (powers of 1024) or a number of bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)i?B?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1G, 256M)")
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[match.group(2).upper()]
    return int(match.group(1)) * scale


def parseOnly(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in chosen if part not in SECTIONS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown section(s) {', '.join(unknown) or '(none)'}; "
            f"choose from {', '.join(SECTIONS)}"
        )
    return chosen


def options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the fwxtwisted gateway against direct transfers and "
        "reference relays, on loopback."
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument(
        "--only",
        type=parseOnly,
        default=list(SECTIONS),
        help="comma-separated sections: bulk,conn,ftp,memory,rtsp (default: all)",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per row (default 3)")
    parser.add_argument(
        "--size", type=parseSize, default=None, help="bytes per bulk transfer (default 1G)"
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds counted per rate run (default 5)"
    )
    parser.add_argument(
        "--sessions", type=int, default=None, help="idle FTP sessions held (default 5000)"
    )
    parser.add_argument(
        "--ftp-clients", type=int, default=16, help="concurrent FTP clients (default 16)"
    )
    parser.add_argument(
        "--rows",
        default="",
        help="comma-separated parts of row names: only those rows (and each section's "
        "reference) are measured, e.g. 'workers' (default: every row)",
    )
    parser.add_argument("--output", type=Path, default=None, help="also write markdown here")
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the work directory (logs, files)"
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    quick = args.quick
    args.size = args.size or (64 << 20 if quick else 1 << 30)
    args.duration = args.duration or (1.5 if quick else 5.0)
    args.sessions = args.sessions or (500 if quick else 5000)
    return args


def floors(sections: dict[str, Section], sessions: int) -> list[Floor]:
    def medians(key: str, row: str, metric: str) -> float | None:
        section = sections.get(key)
        found = section.find(row) if section else None
        return found.median(metric) if found and not found.status else None

    def ratioFloor(
        key: str, row: str, ref: str, metric: str, minimum: float, unit: str
    ) -> Callable[[], tuple[bool | None, str]]:
        def check() -> tuple[bool | None, str]:
            mine, theirs = medians(key, row, metric), medians(key, ref, metric)
            if mine is None or not theirs:
                return None, "—"
            ratio = mine / theirs
            return ratio >= minimum, f"{ratio:.2f}× ({mine:,.1f} vs {theirs:,.1f} {unit})"

        return check

    def fastPath() -> tuple[bool | None, str]:
        speed = ratioFloor("bulk", bulk.FAST, bulk.PORTFORWARD, "mbps", 1.6, "MB/s")()
        cpu = medians("bulk", bulk.FAST, "cpu")
        if speed[0] is None or cpu is None:
            return None, "—"
        return bool(speed[0] and cpu <= 0.30), f"{speed[1]}; {cpu:.2f} CPU-s/GiB"

    def memoryFloor() -> tuple[bool | None, str]:
        perSession = medians("memory", memory.FTP_ROW, "perSession")
        held = medians("memory", memory.FTP_ROW, "held")
        if perSession is None or held is None:
            return None, "—"
        met = perSession <= 24 and held >= sessions
        return met, f"{perSession:.1f} KiB/session at {held:,.0f} sessions"

    def rtspCpuFloor(row: str) -> Callable[[], tuple[bool | None, str]]:
        def floor() -> tuple[bool | None, str]:
            perPacket = medians("rtsp", row, "relayUs")
            if perPacket is None:
                return None, "—"
            return perPacket <= 15.0, f"{perPacket:.2f} µs/packet"

        return floor

    return [
        Floor("fast path vs portforward", "≥ 1.6× MB/s at ≤ 0.30 CPU-s/GiB", fastPath),
        Floor(
            "user mode vs portforward",
            "≥ 1.0× MB/s",
            ratioFloor("bulk", bulk.USER, bulk.PORTFORWARD, "mbps", 1.0, "MB/s"),
        ),
        Floor(
            "tcp filter connection rate (default: fast path on)",
            "≥ 1.0× portforward",
            ratioFloor("conn", connrate.FAST, connrate.PORTFORWARD, "rate", 1.0, "conns/s"),
        ),
        Floor(
            f"tcp filter connection rate, {WORKERS} workers",
            "≥ 1.0× portforward",
            ratioFloor("conn", connrate.FAST_WORKERS, connrate.PORTFORWARD, "rate", 1.0, "conns/s"),
        ),
        Floor(
            f"tcp filter connection rate, {WORKERS} workers, reuseport",
            "≥ 1.0× portforward",
            ratioFloor(
                "conn", connrate.FAST_REUSEPORT, connrate.PORTFORWARD, "rate", 1.0, "conns/s"
            ),
        ),
        Floor(
            "FTP sessions/s through the gateway (fast path on)",
            "≥ 0.5× direct vsftpd",
            ratioFloor("ftp", ftpsessions.FAST, ftpsessions.DIRECT, "rate", 0.5, "sessions/s"),
        ),
        Floor(
            f"FTP sessions/s through the gateway, {WORKERS} workers",
            "≥ 0.5× direct vsftpd",
            ratioFloor(
                "ftp", ftpsessions.FAST_WORKERS, ftpsessions.DIRECT, "rate", 0.5, "sessions/s"
            ),
        ),
        Floor(
            f"FTP sessions/s through the gateway, {WORKERS} workers, reuseport",
            "≥ 0.5× direct vsftpd",
            ratioFloor(
                "ftp", ftpsessions.FAST_REUSEPORT, ftpsessions.DIRECT, "rate", 0.5, "sessions/s"
            ),
        ),
        Floor(
            "large RETR through the gateway (fast path on)",
            "≥ 0.6× direct",
            ratioFloor("retr", bulk.RETR_FAST, bulk.RETR_DIRECT, "mbps", 0.6, "MB/s"),
        ),
        Floor("RSS per idle FTP session", f"≤ 24 KiB at {sessions:,} sessions", memoryFloor),
        Floor(
            "RTP over UDP through an RTSP session's redirected pair",
            "≥ 0.7× socat's pkts/s at < 0.1 % loss",
            ratioFloor("rtsp", rtsp.FWX, rtsp.SOCAT, "pps", 0.7, "pkts/s"),
        ),
        Floor(
            "gateway CPU per relayed RTP datagram (at that rate), relayed in Python",
            "≤ 15 µs",
            rtspCpuFloor(rtsp.FWX),
        ),
        Floor(
            "RTP over UDP, --kernel-udp",
            "≥ 0.7× socat's pkts/s at < 0.1 % loss",
            ratioFloor("rtsp", rtsp.FWX_KERNEL, rtsp.SOCAT, "pps", 0.7, "pkts/s"),
        ),
        Floor(
            "gateway CPU per relayed RTP datagram (at that rate), --kernel-udp",
            "≤ 15 µs",
            rtspCpuFloor(rtsp.FWX_KERNEL),
        ),
    ]


def revision() -> str:
    """The commit measured, and whether fwxtwisted/ has uncommitted changes."""
    git = shutil.which("git")
    if git is None:
        return "unknown (no git)"
    try:
        head = subprocess.run(
            [git, "rev-parse", "--short", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            [git, "status", "--porcelain", "--", "fwxtwisted", "twisted"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head or 'unknown'}" + (" + uncommitted changes in fwxtwisted/" if dirty else "")


def environment(args: argparse.Namespace) -> str:
    load = Path("/proc/loadavg").read_text().split()[:3]
    missing = [tool for tool in PACKAGES if findTool(tool) is None]
    lines = [
        "## fwxtwisted benchmarks",
        "",
        f"- {time.strftime('%Y-%m-%d %H:%M:%S')}, {platform.node()}, Linux "
        f"{platform.release()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        f"- code measured: {revision()}",
        f"- runs per row: {args.runs}; bulk size {args.size:,} bytes; rate windows "
        f"{args.duration:g} s; {args.sessions:,} idle sessions"
        + ("; --quick" if args.quick else ""),
        f"- load average at start: {' '.join(load)} (other work on the machine shows up "
        "as noise: compare rows of the same run)",
    ]
    if missing:
        packages = sorted({PACKAGES[tool] for tool in missing})
        lines.append(
            f"- not installed: {', '.join(missing)} (Debian: apt-get install {' '.join(packages)})"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = options(argv)

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    # Each idle session holds 2 sockets in the gateway (client, server); the greeter and
    # the client hold one each.  Ask for 4 per session plus room for everything else.
    needed = 2 * args.sessions + 1024
    wanted = max(65536, 4 * args.sessions + 4096)
    softBefore, hardBefore = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = raiseOpenFileLimit(wanted)
    fileLimit = (
        f"RLIMIT_NOFILE of the benchmark process set from {softBefore}/{hardBefore} to "
        f"{soft}/{hard} (asked for {wanted}) before any process is started; the gateway "
        f"(via twistd), the FTP server and the clients inherit it. The gateway needs about "
        f"{needed:,} for {args.sessions:,} sessions."
    )
    if soft < wanted:
        fileLimit += " The hard limit cannot be raised here (no CAP_SYS_RESOURCE)" + (
            "; it is enough." if soft >= needed else ": TOO LOW, expect refused sessions."
        )
    logDir = makeLogDir()
    logDir.chmod(0o755)
    header = environment(args)
    print(header, flush=True)
    done: dict[str, Section] = {}
    order: list[Section] = []

    def emit(section: Section) -> None:
        if section.key in done:
            return
        done[section.key] = section
        order.append(section)
        print(renderSection(section), flush=True)

    try:
        with ExitStack() as stack:
            ctx = Context(
                logDir=logDir,
                stack=stack,
                runStack=stack,
                runs=args.runs,
                size=args.size,
                duration=args.duration,
                warmup=0.5 if args.quick else 1.0,
                sessions=args.sessions,
                ftpClients=args.ftp_clients,
                quick=args.quick,
                rows=tuple(part.strip() for part in args.rows.split(",") if part.strip()),
            )
            ctx.progress(f"work directory {logDir}; {fileLimit}")
            for key in args.only:
                # Relays and gateways live for their section; vsftpd (shared by bulk
                # and ftp) for the whole run.
                waiting = timeWaitCount()
                if waiting > SETTLED_TIME_WAIT:
                    ctx.progress(f"{key}: {waiting} sockets in TIME_WAIT: waiting (at most 65 s)")
                    waitForTimeWait(SETTLED_TIME_WAIT, 65.0)
                with ExitStack() as sectionStack:
                    ctx.stack = sectionStack
                    if key == "bulk":
                        emit(bulk.runTcpRelays(ctx))
                        emit(bulk.runRedirected(ctx))
                        emit(bulk.runFtps(ctx))
                    elif key == "conn":
                        emit(connrate.run(ctx))
                    elif key == "ftp":
                        emit(ftpsessions.run(ctx))
                        emit(bulk.runRedirected(ctx))
                    elif key == "memory":
                        emit(memory.run(ctx, fileLimit))
                    elif key == "rtsp":
                        emit(rtsp.runRate(ctx))
                        emit(rtsp.runSessions(ctx))
    except KeyboardInterrupt:
        print("interrupted: stopping every process started", file=sys.stderr)
        stopAll()
        return 130
    finally:
        stopAll()
        if not args.keep_logs:
            shutil.rmtree(logDir, ignore_errors=True)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    floorTable = renderFloors(floors(done, args.sessions)) + f"\nLoad average at the end: {load}\n"
    print(floorTable, flush=True)
    if args.output is not None:
        text = header + "\n" + "\n".join(renderSection(s) for s in order) + "\n" + floorTable
        args.output.write_text(text)
        print(f"written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
