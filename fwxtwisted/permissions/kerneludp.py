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
from collections.abc import Callable, Iterable
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
from fwxtwisted.net.nft import NftError, NftRunner
from fwxtwisted.net.origdst import isLocalAddress

log = Logger()

#: Seconds between two readings of the kernel's counters while a flow lives.
POLL_INTERVAL = 2.0
#: Seconds between two conntrack cleanups of one flow whose datagrams reach a socket.
FORGET_INTERVAL = 0.5
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
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self.table = table or KernelUDPTable()
        self._runner = runner or NftRunner(reactor)
        self._pollInterval = pollInterval
        self._forget = forget
        self._forgetMarked = forgetMarked
        self._forwarding = forwarding or _forwarding
        self._stopped = False
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
        """Can the kernel deliver between C{peer} and C{target}: forwarding is on for
        their family, or both are addresses of this host."""
        if self._forwarding(peer.isIPv6):
            return True
        return isLocalAddress(peer.host) and isLocalAddress(target.host)

    def newFlow(
        self, peer: Address, internal: Address, external: Address, target: Address
    ) -> FlowCounts:
        """A flow (not yet in the kernel) and its counts."""
        return FlowCounts(KernelFlow(f"f{next(self._names)}", peer, internal, external, target))

    def add(self, counts: FlowCounts) -> Deferred[None]:
        """Put the flow in the kernel's maps; fails with NftError when nft refuses."""
        done: Deferred[None] = Deferred()
        if self._stopped:
            done.errback(NftError("the kernel UDP path is stopped"))
            return done
        self._adds.append((counts, done))
        self._scheduleFlush()
        return done

    def remove(self, counts: FlowCounts) -> Deferred[None]:
        """Read the flow's last counts, take it out of the maps, forget its conntrack
        entries; never fails (what goes wrong is logged).  Call it once C{add}'s
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
        if self._stopped:
            # The table is gone (or going) with every element in it.
            for _counts, done in adds:
                done.errback(NftError("the kernel UDP path is stopped"))
            for counts, done in removes:
                self._flows.pop(counts.flow.name, None)
                done.callback(None)
            return
        if adds:
            self._runAdds(adds)
        if removes:
            self._runRemoves(removes)

    def _runAdds(self, adds: list[tuple[FlowCounts, Deferred[None]]]) -> None:
        script = "".join(self.table.addScript(counts.flow) for counts, _ in adds)

        def added(_: object) -> None:
            for counts, _done in adds:
                self._flows[counts.flow.name] = counts
            self._forgetQuietly(counts for counts, _ in adds)
            self._startPolling()
            for _counts, done in adds:
                done.callback(None)

        def refused(failure: Failure) -> None:
            for _counts, done in adds:
                done.errback(failure)

        self._runner.runScript(script).addCallbacks(added, refused)

    def _runRemoves(self, removes: list[tuple[FlowCounts, Deferred[None]]]) -> None:
        known = [(c, d) for c, d in removes if c.flow.name in self._flows]
        for counts, done in removes:
            if counts.flow.name not in self._flows:
                done.callback(None)
        if not known:
            return
        script = "".join(self.table.deleteScript(counts.flow) for counts, _ in known)

        def deleted(_: object) -> None:
            for counts, _done in known:
                self._flows.pop(counts.flow.name, None)
            self._forgetQuietly(counts for counts, _ in known)
            if not self._flows and self._poller is not None and self._poller.running:
                self._poller.stop()
            for _counts, done in known:
                done.callback(None)

        def failed(failure: Failure) -> None:
            if not self._stopped:  # else the table went with its elements
                log.error(
                    "kernel UDP path: cannot remove {count} flow(s): {error}",
                    count=len(known),
                    error=failure.getErrorMessage(),
                )
            deleted(None)

        reading = self._readCounters()
        # The elements go whatever became of the last reading.
        reading.addBoth(lambda _: self._runner.runScript(script))
        reading.addCallbacks(deleted, failed)

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
        reading = self._reading if self._reading is not None else self._readCounters()
        joined: Deferred[None] = Deferred()

        def fire(result: object) -> object:
            joined.callback(None)
            return result

        reading.addBoth(fire)
        return joined

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
            if self._stopped:
                return
            log.warn(
                "kernel UDP path: cannot read counters: {error}",
                error=failure.getErrorMessage(),
            )

        done: Deferred[None] = reading.addCallbacks(read, failed)
        if not done.called:
            self._reading = done
        return done

    def _update(self, counters: dict[str, tuple[int, int]] | Any) -> None:
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


class KernelPath:
    """One UDP redirect's flow in the kernel: asked for once its addresses are known,
    counted while it lives, removed before its ports go back to the pool."""

    def __init__(self, registry: KernelUDP, counts: FlowCounts, label: str, clock: Any) -> None:
        self._registry = registry
        self.counts = counts
        self._label = label
        self._clock = clock
        #: The kernel holds the flow: a datagram on the redirect's sockets is a stray.
        self.active = False
        #: The kernel held the flow at some point (the log's "kernel" path).
        self.installed = False
        self._removing: Deferred[None] | None = None
        self._lastForget = float("-inf")
        self.ready: Deferred[None] = registry.add(counts)
        self.ready.addCallbacks(self._added, self._refused)

    def _added(self, _: object) -> None:
        self.installed = True
        if self._removing is None:
            self.active = True

    def _refused(self, failure: Failure) -> None:
        log.warn(
            "{label}: kernel UDP path refused for {flow}, relaying in Python: {error}",
            label=self._label,
            flow=self.counts.flow.name,
            error=failure.getErrorMessage(),
        )

    def stray(self) -> None:
        """A datagram of the flow reached a socket after the kernel took it over: an
        older conntrack entry still routes it here.  Forget it (at most every
        FORGET_INTERVAL seconds): the next datagram goes through the maps."""
        now = self._clock.seconds()
        if now - self._lastForget >= FORGET_INTERVAL:
            self._lastForget = now
            self._registry.forget(self.counts)

    def recount(self) -> Deferred[None]:
        """Read the kernel's counters now (the idle and session timers ask before
        they decide that nothing moved); never fails."""
        return self._registry.recount()

    @property
    def removed(self) -> bool:
        return self._removing is not None and self._removing.called

    def remove(self) -> Deferred[None]:
        """Take the flow out of the kernel (after its installation, if still running);
        fires once it is out and its counts are final.  Idempotent."""
        if self._removing is None:
            removing: Deferred[None] = Deferred()
            self._removing = removing

            def go(_: object) -> None:
                self.active = False
                self._registry.remove(self.counts).chainDeferred(removing)

            self.ready.addBoth(go)
        result: Deferred[None] = Deferred()
        if self._removing.called:
            return succeed(None)
        self._removing.addBoth(lambda _: result.callback(None))
        return result


def _forwarding(isIPv6: bool) -> bool:
    """Whether this host forwards IPv4 (or IPv6) datagrams (net.ipv4.ip_forward...)."""
    name = "ipv6/conf/all/forwarding" if isIPv6 else "ipv4/ip_forward"
    try:
        return Path(f"/proc/sys/net/{name}").read_text().strip() != "0"
    except OSError:
        return False
