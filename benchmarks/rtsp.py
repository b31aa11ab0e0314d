"""e. RTSP media over UDP: RTP-sized datagrams through the rtsp gateway's redirected pairs.

The gateway (`twistd -n fwx rtsp`) runs in front of a scripted RTSP server (a thread
here: SETUP answered with a server_port pair, PLAY with 200); an RTSP client here sends
SETUP/PLAY through the gateway.  The media then flows from the server's sockets (a
`rtspload.py blast` process) to the gateway's server-facing ports (the client_port of
the forwarded SETUP), and from the gateway's client-facing ports to the player's
sockets (a `rtspload.py sink` process), which counts them.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from benchmarks.context import LIFETIME, LOOPBACK, Context, freePort, gatewayPid, rotated
from benchmarks.procs import (
    PROJECT_ROOT,
    STEAL_LIMIT,
    Proc,
    busyPercent,
    cpuSeconds,
    findTool,
    machineTicks,
    rssKiB,
    stealTicks,
    stolenPercent,
)
from benchmarks.report import Column, Row, Section
from fwxtwisted.net.quietport import UDP_RECEIVE_BUFFER
from tests.peers import Gateway, runGateway

RTSPLOAD = PROJECT_ROOT / "benchmarks" / "rtspload.py"
#: The gateway's outbound (server-facing) address: its own IP, as a gateway between two
#: networks has.
EXTERNAL = "127.0.0.2"

DIRECT = "direct (no relay)"
SOCAT = "socat (UDP4-RECV -> UDP4-SENDTO, no fork)"
FWX = "fwx rtsp, one session's redirected RTP socket"
FWX_KERNEL = "fwx rtsp --kernel-udp (the kernel carries the pair)"
SESSIONS_DIRECT = "direct (no relay), same load"
SESSIONS_FWX = "fwx rtsp"
SESSIONS_FWX_KERNEL = "fwx rtsp --kernel-udp"
KERNEL_OPTIONS = ("--kernel-udp",)

#: Loss accepted at "the highest rate": 0.1 %.
LOSS_LIMIT = 0.001
#: Offered rates tried per row and run, after the flat-out one.
SEARCH_STEPS = 5
#: Seconds for the gateway to pass what it still holds once the blaster stops.
DRAIN = 0.3

#: Section 2: concurrent sessions, 2 tracks each, 2 Mbit/s a session.
SESSIONS = 100
TRACKS = 2
SESSION_PPS = 180

RATE_COLUMNS = [
    Column("pps", "pkts/s at < 0.1 % loss"),
    Column("pps", "ratio", ratio=True),
    Column("loss", "loss % there", 3),
    Column("relayUs", "relay CPU µs/pkt", 2),
    Column("relayBusy", "relay CPU % of a core"),
    Column("blastBusy", "blaster CPU %"),
    Column("sinkBusy", "receiver CPU %"),
    Column("machineBusy", "machine CPU busy %"),
    Column("machineUs", "machine CPU µs/pkt (every process and the kernel)", 2),
    Column("maxPps", "flat out: delivered pkts/s"),
    Column("maxLoss", "flat out: loss %", 1),
    Column("maxRelayUs", "flat out: relay CPU µs/pkt", 2),
]

SESSION_COLUMNS = [
    Column("delivered", "delivered pkts/s"),
    Column("loss", "loss %", 3),
    Column("relayBusy", "gateway CPU % of a core", 1),
    Column("relayUs", "gateway CPU µs/pkt", 2),
    Column("rssSetUp", "RSS KiB/session (set up)", 1),
    Column("rssMedia", "RSS KiB/session (after media)", 1),
    Column("setupSeconds", "seconds to set up", 1),
    Column("machineBusy", "machine CPU busy %"),
    Column("machineUs", "machine CPU µs/pkt (every process and the kernel)", 2),
]


def kernelPathProblem() -> str | None:
    """Why --kernel-udp cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (nftables)"
    if findTool("nft") is None and not os.path.exists("/usr/sbin/nft"):
        return "nft not installed"
    return None


# -- the load processes ------------------------------------------------------------------


class Load:
    """A `rtspload.py` process: its ports, and one JSON answer per command."""

    def __init__(self, ctx: Context, kind: str, flows: int) -> None:
        self.proc = Proc(
            f"rtsp-{kind}-{flows}",
            [sys.executable, str(RTSPLOAD), kind, "--flows", str(flows)],
            ctx.logDir,
            pipes=True,
        )
        ctx.stack.enter_context(self.proc)
        hello = self.read(30.0)
        self.ports: list[int] = [int(p) for p in hello["ports"]]

    def send(self, command: dict[str, object]) -> None:
        assert self.proc.process is not None and self.proc.process.stdin is not None
        self.proc.process.stdin.write((json.dumps(command) + "\n").encode())
        self.proc.process.stdin.flush()

    def read(self, timeout: float) -> dict[str, object]:
        ready = selectors.DefaultSelector()
        ready.register(self.proc.stdout, selectors.EVENT_READ)
        if not ready.select(timeout):
            raise TimeoutError(f"{self.proc.name}: no answer in {timeout} s:\n{self.proc.log()}")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.proc.name} exited:\n{self.proc.log()}")
        answer: dict[str, object] = json.loads(line)
        return answer


@dataclass
class Window:
    """One measured window: what was sent and received, and what it cost."""

    sent: int
    received: int
    seconds: float
    relayCpu: float | None
    blastCpu: float
    sinkCpu: float
    machineBusy: float
    stolen: float
    #: Wall seconds over which machineBusy was measured.
    wall: float = 0.0

    @property
    def loss(self) -> float:
        return 1.0 - self.received / self.sent if self.sent else 1.0

    @property
    def offered(self) -> float:
        return self.sent / self.seconds

    @property
    def delivered(self) -> float:
        return self.received / self.seconds

    @property
    def machineUs(self) -> float:
        """Busy CPU time of the whole machine per delivered datagram."""
        cores = os.cpu_count() or 1
        return 1e6 * self.machineBusy / 100 * cores * self.wall / max(self.received, 1)


class Media:
    """The blaster and the sink, and windows of datagrams between them."""

    def __init__(self, ctx: Context, flows: int) -> None:
        self.blast = Load(ctx, "blast", flows)
        self.sink = Load(ctx, "sink", flows)
        self.runId = 0

    def window(
        self, targets: list[tuple[str, int]], rate: float, seconds: float, relay: int | None
    ) -> Window:
        self.runId += 1
        self.sink.send({"run": self.runId})
        before = cpuSeconds(relay) if relay is not None else 0.0
        ticks, steal = machineTicks(), stealTicks()
        started = time.monotonic()
        self.blast.send({"run": self.runId, "targets": targets, "rate": rate, "seconds": seconds})
        blasted = self.blast.read(seconds + 30.0)
        time.sleep(DRAIN)
        after = cpuSeconds(relay) if relay is not None else 0.0
        busy, stolen = busyPercent(ticks, machineTicks()), stolenPercent(steal, stealTicks())
        wall = time.monotonic() - started
        self.sink.send({"report": 1})
        counted = self.sink.read(30.0)
        sent = [int(n) for n in blasted["sent"]]  # type: ignore[attr-defined]
        received = [int(n) for n in counted["received"]]  # type: ignore[attr-defined]
        return Window(
            sent=sum(sent),
            received=sum(received[: len(sent)]),
            seconds=float(blasted["seconds"]),  # type: ignore[arg-type]
            relayCpu=(after - before) if relay is not None else None,
            blastCpu=float(blasted["cpu"]),  # type: ignore[arg-type]
            sinkCpu=float(counted["cpu"]),  # type: ignore[arg-type]
            machineBusy=busy,
            stolen=stolen,
            wall=wall,
        )


# -- the scripted RTSP server ------------------------------------------------------------


@dataclass
class Script:
    """What the scripted server answers, and what it learnt from the gateway."""

    #: server_port (RTP) per flow: the blaster's sockets.
    serverPorts: list[int]
    #: Where the server sends flow i: the gateway's address and the forwarded client_port.
    targets: dict[int, tuple[str, int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


TRACK_PATH = re.compile(r"/s(\d+)/track(\d+)")


def readMessage(stream: socket.socket, pending: bytearray) -> tuple[str, dict[str, str]] | None:
    """The next message (first line, headers) on C{stream}: no bodies here."""
    while b"\r\n\r\n" not in pending:
        chunk = stream.recv(65536)
        if not chunk:
            return None
        pending += chunk
    head, _, rest = bytes(pending).partition(b"\r\n\r\n")
    pending[:] = rest
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers


class ScriptedServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, script: Script) -> None:
        self.script = script
        super().__init__((LOOPBACK, 0), ScriptedHandler)


class ScriptedHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, ScriptedServer)
        script = server.script
        sock: socket.socket = self.request
        pending = bytearray()
        session = f"{id(self) & 0xFFFFFFFF:08X}"
        while True:
            message = readMessage(sock, pending)
            if message is None:
                return
            first, headers = message
            method, url = first.split()[:2]
            lines = ["RTSP/1.0 200 OK", f"CSeq: {headers.get('cseq', '0')}"]
            if method == "SETUP":
                found = TRACK_PATH.search(url)
                ports = re.search(r"client_port=(\d+)", headers.get("transport", ""))
                if found is None or ports is None:
                    refused = f"RTSP/1.0 400 Bad Request\r\nCSeq: {headers.get('cseq')}\r\n\r\n"
                    sock.sendall(refused.encode())
                    continue
                flow = int(found.group(1)) * TRACKS + int(found.group(2))
                with script.lock:
                    # The server sends to the address the request came from: the gateway's.
                    script.targets[flow] = (sock.getpeername()[0], int(ports.group(1)))
                rtp = script.serverPorts[flow]
                lines += [
                    f"Session: {session};timeout=60",
                    f"Transport: RTP/AVP;unicast;client_port={ports.group(1)}-"
                    f"{int(ports.group(1)) + 1};server_port={rtp}-{rtp + 1};ssrc={flow:08X}",
                ]
            elif method in ("PLAY", "TEARDOWN", "GET_PARAMETER"):
                lines.append(f"Session: {session}")
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())


@contextmanager
def scriptedServer(script: Script) -> Iterator[ScriptedServer]:
    server = ScriptedServer(script)
    thread = threading.Thread(target=server.serve_forever, name="rtsp-script", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10.0)


# -- the RTSP client ---------------------------------------------------------------------


class Client:
    """One RTSP session through the gateway: SETUP of each track, then PLAY."""

    def __init__(self, gateway: tuple[str, int], index: int) -> None:
        self.sock = socket.create_connection(gateway, timeout=30.0)
        self.base = f"rtsp://{gateway[0]}:{gateway[1]}/s{index}"
        self.cseq = 0
        self.session: str | None = None
        self.pending = bytearray()
        #: Per track, the gateway's client-facing RTP port (server_port of the reply).
        self.gatewayPorts: list[int] = []

    def request(self, method: str, url: str, *extra: str) -> dict[str, str]:
        self.cseq += 1
        lines = [f"{method} {url} RTSP/1.0", f"CSeq: {self.cseq}", *extra]
        if self.session:
            lines.append(f"Session: {self.session}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        reply = readMessage(self.sock, self.pending)
        if reply is None or " 200 " not in reply[0] + " ":
            raise RuntimeError(f"{method} {url}: {reply}")
        return reply[1]

    def setup(self, track: int, clientPort: int) -> None:
        headers = self.request(
            "SETUP",
            f"{self.base}/track{track}",
            f"Transport: RTP/AVP;unicast;client_port={clientPort}-{clientPort + 1}",
        )
        self.session = self.session or headers["session"].split(";")[0]
        found = re.search(r"server_port=(\d+)", headers.get("transport", ""))
        if found is None:
            raise RuntimeError(f"SETUP reply without server_port: {headers}")
        self.gatewayPorts.append(int(found.group(1)))

    def play(self) -> None:
        self.request("PLAY", self.base, "Range: npt=0.000-")

    def close(self) -> None:
        self.sock.close()


def openSessions(
    address: tuple[str, int], count: int, tracks: int, sinkPorts: list[int]
) -> list[Client]:
    clients = []
    for index in range(count):
        client = Client(address, index)
        clients.append(client)
        for track in range(tracks):
            client.setup(track, sinkPorts[index * tracks + track])
        client.play()
    return clients


@contextmanager
def rtspGateway(upstream: int, options: tuple[str, ...] = ()) -> Iterator[Gateway]:
    port = freePort(LOOPBACK)
    argv = [
        "rtsp",
        "--listen",
        f"tcp:{port}:interface={LOOPBACK}",
        "--upstream",
        f"{LOOPBACK}:{upstream}",
        "--external-address",
        EXTERNAL,
        *options,
    ]
    with runGateway(argv, (LOOPBACK, port), timeout=30.0, lifetime=LIFETIME) as gateway:
        yield gateway


def udpFreePort(host: str) -> int:
    """A UDP port that was free on C{host} a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
    return port


# -- 1. the highest rate at < 0.1 % loss -------------------------------------------------


def search(measure: Callable[[float], Window], say: Callable[[str], None]) -> dict[str, float]:
    """Flat out first, then SEARCH_STEPS offered rates: the highest with < 0.1 % loss."""
    flat = measure(0.0)
    say(
        f"    flat out: offered {flat.offered:,.0f}/s, delivered {flat.delivered:,.0f}/s, "
        f"loss {100 * flat.loss:.2f} %"
    )
    result = {"maxPps": flat.delivered, "maxLoss": 100 * flat.loss, "blasterBound": 0.0}
    if flat.relayCpu is not None and flat.received:
        result["maxRelayUs"] = 1e6 * flat.relayCpu / flat.received
    best: Window | None = None
    if flat.loss < LOSS_LIMIT:
        best = flat
        result["blasterBound"] = 1.0
    else:
        low, high = 0.0, flat.offered
        rate = 0.95 * flat.delivered
        for _ in range(SEARCH_STEPS):
            window = measure(rate)
            passed = window.loss < LOSS_LIMIT
            say(
                f"    offered {rate:,.0f}/s: delivered {window.delivered:,.0f}/s, "
                f"loss {100 * window.loss:.3f} % {'ok' if passed else 'too lossy'}"
            )
            if passed:
                low = rate
                if best is None or window.delivered > best.delivered:
                    best = window
            else:
                high = rate
            rate = (low + high) / 2 if low else high * 0.7
    if best is None:
        return {**result, "pps": 0.0}
    result.update(
        pps=best.delivered,
        loss=100 * best.loss,
        blastBusy=100 * best.blastCpu / best.seconds,
        sinkBusy=100 * best.sinkCpu / best.seconds,
        machineBusy=best.machineBusy,
        machineUs=best.machineUs,
        stolen=best.stolen,
    )
    if best.relayCpu is not None and best.received:
        result["relayUs"] = 1e6 * best.relayCpu / best.received
        result["relayBusy"] = 100 * best.relayCpu / (best.seconds + DRAIN)
    return result


def runRate(ctx: Context) -> Section:
    seconds = min(ctx.duration, 2.0) if ctx.quick else ctx.duration
    section = Section(
        "rtsp",
        "e. RTSP media over UDP: one RTP flow, highest rate at < 0.1 % loss",
        RATE_COLUMNS,
        "pps",
    )
    direct, socat, fwx = section.row(DIRECT), section.row(SOCAT, ref=DIRECT), section.row(FWX)
    fwx.ref = SOCAT
    kernel = section.row(FWX_KERNEL, ref=SOCAT)
    section.notes += [
        "One flow of RTP-sized datagrams (1,200-1,400 bytes, cycled; RTP header, run id and "
        "a sequence number in each) from the media server's socket to the player's, "
        "counted at the player. Load: `benchmarks/rtspload.py` (Python, its own processes: "
        "`blast` paces the offered rate, `sink` counts; SO_RCVBUF 4 MiB at the sink; both "
        "relays receive with a 2 MiB SO_RCVBUF, the gateway's own setting).",
        f"Each run: flat out first, then {SEARCH_STEPS} offered rates (the first at 95 % of "
        "the flat-out delivered rate, then halving the interval between the highest rate "
        "with < 0.1 % loss and the lowest without); a row's figures are those of its "
        f"highest rate with < 0.1 % loss. Windows of {seconds:g} s, plus {DRAIN} s to drain.",
        "fwx rtsp: `twistd -n fwx rtsp --external-address 127.0.0.2` in front of a scripted "
        "RTSP server (a thread of the benchmark: SETUP answered with the blaster's "
        "server_port, PLAY with 200); an RTSP client sends SETUP/PLAY through the "
        "gateway, the blaster then sends from that server_port to the gateway's "
        "server-facing port (client_port of the forwarded SETUP), the gateway relays from "
        "its client-facing port (server_port of the SETUP reply) to the client_port. A new "
        "RTSP session per run.",
        "relay CPU µs/pkt: utime+stime of the relay process (/proc/PID/stat) over the window "
        "and the drain, divided by the datagrams delivered. With --kernel-udp the kernel "
        "rewrites and forwards each datagram in the sender's system call (nftables NAT), "
        "which no relay process pays: machine CPU µs/pkt (all busy CPU time of the machine "
        "over the window, /proc/stat, per delivered datagram) shows that cost; compare it "
        "with the direct row's, which is the blaster's and the receiver's alone.",
        "2 CPUs: the blaster, the receiver and the relay share them (three busy processes on "
        "two cores): the rates are lower than each could do alone. machine CPU busy %: "
        "/proc/stat over the row's kept window; near 100 % means the processes (ours and "
        "anything else on the machine) queued for a core, and a relay not scheduled for a "
        "few ms overflows its socket buffer (Linux default 208 KiB: about 90 datagrams of "
        "this size). Compare within the run.",
    ]
    socatPath = findTool("socat")
    if socatPath is None:
        socat.status = "not installed"
    media = Media(ctx, 1)
    script = Script(serverPorts=media.blast.ports)
    server = ctx.stack.enter_context(scriptedServer(script))
    gateway = ctx.stack.enter_context(rtspGateway(server.server_address[1]))
    kernelGateway: Gateway | None = None
    problem = kernelPathProblem()
    if problem is None:
        kernelGateway = ctx.stack.enter_context(
            rtspGateway(server.server_address[1], KERNEL_OPTIONS)
        )
    else:
        kernel.status = problem
    socatProc: Proc | None = None
    socatPort = 0
    if socatPath is not None:
        socatPort = udpFreePort(EXTERNAL)
        socatProc = Proc(
            "socat-udp",
            [
                socatPath,
                "-u",
                # The receive buffer the gateway's relay sockets ask for (2 MiB):
                # loss at a rate is then the relay's speed, not its buffer.
                f"UDP4-RECV:{socatPort},bind={EXTERNAL},rcvbuf={UDP_RECEIVE_BUFFER}",
                f"UDP4-SENDTO:{LOOPBACK}:{media.sink.ports[0]}",
            ],
            ctx.logDir,
        )
        ctx.stack.enter_context(socatProc)
        time.sleep(0.3)
    sink = (LOOPBACK, media.sink.ports[0])
    rows: list[tuple[Row, Callable[[], tuple[tuple[str, int], int | None, Client | None]]]] = [
        (direct, lambda: (sink, None, None)),
        (fwx, lambda: fwxSession(gateway, media, script)),
    ]
    if kernelGateway is not None:
        through = kernelGateway
        rows.append((kernel, lambda: fwxSession(through, media, script)))
    if socatProc is not None:
        proc = socatProc
        rows.insert(1, (socat, lambda: ((EXTERNAL, socatPort), proc.pid, None)))
    for runIndex in range(ctx.runs):
        for row, prepare in rotated(rows, runIndex):
            target, pid, client = prepare()
            ctx.progress(f"rtsp run {runIndex + 1}/{ctx.runs}: {row.name}")
            try:
                result = search(
                    lambda rate, t=target, p=pid: media.window([t], rate, seconds, p),
                    ctx.progress,
                )
            finally:
                if client is not None:
                    client.close()
            for metric, value in result.items():
                row.add(metric, value)
            if result.get("stolen", 0.0) > STEAL_LIMIT:
                row.note(
                    f"run {runIndex + 1}: {result['stolen']:.0f}% of the CPU stolen by the host"
                )
            if result.get("blasterBound"):
                row.note(f"run {runIndex + 1}: no loss flat out (the blaster's limit)")
            if not result.get("pps"):
                row.note(f"run {runIndex + 1}: no offered rate had < 0.1 % loss")
    return section


def fwxSession(
    gateway: Gateway, media: Media, script: Script
) -> tuple[tuple[str, int], int, Client]:
    script.targets.clear()
    (client,) = openSessions(gateway.address, 1, 1, media.sink.ports)
    return script.targets[0], gatewayPid(gateway), client


# -- 2. 100 sessions at 2 Mbit/s each ----------------------------------------------------


def runSessions(ctx: Context) -> Section:
    seconds = 3.0 if ctx.quick else 10.0
    flows = SESSIONS * TRACKS
    rate = SESSIONS * SESSION_PPS
    section = Section(
        "rtsp-sessions",
        f"e2. RTSP media over UDP: {SESSIONS} sessions x {TRACKS} tracks, "
        f"{SESSION_PPS} pkts/s a session ({rate:,} pkts/s in all), {seconds:g} s",
        SESSION_COLUMNS,
        "loss",
    )
    direct, fwx = section.row(SESSIONS_DIRECT), section.row(SESSIONS_FWX)
    kernel = section.row(SESSIONS_FWX_KERNEL)
    problem = kernelPathProblem()
    if problem is not None:
        kernel.status = problem
    section.notes += [
        f"{SESSIONS} RTSP sessions through one gateway, each SETUP of {TRACKS} tracks "
        f"(UDP) then PLAY; the blaster sends {SESSION_PPS // TRACKS} pkts/s on each "
        f"track (1,200-1,400 bytes: about {SESSION_PPS * 1316 * 8 / 1e6:.1f} Mbit/s a "
        "session), round robin over the flows. The direct row sends the same load "
        "straight to the receiver's sockets.",
        "RSS: VmRSS of the gateway (/proc/PID/status) after 5 sessions were opened and "
        f"closed, then after the {SESSIONS} sessions were set up, and after the media "
        f"window; growth / {SESSIONS}. A fresh gateway per run.",
        "2 CPUs shared by the gateway, the blaster and the receiver.",
    ]
    media = Media(ctx, flows)
    script = Script(serverPorts=media.blast.ports)
    server = ctx.stack.enter_context(scriptedServer(script))
    for runIndex in range(ctx.runs):
        rowsHere = [direct, fwx] if problem is not None else [direct, fwx, kernel]
        for row in rotated(rowsHere, runIndex):
            ctx.progress(f"rtsp sessions run {runIndex + 1}/{ctx.runs}: {row.name}")
            if row is direct:
                targets = [(LOOPBACK, port) for port in media.sink.ports]
                window = media.window(targets, rate, seconds, None)
                result = {
                    "delivered": window.delivered,
                    "loss": 100 * window.loss,
                    "machineBusy": window.machineBusy,
                    "machineUs": window.machineUs,
                }
            else:
                options = KERNEL_OPTIONS if row is kernel else ()
                result = sessionsThroughGateway(ctx, media, script, server, rate, seconds, options)
            ctx.progress(f"    delivered {result['delivered']:,.0f}/s, loss {result['loss']:.3f} %")
            for metric, value in result.items():
                row.add(metric, value)
    return section


def sessionsThroughGateway(
    ctx: Context,
    media: Media,
    script: Script,
    server: ScriptedServer,
    rate: float,
    seconds: float,
    options: tuple[str, ...] = (),
) -> dict[str, float]:
    with rtspGateway(server.server_address[1], options) as gateway:
        pid = gatewayPid(gateway)
        for client in openSessions(gateway.address, 5, TRACKS, media.sink.ports):
            client.close()
        time.sleep(1.0)
        before = rssKiB(pid)
        script.targets.clear()
        started = time.monotonic()
        clients = openSessions(gateway.address, SESSIONS, TRACKS, media.sink.ports)
        setupSeconds = time.monotonic() - started
        try:
            time.sleep(0.5)
            setUp = rssKiB(pid)
            targets = [script.targets[flow] for flow in range(SESSIONS * TRACKS)]
            window = media.window(targets, rate, seconds, pid)
            after = rssKiB(pid)
        finally:
            for client in clients:
                client.close()
    assert window.relayCpu is not None
    return {
        "delivered": window.delivered,
        "loss": 100 * window.loss,
        "relayBusy": 100 * window.relayCpu / (window.seconds + DRAIN),
        "relayUs": 1e6 * window.relayCpu / max(window.received, 1),
        "rssSetUp": (setUp - before) / SESSIONS,
        "rssMedia": (after - before) / SESSIONS,
        "setupSeconds": setupSeconds,
        "machineBusy": window.machineBusy,
        "machineUs": window.machineUs,
    }
