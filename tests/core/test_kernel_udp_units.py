"""The kernel UDP path without the kernel: its nft scripts and counters, its conntrack
netlink messages, and its batching, polling and removal on a fake nft runner and a Clock
(tests/core/test_kernel_udp.py does it for real, as root)."""

from __future__ import annotations

import contextlib
import errno
import json
import socket
import struct
from collections.abc import Iterable
from ipaddress import ip_address
from typing import Any
from unittest.mock import Mock

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from fwxtwisted.address import Address
from fwxtwisted.net import conntrack
from fwxtwisted.net.conntrack import ConntrackError, deleteMessage, forgetUDPFlows
from fwxtwisted.net.kernelnat import KernelFlow, KernelUDPTable, fitsKernel, parseCounters
from fwxtwisted.net.nft import NftError
from fwxtwisted.permissions import kerneludp
from fwxtwisted.permissions.kernelflow import FORGET_INTERVAL, KernelPath
from fwxtwisted.permissions.kerneludp import POLL_INTERVAL, KernelUDP

PEER, INTERNAL = Address("10.0.0.1", 5000), Address("192.0.2.1", 6000)
EXTERNAL, TARGET = Address("198.51.100.1", 7000), Address("203.0.113.5", 8000)
PEER6, INTERNAL6 = Address("2001:db8::1", 5000), Address("2001:db8::2", 6000)
EXTERNAL6, TARGET6 = Address("2001:db8::3", 7000), Address("2001:db8::4", 8000)
FLOW = KernelFlow("f1", PEER, INTERNAL, EXTERNAL, TARGET)


def counters(**named: tuple[int, int]) -> bytes:
    """What C{nft -j list counters} prints for these (packets, bytes) counters."""
    items: list[object] = [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}]
    for handle, (name, (packets, size)) in enumerate(named.items(), 19):
        counter = dict(family="inet", name=name, table="t", handle=handle, packets=packets)
        items.append({"counter": counter | {"bytes": size}})
    return json.dumps({"nftables": items}).encode()


# The nft scripts.


@pytest.mark.parametrize("name", ["x; flush ruleset", "", "a" * 70, "1table", "t-1"])
def test_a_table_name_that_is_not_a_plain_identifier_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not an nftables table name"):
        KernelUDPTable(name)


@pytest.mark.parametrize("host", ["example.com", "10.0.0.1 } ; flush ruleset ; {", ""])
def test_a_host_that_is_not_an_ip_literal_never_reaches_a_script(host: str) -> None:
    flow = KernelFlow("f1", Address(host, 5000), INTERNAL, EXTERNAL, TARGET)
    with pytest.raises(ValueError):
        KernelUDPTable("t").addScript(flow)
    with pytest.raises(ValueError):
        KernelUDPTable("t").unmapScript(flow)
    with pytest.raises(ValueError):
        KernelUDPTable("t").uncountScript(flow)


def test_the_counters_are_made_before_the_count_map_names_them() -> None:
    lines = KernelUDPTable("t").addScript(FLOW).splitlines()
    assert lines[:2] == ["add counter inet t f1t", "add counter inet t f1p"]
    assert [line.split()[4] for line in lines[2:]] == ["dnat4", "snat4", "count4"]


def test_an_ipv6_flow_goes_in_the_ipv6_maps() -> None:
    table = KernelUDPTable("t")
    flow = KernelFlow("f2", PEER6, INTERNAL6, EXTERNAL6, TARGET6)
    for script in (table.addScript(flow), removal(table, flow)):
        maps = [line.split()[4] for line in script.splitlines() if " element " in line]
        assert maps == ["dnat6", "snat6", "count6"]


def test_each_side_reaches_the_other_from_the_gateway_address_it_was_given() -> None:
    assert KernelUDPTable("t").addScript(FLOW).splitlines()[2:] == [
        "add element inet t dnat4 { 10.0.0.1 . 5000 . 192.0.2.1 . 6000 : 203.0.113.5 . 8000, "
        "203.0.113.5 . 8000 . 198.51.100.1 . 7000 : 10.0.0.1 . 5000 }",
        "add element inet t snat4 { 192.0.2.1 . 6000 : 198.51.100.1 . 7000, "
        "198.51.100.1 . 7000 : 192.0.2.1 . 6000 }",
        'add element inet t count4 { 198.51.100.1 . 7000 . 203.0.113.5 . 8000 : "f1t", '
        '192.0.2.1 . 6000 . 10.0.0.1 . 5000 : "f1p" }',
    ]


def removal(table: KernelUDPTable, flow: KernelFlow) -> str:
    """The scripts a removal runs, in their order (the counters read between them)."""
    return table.unmapScript(flow) + table.uncountScript(flow)


def test_the_elements_are_deleted_before_the_counters_they_name() -> None:
    lines = removal(KernelUDPTable("t"), FLOW).splitlines()
    assert lines[0].endswith(
        " dnat4 { 10.0.0.1 . 5000 . 192.0.2.1 . 6000, 203.0.113.5 . 8000 . 198.51.100.1 . 7000 }"
    )
    assert [line.split()[4] for line in lines[1:3]] == ["snat4", "count4"]
    assert lines[3:] == ["delete counter inet t f1t", "delete counter inet t f1p"]


@pytest.mark.parametrize(("addresses", "fits"), [
    ((PEER, INTERNAL, EXTERNAL, TARGET), True), ((PEER6, INTERNAL6, EXTERNAL6, TARGET6), True),
    ((PEER6, INTERNAL6, EXTERNAL, TARGET), False), ((PEER, INTERNAL, EXTERNAL, TARGET6), False),
    ((PEER.withPort(0), INTERNAL, EXTERNAL, TARGET), False),
    ((PEER, INTERNAL, EXTERNAL, TARGET.withPort(0)), False),
])  # fmt: skip
def test_only_a_flow_of_one_family_with_real_ports_fits_the_kernel(
    addresses: tuple[Address, Address, Address, Address], fits: bool
) -> None:
    assert fitsKernel(*addresses) is fits


def test_nfts_counter_listing_is_read_by_name() -> None:
    output = counters(f1t=(3, 384), f1p=(0, 0))
    assert parseCounters(output) == {"f1t": (3, 384), "f1p": (0, 0)}


def test_output_that_is_not_json_is_refused() -> None:
    with pytest.raises(ValueError):
        parseCounters(b"Error: No such file or directory")


# Conntrack's netlink messages.


def attributes(data: bytes) -> dict[int, bytes]:
    """Netlink attributes by type (the nested flag dropped)."""
    found, offset = dict[int, bytes](), 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        found[kind & 0x7FFF] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return found


def tupleOf(message: bytes) -> tuple[int, dict[int, bytes], dict[int, bytes]]:
    """The family, IP attributes and protocol attributes of a delete message."""
    original = attributes(attributes(message[20:])[1])
    return message[16], attributes(original[1]), attributes(original[2])


def ack(sequence: int, code: int) -> bytes:
    return struct.pack("=IHHIIi", 36, 2, 0, sequence, 0, code) + b"\0" * 16


def test_a_delete_message_is_a_ctnetlink_delete_asking_for_an_ack() -> None:
    message = deleteMessage(PEER, INTERNAL, socket.IPPROTO_UDP, 42)
    length, kind, flags, sequence, _ = struct.unpack_from("=IHHII", message)
    assert (length, kind, flags, sequence) == (len(message), 0x102, 0x1 | 0x4, 42)


V4 = {1: bytes([10, 0, 0, 1]), 2: bytes([192, 0, 2, 1])}
V6 = {3: ip_address(PEER6.host).packed, 4: ip_address(INTERNAL6.host).packed}


@pytest.mark.parametrize(
    ("source", "destination", "family", "addresses"),
    [(PEER, INTERNAL, socket.AF_INET, V4), (PEER6, INTERNAL6, socket.AF_INET6, V6)],
    ids=["ipv4", "ipv6"],
)
def test_a_delete_message_names_the_udp_tuple_in_network_byte_order(
    source: Address, destination: Address, family: int, addresses: dict[int, bytes]
) -> None:
    found, ip, proto = tupleOf(deleteMessage(source, destination, socket.IPPROTO_UDP, 1))
    assert (found, ip) == (family, addresses)
    assert proto[1][:1] == bytes([socket.IPPROTO_UDP])
    assert (proto[2], proto[3]) == (b"\x13\x88", b"\x17\x70")  # 5000, 6000


@pytest.mark.parametrize(("code", "deleted"), [(0, 1), (-errno.ENOENT, 0)], ids=["ack", "absent"])
def test_an_ack_is_one_entry_deleted_and_an_absent_entry_no_error(code: int, deleted: int) -> None:
    waiting = {1, 2}
    # An answer to another request (7) is no answer to this one.
    assert conntrack._readAcks(ack(7, -errno.EPERM) + ack(1, code), waiting) == deleted
    assert waiting == {2}


def test_another_refusal_is_a_conntrack_error() -> None:
    with pytest.raises(ConntrackError) as raised:
        conntrack._readAcks(ack(1, -errno.EPERM), {1})
    assert raised.value.errno == errno.EPERM


def test_forgetting_no_flow_opens_no_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "socket", opened := Mock())
    assert forgetUDPFlows([]) == 0 and not opened.called


def test_forgetting_without_cap_net_admin_is_a_conntrack_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refused = PermissionError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(socket, "socket", Mock(side_effect=refused))
    with pytest.raises(ConntrackError) as raised:
        forgetUDPFlows(FLOW.conntrackTuples())
    assert raised.value.errno == errno.EPERM


class FakeNetlink(contextlib.nullcontext[None]):
    """A conntrack socket: answers every delete with C{code} once all are sent."""

    def __init__(self, code: int) -> None:
        super().__init__()
        self.code, self.sent = code, list[bytes]()

    def settimeout(self, timeout: float) -> None:
        pass

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        return len(data)

    def recv(self, size: int) -> bytes:
        return b"".join(ack(struct.unpack_from("=I", m, 8)[0], self.code) for m in self.sent)


@pytest.mark.parametrize(("code", "deleted"), [(0, 2), (-errno.ENOENT, 0)], ids=["ack", "absent"])
def test_forgetting_flows_sends_one_delete_each_and_counts_the_deleted(
    monkeypatch: pytest.MonkeyPatch, code: int, deleted: int
) -> None:
    netlink = FakeNetlink(code)
    monkeypatch.setattr(socket, "socket", lambda *args: netlink)
    assert forgetUDPFlows(FLOW.conntrackTuples()) == deleted
    # One delete per direction: (peer -> internal) and (target -> external).
    assert [tupleOf(m)[1][1] for m in netlink.sent] == [V4[1], bytes([203, 0, 113, 5])]


# The registry (KernelUDP) and one redirect's use of it (KernelPath).


class Kernel:
    """A registry on a Clock, a recording conntrack and this nft runner (Deferreds)."""

    def __init__(self) -> None:
        self.clock, self.table = Clock(), KernelUDPTable("t")
        self.scripts: list[tuple[str, Deferred[None]]] = []
        self.outputs: list[tuple[list[str], Deferred[bytes]]] = []
        self.forgotten: list[list[tuple[Address, Address]]] = []
        runner: Any = self
        self.udp = KernelUDP(self.clock, self.table, runner, self.clock, forget=self.forget)

    def runScript(self, script: str) -> Deferred[None]:
        self.scripts.append((script, Deferred()))
        return self.scripts[-1][1]

    def output(self, arguments: list[str]) -> Deferred[bytes]:
        self.outputs.append((list(arguments), Deferred()))
        return self.outputs[-1][1]

    def forget(self, flows: Iterable[tuple[Address, Address]]) -> int:
        self.forgotten.append(list(flows))
        return 0

    def flow(self, target: Address = TARGET) -> kerneludp.FlowCounts:
        return self.udp.newFlow(PEER, INTERNAL, EXTERNAL, target)

    def nftRuns(self, error: Exception | None = None) -> None:
        """The next turn passes, and nft's last script run ends (fails with C{error})."""
        self.clock.advance(0)
        script = self.scripts[-1][1]
        script.errback(error) if error else script.callback(None)

    def added(self) -> kerneludp.FlowCounts:
        self.udp.add(counts := self.flow())
        self.nftRuns()
        return counts

    def countersRead(self, output: bytes = b'{"nftables": []}') -> None:
        self.outputs[-1][1].callback(output)

    def removalRuns(self) -> None:
        """Unmapped, counters read, counters deleted."""
        self.nftRuns()
        self.countersRead()
        self.scripts[-1][1].callback(None)

    def path(self) -> KernelPath:
        return KernelPath(self.udp, self.flow(), "rtp", self.clock)


REFUSED = NftError("nft: Operation not permitted")
TUPLES = [(PEER, INTERNAL), (TARGET, EXTERNAL)]


@pytest.fixture
def kernel() -> Kernel:
    return Kernel()


def fired(d: Deferred[Any]) -> list[object]:
    results: list[object] = []
    d.addBoth(results.append)
    return results


def test_adds_asked_within_one_turn_are_one_nft_run(kernel: Kernel) -> None:
    first, second = kernel.flow(), kernel.udp.newFlow(PEER6, INTERNAL6, EXTERNAL6, TARGET6)
    kernel.udp.add(first)
    kernel.udp.add(second)
    assert kernel.scripts == []
    kernel.clock.advance(0)
    scripts = [script for script, _ in kernel.scripts]
    assert scripts == [kernel.table.addScript(first.flow) + kernel.table.addScript(second.flow)]


def test_every_add_of_the_batch_fires_once_nft_accepts(kernel: Kernel) -> None:
    results = [fired(kernel.udp.add(kernel.flow(TARGET.withPort(p)))) for p in (1, 2)]
    kernel.clock.advance(0)
    assert results == [[], []]
    kernel.nftRuns()
    assert results == [[None], [None]] and kernel.udp.flowCount == 2


def test_added_flows_conntrack_entries_are_forgotten(kernel: Kernel) -> None:
    kernel.added()
    assert kernel.forgotten == [TUPLES]


def test_every_add_of_the_batch_fails_when_nft_refuses(kernel: Kernel) -> None:
    results = [fired(kernel.udp.add(kernel.flow(TARGET.withPort(p)))) for p in (1, 2)]
    kernel.nftRuns(REFUSED)
    assert [r[0].value for r in results if isinstance(r[0], Failure)] == [REFUSED, REFUSED]
    assert kernel.udp.flowCount == 0 and kernel.forgotten == []
    kernel.clock.advance(POLL_INTERVAL * 3)
    assert kernel.outputs == []


def test_the_counters_are_read_every_poll_interval_once_a_flow_lives(kernel: Kernel) -> None:
    kernel.added()
    assert kernel.outputs == []
    kernel.clock.advance(POLL_INTERVAL)
    kernel.countersRead()
    kernel.clock.advance(POLL_INTERVAL)
    assert [argv for argv, _ in kernel.outputs] == [kernel.table.listCountersArgv()] * 2


@pytest.mark.parametrize(
    ("addresses", "headers"),
    [((PEER, INTERNAL, EXTERNAL, TARGET), 28), ((PEER6, INTERNAL6, EXTERNAL6, TARGET6), 48)],
)
def test_the_counts_are_payload_bytes_like_in_python(
    kernel: Kernel, addresses: tuple[Address, Address, Address, Address], headers: int
) -> None:
    kernel.udp.add(counts := kernel.udp.newFlow(*addresses))
    kernel.nftRuns()
    kernel.clock.advance(POLL_INTERVAL)
    kernel.countersRead(counters(f1t=(7, 7 * (1200 + headers)), f1p=(3, 3 * (100 + headers))))
    assert (counts.packetsToTarget, counts.bytesToTarget) == (7, 8400)
    assert (counts.packetsToPeer, counts.bytesToPeer) == (3, 300)
    assert counts.lastActive == POLL_INTERVAL


def test_a_flow_is_active_when_its_counts_last_moved(kernel: Kernel) -> None:
    counts = kernel.added()
    for _ in range(3):
        kernel.clock.advance(POLL_INTERVAL)
        kernel.countersRead(counters(f1t=(1, 128), f1p=(0, 0)))
    assert counts.lastActive == POLL_INTERVAL and counts.bytesToTarget == 100


def test_unreadable_counters_change_nothing_and_polling_goes_on(kernel: Kernel) -> None:
    counts = kernel.added()
    kernel.clock.advance(POLL_INTERVAL)
    kernel.countersRead(b"not json")
    kernel.clock.advance(POLL_INTERVAL)
    kernel.outputs[-1][1].errback(NftError("nft: timed out"))
    kernel.clock.advance(POLL_INTERVAL)
    assert len(kernel.outputs) == 3
    assert counts.packetsToTarget == 0 and counts.lastActive == 0


def test_removal_unmaps_forgets_then_reads_the_last_counts_and_deletes_them(
    kernel: Kernel,
) -> None:
    done = fired(kernel.udp.remove(counts := kernel.added()))
    kernel.clock.advance(0)
    assert kernel.scripts[-1][0] == kernel.table.unmapScript(counts.flow)
    assert kernel.outputs == []
    kernel.scripts[-1][1].callback(None)
    # No new entry is rewritten, the old ones are gone: the counters are final now.
    assert kernel.forgotten[-1] == TUPLES and len(kernel.outputs) == 1
    kernel.countersRead(counters(f1t=(2, 256), f1p=(1, 128)))
    assert (counts.bytesToTarget, counts.bytesToPeer) == (200, 100)
    assert kernel.scripts[-1][0] == kernel.table.uncountScript(counts.flow)
    assert done == []
    kernel.scripts[-1][1].callback(None)
    assert done == [None] and kernel.udp.flowCount == 0


def test_a_failed_removal_deletes_the_table_before_the_ports_go(kernel: Kernel) -> None:
    other = kernel.added()
    done = fired(kernel.udp.remove(kernel.added()))
    kernel.clock.advance(0)
    kernel.scripts[-1][1].errback(NftError("nft: No such file or directory"))
    # The table is no longer what the gateway wrote: it goes, every flow to Python.
    assert kernel.udp.abandoned and not other.inKernel
    assert kernel.scripts[-1][0] == kernel.table.teardownScript() and done == []
    kernel.scripts[-1][1].callback(None)
    assert done == [None] and kernel.udp.flowCount == 0
    assert fired(kernel.udp.add(kernel.flow()))[0].check(NftError)  # type: ignore[attr-defined]


def test_removing_a_flow_never_added_runs_no_nft(kernel: Kernel) -> None:
    done = fired(kernel.udp.remove(kernel.flow()))
    kernel.clock.advance(0)
    assert done == [None] and kernel.outputs == kernel.scripts == kernel.forgotten == []


def test_polling_stops_when_no_flow_is_left(kernel: Kernel) -> None:
    kernel.udp.remove(kernel.added())
    kernel.removalRuns()
    kernel.clock.advance(POLL_INTERVAL * 5)
    assert len(kernel.outputs) == 1


def test_a_refused_kernel_path_leaves_the_redirect_in_python(kernel: Kernel) -> None:
    ready = fired((kernelPath := kernel.path()).ready)
    kernel.nftRuns(REFUSED)
    assert ready == [None] and not kernelPath.active and not kernelPath.installed


def test_a_kernel_path_in_place_is_active(kernel: Kernel) -> None:
    kernelPath = kernel.path()
    kernel.nftRuns()
    assert kernelPath.active and kernelPath.installed


def test_removing_a_kernel_path_twice_removes_it_once(kernel: Kernel) -> None:
    kernelPath = kernel.path()
    kernel.nftRuns()
    first, second = fired(kernelPath.remove()), fired(kernelPath.remove())
    assert not kernelPath.active
    kernel.removalRuns()
    assert first == second == [None] and kernelPath.removed
    assert fired(kernelPath.remove()) == [None]
    kernel.clock.advance(0)
    assert len(kernel.outputs) == 1 and len(kernel.scripts) == 3


def test_removing_a_kernel_path_being_added_waits_for_the_add(kernel: Kernel) -> None:
    kernelPath = kernel.path()
    kernel.clock.advance(0)
    done = fired(kernelPath.remove())
    kernel.clock.advance(0)
    assert kernel.outputs == [] and done == []
    kernel.scripts[0][1].callback(None)
    assert not kernelPath.active and kernelPath.installed
    kernel.removalRuns()
    assert done == [None] and not kernelPath.active and kernel.udp.flowCount == 0
    assert kernel.scripts[1][0] == kernel.table.unmapScript(kernelPath.counts.flow)


def test_stray_datagrams_forget_the_flow_at_most_every_forget_interval(kernel: Kernel) -> None:
    kernelPath = kernel.path()
    kernel.nftRuns()
    kernel.forgotten.clear()
    forgets = []
    for step in (100, 0, FORGET_INTERVAL / 2, FORGET_INTERVAL / 2, 0, FORGET_INTERVAL / 2):
        kernel.clock.advance(step)
        kernelPath.stray()
        forgets.append(len(kernel.forgotten))
    assert forgets == [1, 1, 1, 2, 2, 2] and kernel.forgotten == [TUPLES] * 2
