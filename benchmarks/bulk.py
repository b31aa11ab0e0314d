"""a. Bulk data: iperf3 through each TCP relay, and FTP RETR through a redirected data
channel of the FTP gateway; MB/s and the relay's CPU-seconds per GiB."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.context import BIG_FILE, LOOPBACK, Context, freePort, gatewayPid
from benchmarks.procs import Proc, cpuSeconds, findTool, twistdProc, waitListening
from benchmarks.report import Column, Section
from tests.peers import PeerTimeout, curl

GIB = 1 << 30
DIRECT = "direct (no relay)"
FAST = "fwx tcp, fast path"
USER = "fwx tcp, user mode"
PORTFORWARD = "Twisted portforward"
SOCAT = "socat"
HAPROXY = "HAProxy, splice"
RETR_DIRECT = "FTP RETR direct (vsftpd)"
RETR_FAST = "FTP RETR via fwx ftp, fast path"
RETR_USER = "FTP RETR via fwx ftp, user mode"
FTPS_DIRECT = "FTPS RETR direct (vsftpd)"
FTPS_GATEWAY = "FTPS RETR via fwx ftp (TLS both sides)"

COLUMNS = [
    Column("mbps", "MB/s"),
    Column("cpu", "relay CPU-s per GiB", 2),
    Column("mbps", "MB/s ratio", ratio=True),
]


@dataclass
class Relay:
    """A relay under test: where the load generator connects, and whose CPU counts."""

    row: str
    port: int
    pid: int | None


def timeout(size: int) -> float:
    """Seconds one transfer of `size` bytes may take (at least 20 MB/s, plus setup)."""
    return 30.0 + size / 20e6


def waitReaped(pid: int, limit: float = 5.0) -> None:
    """Wait until `pid` has no children left (socat's per-connection child has been
    reaped, so its CPU is in cutime/cstime)."""
    deadline = time.monotonic() + limit
    path = Path(f"/proc/{pid}/task/{pid}/children")
    while time.monotonic() < deadline:
        try:
            if not path.read_text().strip():
                return
        except OSError:
            return
        time.sleep(0.05)


HAPROXY_CONFIG = """\
global
    maxconn 1000
defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    option splice-request
    option splice-response
frontend bench
    bind {host}:{port}
    default_backend upstream
backend upstream
    server s1 {host}:{upstream}
"""


def startReferences(ctx: Context, section: Section, upstream: int) -> list[Relay]:
    """Every TCP relay of the section, in front of `upstream` (an iperf3 server)."""
    relays = [Relay(DIRECT, upstream, None)]
    for row, fast in ((FAST, True), (USER, False)):
        gateway = ctx.gateway("tcp", (LOOPBACK, upstream), fast)
        relays.append(Relay(row, gateway.address[1], gatewayPid(gateway)))

    port = freePort(LOOPBACK)
    portforward = twistdProc(
        "portforward",
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
    relays.append(Relay(PORTFORWARD, port, portforward.pid))

    socat = findTool("socat")
    if socat is None:
        section.row(SOCAT, PORTFORWARD).status = "not installed"
    else:
        port = freePort(LOOPBACK)
        proc = Proc(
            "socat",
            [
                socat,
                f"TCP-LISTEN:{port},bind={LOOPBACK},reuseaddr,fork",
                f"TCP:{LOOPBACK}:{upstream}",
            ],
            ctx.logDir,
        )
        ctx.stack.enter_context(proc)
        waitListening(LOOPBACK, port, proc)
        relays.append(Relay(SOCAT, port, proc.pid))

    haproxy = findTool("haproxy")
    if haproxy is None:
        section.row(HAPROXY, PORTFORWARD).status = "not installed"
    else:
        port = freePort(LOOPBACK)
        config = ctx.logDir / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(host=LOOPBACK, port=port, upstream=upstream))
        proc = Proc("haproxy", [haproxy, "-db", "-f", str(config)], ctx.logDir)
        ctx.stack.enter_context(proc)
        waitListening(LOOPBACK, port, proc)
        relays.append(Relay(HAPROXY, port, proc.pid))
    return relays


def iperfOnce(ctx: Context, iperf: str, relay: Relay) -> tuple[dict[str, float], str]:
    """One `iperf3 -n SIZE` through `relay`: ({metric: value}, problem).

    Metrics: mbps, cpu (the relay's CPU-s per GiB), and senderCpu / receiverCpu (iperf3's
    own CPU-s per GiB, from its cpu_utilization_percent over the test)."""
    before = cpuSeconds(relay.pid) if relay.pid else None
    client = Proc(
        f"iperf3-client-{relay.port}",
        [iperf, "-c", LOOPBACK, "-p", str(relay.port), "-n", str(ctx.size), "-J"],
        ctx.logDir,
        pipes=True,
    ).start()
    try:
        output = client.output(timeout(ctx.size))
    finally:
        client.stop()
    if relay.pid:
        waitReaped(relay.pid)
    after = cpuSeconds(relay.pid) if relay.pid else None
    try:
        report = json.loads(output)
        end = report["end"]
        received = end["sum_received"]
        sent = end["sum_sent"]
        gib = sent["bytes"] / GIB
        result = {"mbps": received["bytes"] / received["seconds"] / 1e6}
        usage = end["cpu_utilization_percent"]
        result["senderCpu"] = usage["host_total"] / 100 * sent["seconds"] / gib
        result["receiverCpu"] = usage["remote_total"] / 100 * received["seconds"] / gib
    except (ValueError, KeyError, ZeroDivisionError, TypeError):
        problem = output.strip().splitlines()[-1:] or ["no output"]
        try:
            problem = [json.loads(output)["error"]]
        except (ValueError, KeyError, TypeError):
            pass
        return {}, f"iperf3 failed: {problem[0]}"
    if before is not None and after is not None:
        result["cpu"] = (after - before) / gib
    return result, ""


def runTcpRelays(ctx: Context) -> Section:
    section = Section(
        "bulk",
        f"a. Bulk data through TCP relays: iperf3 -n {ctx.size:,} bytes, one stream",
        [
            *COLUMNS,
            Column("senderCpu", "iperf3 sender CPU-s per GiB", 2),
            Column("receiverCpu", "iperf3 receiver CPU-s per GiB", 2),
        ],
        "mbps",
    )
    for name in (DIRECT, FAST, USER, PORTFORWARD, SOCAT, HAPROXY):
        section.row(name, None if name == PORTFORWARD else PORTFORWARD)
    section.notes += [
        "MB/s = 10^6 bytes/s as the iperf3 receiver counts it; CPU = utime+stime (+ reaped "
        "children, for socat's per-connection fork) of the relay process only, from "
        "/proc/PID/stat before and after, per GiB sent.",
        "fast path: splice(2) through pipes; user mode: --no-fast-path (bytes through Python).",
        "The load generator (iperf3 client and server) runs on the same 2 cores as the relay. "
        "Its own CPU per GiB (iperf3's cpu_utilization_percent) is what one end of a "
        "loopback TCP stream costs the kernel: a relay is both ends at once.",
    ]
    iperf = findTool("iperf3")
    if iperf is None:
        for row in section.rows:
            row.status = "not installed: iperf3"
        return section
    upstream = freePort(LOOPBACK)
    server = Proc("iperf3-server", [iperf, "-s", "-B", LOOPBACK, "-p", str(upstream)], ctx.logDir)
    ctx.stack.enter_context(server)
    waitListening(LOOPBACK, upstream, server)
    relays = startReferences(ctx, section, upstream)
    for run in range(ctx.runs):
        for relay in relays:
            row = section.row(relay.row)
            result, problem = iperfOnce(ctx, iperf, relay)
            if problem:
                row.note(problem)
            for metric, value in result.items():
                row.add(metric, value)
            mbps, cpu = result.get("mbps"), result.get("cpu")
            ctx.progress(
                f"bulk run {run + 1}/{ctx.runs}: {relay.row}: "
                f"{'failed' if mbps is None else f'{mbps:,.0f} MB/s'}"
                + (f", {cpu:.2f} CPU-s/GiB" if cpu is not None else "")
            )
    return section


# -- the redirected data channel: FTP RETR -------------------------------------------------


def retrOnce(
    ctx: Context, port: int, pid: int | None, curlArgs: tuple[str, ...] = ()
) -> tuple[float | None, float | None, str]:
    """curl RETR of big.bin from port: (MB/s, gateway CPU-s per GiB, problem)."""
    before = cpuSeconds(pid) if pid else None
    url = f"ftp://{LOOPBACK}:{port}/{BIG_FILE}"
    try:
        result = curl(
            [*curlArgs, "-o", "/dev/null", "-w", "%{speed_download} %{size_download}", url],
            timeout=timeout(ctx.size),
        )
    except PeerTimeout as e:
        return None, None, f"curl timed out: {str(e).splitlines()[0]}"
    after = cpuSeconds(pid) if pid else None
    if not result.ok:
        return None, None, f"curl failed ({result.returncode}): {result.stderr.strip()[:120]}"
    speed, size = result.stdout.split()
    if int(size) != ctx.size:
        return None, None, f"curl got {size} of {ctx.size} bytes"
    cpu = None
    if before is not None and after is not None:
        cpu = (after - before) / (ctx.size / GIB)
    return float(speed) / 1e6, cpu, ""


def runRedirected(ctx: Context) -> Section:
    """FTP RETR of big.bin with curl (EPSV): direct from vsftpd, and through the FTP
    gateway, whose data channel is a redirect (fast path, then user mode)."""
    if "retr" in ctx.shared:
        return ctx.shared["retr"]
    section = Section(
        "retr",
        f"a./c. Bulk data through a redirected data channel: FTP RETR of {ctx.size:,} bytes "
        "(curl, EPSV) from vsftpd",
        COLUMNS,
        "mbps",
    )
    ctx.shared["retr"] = section
    for name in (RETR_DIRECT, RETR_FAST, RETR_USER):
        section.row(name, None if name == RETR_DIRECT else RETR_DIRECT)
    section.notes += [
        "MB/s = curl's speed_download (10^6 bytes/s, login included); CPU = the gateway "
        "process's utime+stime per GiB (control and data connections).",
    ]
    server = ctx.vsftpd()
    if isinstance(server, str):
        for row in section.rows:
            row.status = server
        return section
    if findTool("curl") is None:
        for row in section.rows:
            row.status = "not installed: curl"
        return section
    targets: list[tuple[str, int, int | None]] = [(RETR_DIRECT, server.port, None)]
    for name, fast in ((RETR_FAST, True), (RETR_USER, False)):
        gateway = ctx.gateway("ftp", server.address, fast)
        targets.append((name, gateway.address[1], gatewayPid(gateway)))
    for run in range(ctx.runs):
        for name, port, pid in targets:
            row = section.row(name)
            mbps, cpu, problem = retrOnce(ctx, port, pid)
            if problem:
                row.note(problem)
            row.add("mbps", mbps)
            row.add("cpu", cpu)
            ctx.progress(
                f"retr run {run + 1}/{ctx.runs}: {name}: "
                f"{'failed' if mbps is None else f'{mbps:,.0f} MB/s'}"
                + (f", {cpu:.2f} CPU-s/GiB" if cpu is not None else "")
            )
    return section


def runFtps(ctx: Context) -> Section:
    """FTPS RETR of big.bin with curl --ssl-reqd (EPSV): direct from a vsftpd that forces
    TLS and session reuse, and through the FTP gateway terminating TLS on both sides
    (upstream checked against the throwaway CA; data connections resume the session)."""
    section = Section(
        "ftps",
        f"FTPS: RETR of {ctx.size:,} bytes (curl --ssl-reqd, EPSV) from vsftpd "
        "(force_anon_data_ssl, require_ssl_reuse)",
        COLUMNS,
        "mbps",
    )
    for name in (FTPS_DIRECT, FTPS_GATEWAY):
        section.row(name, None if name == FTPS_DIRECT else FTPS_DIRECT)
    section.notes += [
        "TLS legs never take the fast path: both data legs are encrypted in Python (pyOpenSSL).",
        "MB/s = curl's speed_download; CPU = the gateway process's utime+stime per GiB.",
    ]
    started = ctx.vsftpdTLS()
    if isinstance(started, str):
        for row in section.rows:
            row.status = started
        return section
    if findTool("curl") is None:
        for row in section.rows:
            row.status = "not installed: curl"
        return section
    server, tls = started
    curlArgs = ("--ssl-reqd", "--cacert", str(tls.caCert))
    gateway = ctx.gateway(
        "ftp",
        server.address,
        True,
        (
            "--tls-cert",
            str(tls.cert),
            "--tls-key",
            str(tls.key),
            "--upstream-ca",
            str(tls.caCert),
        ),
    )
    targets = [
        (FTPS_DIRECT, server.port, None),
        (FTPS_GATEWAY, gateway.address[1], gatewayPid(gateway)),
    ]
    for run in range(ctx.runs):
        for name, port, pid in targets:
            row = section.row(name)
            mbps, cpu, problem = retrOnce(ctx, port, pid, curlArgs)
            if problem:
                row.note(problem)
            row.add("mbps", mbps)
            row.add("cpu", cpu)
            ctx.progress(
                f"ftps run {run + 1}/{ctx.runs}: {name}: "
                f"{'failed' if mbps is None else f'{mbps:,.0f} MB/s'}"
            )
    return section
