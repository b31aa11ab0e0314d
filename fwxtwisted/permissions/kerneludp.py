"""The kernel UDP path: a UDP redirect's datagrams carried by the kernel's NAT.

A UDP redirect with one known peer (an RTSP track's RTP or RTCP port, for instance)
is a fixed four-address rewrite, which the kernel does without waking the gateway:
L{KernelUDP} keeps the gateway's nftables table (net/kernelnat.py) and puts each such
flow in its maps; L{KernelPath} is one redirect's use of it.  The redirect's sockets
stay bound the whole time: they hold the ports (nothing else may take them), take
whatever comes from anyone else (dropped and counted as before), and relay in Python
until the kernel holds the flow, or for good when it cannot.

Changes go to nft in batches (everything asked within one reactor turn is one nft
run); the counters are read every C{pollInterval} seconds while any flow lives, and
once more as each flow is removed, so a redirect's counts are exact at its end.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from fwxtwisted.address import Address
from fwxtwisted.logs import Logger
from fwxtwisted.net.conntrack import ConntrackError, forgetMarked, forgetUDPFlows
from fwxtwisted.net.kernelnat import FLOW_MARK, KernelFlow, KernelUDPTable, parseCounters
from fwxtwisted.net.nft import NftError, NftRunner, NftTimeout
from fwxtwisted.net.origdst import isLocalAddress

log = Logger()

#: Seconds between two readings of the kernel's counters while a flow lives.
POLL_INTERVAL = 2.0
#: IP and UDP headers, which the kernel's counters include and the gateway's do not.
_HEADERS = {False: 20 + 8, True: 40 + 8}

Forget = Callable[[Iterable[tuple[Address, Address]]], int]


@dataclass
class FlowCounts:
    """What the kernel carried of one flow so far (payload bytes, like user mode)."""

    flow: KernelFlow
    packetsToTarget: int = 0
    bytesToTarget: int = 0
    packetsToPeer: int = 0
    bytesToPeer: int = 0
    #: When the counts last moved (the gateway's clock); 0 before any datagram.
    lastActive: float = 0.0
    #: The kernel holds the flow now (its maps name it): set by the registry only.
    inKernel: bool = False


class KernelUDP:
    """The gateway's kernel UDP path: its table, its flows, their counters."""

    def __init__(
        self,
        reactor: Any,
        table: KernelUDPTable | None = None,
        runner: NftRunner | None = None,
        clock: Any = None,
        pollInterval: float = POLL_INTERVAL,
        forget: Forget = forgetUDPFlows,
        forgetMarked: Callable[[int], None] = forgetMarked,
        forwarding: Callable[[bool], bool] | None = None,
    ) -> None:
        self._clock = clock if clock is not None else reactor
        self.table = table or KernelUDPTable()
        self._runner = runner or NftRunner(reactor)
        self._pollInterval = pollInterval
        self._forget = forget
        self._forgetMarked = forgetMarked
        self._forwarding = forwarding or _forwarding
        self._stopped = False
        #: The table is not what the gateway wrote: every flow went back to Python.
        self.abandoned = False
        #: What says the table is this process's (app/kernelpath.py), released at stop.
        self.claim: Any = None
        self._names = itertools.count(1)
        self._flows: dict[str, FlowCounts] = {}
        self._adds: list[tuple[FlowCounts, Deferred[None]]] = []
        self._removes: list[tuple[FlowCounts, Deferred[None]]] = []
        self._flushing: Any = None
        self._poller: LoopingCall | None = None
        self._reading: Deferred[None] | None = None

    # Start and stop (synchronous: before the reactor runs, or while it stops).

    def start(self) -> None:
        """Make the table (deleting what a previous run left).

        @raise NftError: nft is missing or refused (it needs CAP_NET_ADMIN).
        @raise ConntrackError: the kernel's conntrack netlink refused.
        """
        self._runner.runScriptNow(self.table.setupScript())
        # A gateway killed without its stop left entries that still rewrite.
        self._forgetMarked(FLOW_MARK)
        for isIPv6, name in (
            (False, "net.ipv4.ip_forward"),
            (True, "net.ipv6.conf.all.forwarding"),
        ):
            if not self._forwarding(isIPv6):
                log.info(
                    "kernel UDP path: {name} is 0: only flows whose peers are all on this "
                    "host go through the kernel, the others stay in Python",
                    name=name,
                )
        log.info("kernel UDP path: nftables table inet {name} ready", name=self.table.name)

    def stop(self) -> None:
        """Delete the table and forget every flow's conntrack entries.  Flows asked
        for afterwards stay in Python; removals still running end quietly."""
        self._stopped = True
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        if self._flushing is not None and self._flushing.active():
            self._flushing.cancel()
        self._flush()
        flows, self._flows = list(self._flows.values()), {}
        try:
            self._runner.runScriptNow(self.table.teardownScript())
        finally:
            self._forgetQuietly(flows)

    # Flows.

    def carries(self, peer: Address, target: Address) -> bool:
        """Can the kernel carry a flow between C{peer} and C{target} as the gateway
        would: both on other hosts (and the host forwards their family), or both on
        this host (their datagrams pass nat output and postrouting).  One of each
        stays in Python: a datagram to a local address is rewritten on input, where
        the table neither translates the source nor counts it, and a loopback source
        cannot be sent to another host at all."""
        peerLocal, targetLocal = isLocalAddress(peer.host), isLocalAddress(target.host)
        if peerLocal != targetLocal:
            return False
        return peerLocal or self._forwarding(peer.isIPv6)

    def newFlow(
        self, peer: Address, internal: Address, external: Address, target: Address
    ) -> FlowCounts:
        """A flow (not yet in the kernel) and its counts."""
        return FlowCounts(KernelFlow(f"f{next(self._names)}", peer, internal, external, target))

    def add(self, counts: FlowCounts) -> Deferred[None]:
        """Put the flow in the kernel's maps; fails with NftError when nft refuses."""
        done: Deferred[None] = Deferred()
        if self._stopped or self.abandoned:
            done.errback(NftError("the kernel UDP path is stopped or out of order"))
            return done
        self._adds.append((counts, done))
        self._scheduleFlush()
        return done

    def remove(self, counts: FlowCounts) -> Deferred[None]:
        """Take the flow out of the NAT maps, forget its conntrack entries (from then
        on its datagrams reach the gateway's sockets), read its last counts (exact:
        the count map still names it), then delete its counters; never fails (what
        goes wrong is logged, and hands every flow back to Python).  Call it once C{add}'s
        Deferred has fired (L{KernelPath} does): a flow still being added is not
        known yet and would stay."""
        done: Deferred[None] = Deferred()
        self._removes.append((counts, done))
        self._scheduleFlush()
        return done

    def forget(self, counts: FlowCounts) -> None:
        """Forget the flow's conntrack entries now (a datagram of it reached a socket:
        an entry made before the kernel held it is still in the way)."""
        self._forgetQuietly([counts])

    @property
    def flowCount(self) -> int:
        return len(self._flows)

    # Batches.

    def _scheduleFlush(self) -> None:
        if self._flushing is None:
            self._flushing = self._clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flushing = None
        adds, self._adds = self._adds, []
        removes, self._removes = self._removes, []
        if self._stopped or self.abandoned:
            # The table is gone (or going) with every element in it.
            for _counts, done in adds:
                done.errback(NftError("the kernel UDP path is stopped or out of order"))
            for counts, done in removes:
                self._flows.pop(counts.flow.name, None)
                counts.inKernel = False
                done.callback(None)
            return
        if adds:
            self._runAdds(adds)
        if removes:
            self._runRemoves(removes)

    def _runAdds(self, adds: list[tuple[FlowCounts, Deferred[None]]]) -> None:
        script = "".join(self.table.addScript(counts.flow) for counts, _ in adds)

        def added(_: object) -> None:
            if self._stopped or self.abandoned:
                refused(Failure(NftError("the kernel UDP path is stopped or out of order")))
                return
            for counts, _done in adds:
                self._flows[counts.flow.name] = counts
                counts.inKernel = True
            self._forgetQuietly(counts for counts, _ in adds)
            self._startPolling()
            for _counts, done in adds:
                done.callback(None)

        def refused(failure: Failure) -> None:
            if failure.check(NftTimeout):
                # nft may have committed before it was killed: the table's state is
                # unknown, and elements nobody removes would take others' flows.
                self._abandon(f"nft did not answer in time ({failure.getErrorMessage()})")
            for _counts, done in adds:
                done.errback(failure)

        self._runner.runScript(script).addCallbacks(added, refused)

    def _runRemoves(self, removes: list[tuple[FlowCounts, Deferred[None]]]) -> None:
        known = [(c, d) for c, d in removes if c.flow.name in self._flows]
        for counts, waiting in removes:
            if counts.flow.name not in self._flows:
                counts.inKernel = False
                waiting.callback(None)
        if not known:
            return
        flows = [counts for counts, _ in known]

        def unmapped(_: object) -> Deferred[None]:
            for counts in flows:
                counts.inKernel = False
            self._forgetQuietly(flows)
            reading = self._readCounters()
            reading.addCallback(
                lambda _: self._runner.runScript(
                    "".join(self.table.uncountScript(c.flow) for c in flows)
                )
            )
            return reading

        def finish(_: object) -> None:
            for counts in flows:
                self._flows.pop(counts.flow.name, None)
            if not self._flows and self._poller is not None and self._poller.running:
                self._poller.stop()
            for _counts, removed in known:
                removed.callback(None)

        def failed(failure: Failure) -> Deferred[None] | None:
            if self._stopped:  # the table went with its elements
                finish(None)
                return None
            # nft takes a batch whole or not at all: the table is no longer what the
            # gateway wrote, and ports must not go back while it may name them.
            abandoning = self._abandon(
                f"cannot remove {len(known)} flow(s): {failure.getErrorMessage()}"
            )
            return abandoning.addCallback(finish)

        unmapping = self._runner.runScript("".join(self.table.unmapScript(c.flow) for c in flows))
        unmapping.addCallback(unmapped).addCallbacks(finish, failed)

    def _abandon(self, why: str) -> Deferred[None]:
        """Delete the table and hand every flow back to Python (their datagrams reach
        the gateway's sockets once their conntrack entries are forgotten); new flows
        stay in Python.  Fires once that is done; never fails."""
        if self.abandoned:
            return succeed(None)
        self.abandoned = True
        log.error(
            "kernel UDP path: {why}: the table is deleted, every flow goes back to "
            "Python, and new ones stay there until a restart",
            why=why,
        )
        flows, self._flows = list(self._flows.values()), {}
        for counts in flows:
            counts.inKernel = False
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        deleting = self._runner.runScript(self.table.teardownScript())

        def forget(result: object) -> None:
            if isinstance(result, Failure):
                log.error(
                    "kernel UDP path: cannot delete its table: {error}",
                    error=result.getErrorMessage(),
                )
            self._forgetQuietly(flows)

        return deleting.addBoth(forget)

    # Counters.

    def _startPolling(self) -> None:
        if self._poller is None:
            self._poller = LoopingCall(self._poll)
            self._poller.clock = self._clock
        if not self._poller.running:
            self._poller.start(self._pollInterval, now=False)

    def recount(self) -> Deferred[None]:
        """Read the counters now (or join the reading under way); never fails."""
        if not self._flows or self._stopped:
            return succeed(None)
        return branch(self._reading if self._reading is not None else self._readCounters())

    def _poll(self) -> None:
        if self._reading is None and self._flows:
            self._readCounters()

    def _readCounters(self) -> Deferred[None]:
        reading = self._runner.output(self.table.listCountersArgv())

        def read(output: bytes) -> None:
            self._reading = None
            try:
                self._update(parseCounters(output))
            except (ValueError, TypeError) as e:
                log.warn("kernel UDP path: unreadable counters: {error}", error=str(e))

        def failed(failure: Failure) -> None:
            self._reading = None
            if self._stopped or self.abandoned:
                return
            if "No such file" in failure.getErrorMessage():
                self._abandon("its table is gone (deleted or flushed by someone else)")
                return
            log.warn(
                "kernel UDP path: cannot read counters: {error}",
                error=failure.getErrorMessage(),
            )

        done: Deferred[None] = reading.addCallbacks(read, failed)
        if not done.called:
            self._reading = done
        return done

    def _update(self, counters: Mapping[str, tuple[int, int]]) -> None:
        now = self._clock.seconds()
        for counts in self._flows.values():
            flow = counts.flow
            header = _HEADERS[flow.isIPv6]
            toTarget = counters.get(flow.counterToTarget)
            toPeer = counters.get(flow.counterToPeer)
            moved = False
            if toTarget is not None and toTarget[0] != counts.packetsToTarget:
                counts.packetsToTarget = toTarget[0]
                counts.bytesToTarget = max(0, toTarget[1] - header * toTarget[0])
                moved = True
            if toPeer is not None and toPeer[0] != counts.packetsToPeer:
                counts.packetsToPeer = toPeer[0]
                counts.bytesToPeer = max(0, toPeer[1] - header * toPeer[0])
                moved = True
            if moved:
                counts.lastActive = now

    def _forgetQuietly(self, flows: Iterable[FlowCounts]) -> None:
        tuples = [pair for counts in flows for pair in counts.flow.conntrackTuples()]
        try:
            self._forget(tuples)
        except ConntrackError as e:
            log.warn("kernel UDP path: cannot forget conntrack entries: {error}", error=str(e))


def branch(source: Deferred[Any]) -> Deferred[None]:
    """A Deferred firing (with None) once C{source} has fired, leaving C{source}'s
    result to its own callbacks: for several waiters on one change."""
    branched: Deferred[None] = Deferred()

    def fire(result: object) -> object:
        branched.callback(None)
        return result

    source.addBoth(fire)
    return branched


def _forwarding(isIPv6: bool) -> bool:
    """Whether this host forwards IPv4 (or IPv6) datagrams (net.ipv4.ip_forward...)."""
    name = "ipv6/conf/all/forwarding" if isIPv6 else "ipv4/ip_forward"
    try:
        return Path(f"/proc/sys/net/{name}").read_text().strip() != "0"
    except OSError:
        return False
