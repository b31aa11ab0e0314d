"""The kernel UDP path's choices without the kernel: which flows it takes, whose tables
are stale, what a stop does to changes still pending, and the mark flush message."""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from fwxtwisted.address import Address
from fwxtwisted.net.conntrack import flushMessage
from fwxtwisted.net.kernelnat import FLOW_MARK, KernelUDPTable, gatewayTables, parseCounters
from fwxtwisted.net.nft import NftError
from fwxtwisted.permissions.kerneludp import KernelUDP

REMOTE_PEER, REMOTE_SERVER = Address("192.0.2.10", 5000), Address("198.51.100.20", 6000)
LOCAL = Address("127.0.0.1", 5000)


class Runner:
    """An nft runner whose asynchronous runs the test finishes."""

    def __init__(self) -> None:
        self.scripts: list[tuple[str, Deferred[None]]] = []

    def runScriptNow(self, script: str) -> None:
        self.scripts.append((script, succeed(None)))

    def runScript(self, script: str) -> Deferred[None]:
        done: Deferred[None] = Deferred()
        self.scripts.append((script, done))
        return done

    def output(self, arguments: Any) -> Deferred[bytes]:
        return succeed(b'{"nftables": []}')


def registry(forwarding: bool, runner: Runner | None = None) -> KernelUDP:
    return KernelUDP(
        Clock(),
        KernelUDPTable("t"),
        runner or Runner(),  # type: ignore[arg-type]
        clock=Clock(),
        forget=lambda flows: 0,
        forgetMarked=lambda mark: None,
        forwarding=lambda isIPv6: forwarding,
    )


def test_with_forwarding_on_the_kernel_takes_flows_between_other_hosts() -> None:
    assert registry(forwarding=True).carries(REMOTE_PEER, REMOTE_SERVER)


def test_with_forwarding_off_flows_to_other_hosts_stay_in_python() -> None:
    # The kernel would rewrite them and then drop them, unforwarded: nothing would pass.
    assert not registry(forwarding=False).carries(REMOTE_PEER, REMOTE_SERVER)


@pytest.mark.parametrize("forwarding", [True, False])
def test_a_flow_between_this_host_and_another_stays_in_python(forwarding: bool) -> None:
    # Rewritten on input, its source would not be translated nor counted; a loopback
    # source cannot reach another host at all.
    assert not registry(forwarding).carries(LOCAL, REMOTE_SERVER)
    assert not registry(forwarding).carries(REMOTE_PEER, LOCAL)


def test_with_forwarding_off_flows_between_local_peers_still_go_to_the_kernel() -> None:
    assert registry(forwarding=False).carries(LOCAL, Address("127.0.0.2", 6000))


def test_only_the_path_s_own_inet_tables_are_the_gateways() -> None:
    listing = json.dumps(
        {
            "nftables": [
                {"metainfo": {"version": "1.0.6"}},
                {"table": {"family": "inet", "name": "fwxtwisted_udp_4242_a1b2c3", "handle": 1}},
                {"table": {"family": "inet", "name": "fwxtwisted_udp", "handle": 2}},
                {"table": {"family": "inet", "name": "fwxtwisted", "handle": 3}},
                {"table": {"family": "ip", "name": "fwxtwisted_udp_7", "handle": 4}},
                {"table": {"family": "inet", "name": "filter", "handle": 5}},
            ]
        }
    ).encode()
    assert gatewayTables(listing) == ["fwxtwisted_udp_4242_a1b2c3"]


@pytest.mark.parametrize("output", [b"[]", b'"x"', b"not json"])
def test_output_that_is_not_an_nft_listing_is_a_value_error(output: bytes) -> None:
    with pytest.raises(ValueError):
        parseCounters(output)
    with pytest.raises(ValueError):
        gatewayTables(output)


def test_a_stop_refuses_pending_adds_and_completes_pending_removals_quietly() -> None:
    runner = Runner()
    kernel = registry(forwarding=True, runner=runner)
    kept = kernel.newFlow(LOCAL, LOCAL.withPort(6000), LOCAL.withPort(7000), LOCAL.withPort(8000))
    adding = kernel.add(kept)
    kernel._clock.advance(0)  # type: ignore[attr-defined]
    runner.scripts[-1][1].callback(None)
    assert adding.called and kernel.flowCount == 1
    removing = kernel.remove(kept)
    late = kernel.newFlow(LOCAL, LOCAL.withPort(6002), LOCAL.withPort(7002), LOCAL.withPort(8002))
    refused = kernel.add(late)
    kernel.stop()
    failures: list[Any] = []
    refused.addErrback(failures.append)
    assert removing.called and kernel.flowCount == 0
    assert failures and failures[0].check(NftError)
    # The table itself went with the stop's own script.
    assert "delete table inet t" in runner.scripts[-1][0]


def test_the_flush_message_asks_for_every_family_and_the_flow_bit_only() -> None:
    message = flushMessage(FLOW_MARK, 7)
    length, kind, flags, sequence, _ = struct.unpack_from("=IHHII", message)
    assert (length, kind, sequence) == (len(message), 0x102, 7)
    assert message[16] == socket.AF_UNSPEC
    # CTA_MARK (8) and CTA_MARK_MASK (21), both the flow bit in network order.
    attributes = message[20:]
    assert struct.unpack("=HH", attributes[:4]) == (8, 8)
    assert struct.unpack("!I", attributes[4:8]) == (FLOW_MARK,)
    assert struct.unpack("=HH", attributes[8:12]) == (8, 21)
    assert struct.unpack("!I", attributes[12:16]) == (FLOW_MARK,)
