"""The kernel UDP path: an RTSP-shaped pair redirected with kernel_udp on, over real
loopback sockets, with the real nftables and conntrack (root only).

What a user would notice: the datagrams arrive from the announced ports as in user
mode, the gateway's own sockets no longer read them, the counts are still exact at the
end, nothing is left in the kernel once a track ends, and a port given to the next
session carries nothing of the last one's flow.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
import pytest_twisted
import support
from support import LOCAL, Network, within
from test_rtp_pairs import EXTERNAL, Track, addressOf, rtpSession, track, until
from twisted.internet import reactor

from fwxtwisted.app import kernelpath
from fwxtwisted.app.kernelpath import KernelPathError, TableClaim
from fwxtwisted.interfaces import ActionState, DatagramCounts, RedirectFlags, Transport
from fwxtwisted.net.kernelnat import FLOW_MARK, KernelUDPTable
from fwxtwisted.net.nft import NftRunner
from fwxtwisted.permissions.gateway import Gateway
from fwxtwisted.permissions.kerneludp import KernelUDP
from fwxtwisted.settings import GatewaySettings
from tests.peers import requirePeer, requireRoot

net = support.net


def tableOf(rtp: Track) -> str:
    """The name of the table of the gateway that carries C{rtp}."""
    name: str = rtp.session._gateway.kernelUDP.table.name
    return name


@pytest.fixture(autouse=True)
def _kernelPeers() -> None:
    requireRoot("the kernel UDP path (nftables, conntrack)")
    requirePeer("nft")


def tableState(table: str) -> dict[str, list[object]]:
    """The table's map elements and counters, as nft lists them ({} once it is gone)."""
    done = subprocess.run(
        ["nft", "-j", "list", "table", "inet", table], capture_output=True, check=False
    )
    if done.returncode != 0:
        return {}
    state: dict[str, list[object]] = {"counters": []}
    for item in json.loads(done.stdout)["nftables"]:
        if "map" in item:
            state[item["map"]["name"]] = item["map"].get("elem", [])
        elif "counter" in item:
            state["counters"].append(item["counter"]["name"])
    return state


def conntrackLines(*ports: int) -> list[str]:
    text = Path("/proc/net/nf_conntrack").read_text()
    return [line for line in text.splitlines() if any(f"={port} " in line for port in ports)]


async def kernelTrack(net: Network, **kwargs: object) -> Track:
    return await track(net, kernelUDP=True, **kwargs)  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_media_flows_both_ways_from_the_announced_ports_without_the_gateway_reading_it(
    net: Network,
) -> None:
    rtp = await kernelTrack(net)
    assert rtp.action(0).kernel is not None and rtp.action(0).kernel.active
    for round_ in range(20):
        rtp.server[0].send(b"rtp %d" % round_, rtp.serverFacing.addressOf(0))
        assert await within(rtp.client[0].received.get()) == (
            b"rtp %d" % round_,
            rtp.clientFacing(0),
        )
    rtp.client[1].send(b"receiver report", rtp.clientFacing(1))
    assert await within(rtp.server[1].received.get()) == (
        b"receiver report",
        rtp.serverFacing.addressOf(1),
    )
    # The gateway's sockets read none of it: the kernel carried every datagram.
    assert rtp.serverFacing.countsOf(0).packetsIn == 0
    assert rtp.serverFacing.countsOf(1).packetsOut == 0


@pytest_twisted.ensureDeferred
async def test_counts_are_exact_once_the_track_ends(net: Network) -> None:
    rtp = await kernelTrack(net)
    for _ in range(7):
        rtp.server[0].send(b"x" * 1200, rtp.serverFacing.addressOf(0))
        await within(rtp.client[0].received.get())
    for _ in range(3):
        rtp.client[0].send(b"y" * 100, rtp.clientFacing(0))
        await within(rtp.server[0].received.get())
    action = rtp.action(0)
    action.cancel()
    await within(action.whenFinished())
    assert action.datagramCounts == DatagramCounts(3, 300, 7, 8400, 0)


@pytest_twisted.ensureDeferred
async def test_nothing_is_left_in_the_kernel_after_the_track_and_its_ports_are_free(
    net: Network,
) -> None:
    rtp = await kernelTrack(net)
    rtp.server[0].send(b"rtp", rtp.serverFacing.addressOf(0))
    await within(rtp.client[0].received.get())
    ports = [rtp.serverFacing.addressOf(0).port, rtp.clientFacing(0).port]
    assert conntrackLines(*ports)
    assert len(tableState(tableOf(rtp))["dnat4"]) == 4  # two per redirect, RTP and RTCP
    for action in rtp.redirection.actions:
        action.cancel()
    rtp.serverFacing.cancel()
    for action in rtp.redirection.actions:
        assert await within(action.whenFinished()) is ActionState.CANCELLED
    state = tableState(tableOf(rtp))
    assert state["dnat4"] == [] and state["snat4"] == [] and state["count4"] == []
    assert state["counters"] == []
    assert conntrackLines(*ports) == []
    # The ports went back to the pool only after that: they can be bound again.
    for host, port in ((EXTERNAL, ports[0]), (LOCAL, ports[1])):
        net.occupy(host, port)


@pytest_twisted.ensureDeferred
async def test_a_server_still_sending_after_the_end_reaches_nobody(net: Network) -> None:
    rtp = await kernelTrack(net)
    rtp.server[0].send(b"during", rtp.serverFacing.addressOf(0))
    await within(rtp.client[0].received.get())
    old = rtp.serverFacing.addressOf(0)
    for action in rtp.redirection.actions:
        action.cancel()
        await within(action.whenFinished())
    rtp.server[0].send(b"after the end", old)
    rtp.server[0].send(b"after the end", old)
    await support.turns(10)
    assert rtp.client[0].count == 1


@pytest_twisted.ensureDeferred
async def test_a_datagram_sent_before_the_kernel_held_the_flow_does_not_pin_it_to_python(
    net: Network,
) -> None:
    # The server sends to the pair it was told of before the redirect exists: the
    # kernel makes an un-rewritten conntrack entry for it, which would keep every later
    # datagram of that flow on the gateway's socket.  The redirect forgets it.
    session = await rtpSession(net, kernelUDP=True)  # type: ignore[arg-type]
    client = (net.udp(), net.udp())
    server = (net.udp(), net.udp())
    serverFacing = session.openDatagramPorts(2, evenBase=True)
    server[0].send(b"too early", serverFacing.addressOf(0))
    await until(lambda: serverFacing.dropped == 1)
    redirection = await within(
        session.redirectConnections(
            [addressOf(server[0]), addressOf(server[1])],
            transport=Transport.UDP,
            flags=RedirectFlags.EVEN_PORTS,
            outboundPorts=serverFacing,
            peerAddresses=[addressOf(client[0]), addressOf(client[1])],
            udpIdleTimeout=0,
        )
    )
    internal = redirection.internalAddress
    server[0].send(b"in time", serverFacing.addressOf(0))
    assert await within(client[0].received.get()) == (b"in time", internal)
    assert serverFacing.countsOf(0).packetsIn == 0


@pytest_twisted.ensureDeferred
async def test_no_kernel_mode_keeps_a_redirect_in_python(net: Network) -> None:
    session = await rtpSession(net, kernelUDP=True)  # type: ignore[arg-type]
    client, server = net.udp(), net.udp()
    redirection = await within(
        session.redirectConnections(
            [addressOf(server)],
            transport=Transport.UDP,
            flags=RedirectFlags.NO_KERNEL_MODE,
            peerAddresses=[addressOf(client)],
        )
    )
    action = redirection.actions[0]
    assert getattr(action, "kernel", "missing") is None
    client.send(b"hello", redirection.internalAddress)
    received, source = await within(server.received.get())
    assert received == b"hello" and source.host == EXTERNAL


def test_kernel_udp_that_cannot_be_had_stops_the_start_with_one_clear_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("fwxtwisted.net.nft.nftPath", lambda: None)
    gateway = Gateway(object(), GatewaySettings(kernelUDP=True))
    with pytest.raises(KernelPathError, match="kernel_udp: .*nft not found.*CAP_NET_ADMIN"):
        kernelpath.startKernelUDP(gateway)
    assert gateway.kernelUDP is None


def test_each_gateway_process_holds_a_table_name_of_its_own(tmp_path: Path) -> None:
    first, second = TableClaim(tmp_path), TableClaim(tmp_path)
    try:
        assert first.name != second.name
        assert first.name.startswith(f"fwxtwisted_udp_{os.getpid()}_")
    finally:
        first.release()
        second.release()
    assert list(tmp_path.iterdir()) == []


def test_a_start_deletes_the_tables_of_gateways_that_died_and_only_those(
    tmp_path: Path,
) -> None:
    alive = TableClaim(tmp_path)
    dead = TableClaim(tmp_path)
    # Died without its stop: its lock file is there, nobody holds the lock.
    assert dead._fd is not None
    os.close(dead._fd)
    dead._fd = None
    unseen = f"fwxtwisted_udp_{os.getpid()}_unseen"  # a gateway in another mount namespace
    names = [alive.name, dead.name, unseen]
    try:
        for name in names:
            subprocess.run(["nft", "add", "table", "inet", name], check=True)
        deleted = kernelpath.removeStaleTables(NftRunner(), tmp_path)
        left = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    finally:
        alive.release()
        for name in names:
            subprocess.run(["nft", "delete", "table", "inet", name], capture_output=True)
    assert deleted == [dead.name]
    assert alive.name in left and unseen in left and dead.name not in left
    assert not (tmp_path / f"{dead.name}.lock").exists()


@pytest_twisted.ensureDeferred
async def test_a_restart_after_a_kill_stops_what_the_dead_gateway_left_rewriting(
    net: Network,
) -> None:
    rtp = await kernelTrack(net)
    rtp.server[0].send(b"before the kill", rtp.serverFacing.addressOf(0))
    await within(rtp.client[0].received.get())
    ports = [rtp.serverFacing.addressOf(0).port, rtp.clientFacing(0).port]
    assert all(f"mark={FLOW_MARK} " in line for line in conntrackLines(*ports))
    # A gateway killed with SIGKILL runs no stop: its table and its conntrack entries
    # stay, and the entries would go on rewriting while the server sends.  The next
    # gateway's start (here a second registry on the same table) clears both.
    KernelUDP(reactor, KernelUDPTable(tableOf(rtp))).start()
    assert conntrackLines(*ports) == []
    rtp.server[0].send(b"after the restart", rtp.serverFacing.addressOf(0))
    await support.turns(10)
    assert rtp.client[0].count == 1


def bindUDP(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((host, port))


@pytest_twisted.ensureDeferred
async def test_ending_a_track_frees_its_ports_only_once_the_kernel_has_let_go(
    net: Network,
) -> None:
    rtp = await kernelTrack(net)
    external = rtp.serverFacing.addressOf(0)
    # What the RTSP filter's Track.close does: the redirects, then the server-facing pair.
    for action in rtp.redirection.actions:
        action.cancel()
    rtp.serverFacing.cancel()
    with pytest.raises(OSError):
        bindUDP(external.host, external.port)  # still held: the maps still name it
    await within(rtp.serverFacing.whenFinished())
    assert tableState(tableOf(rtp))["dnat4"] == []
    bindUDP(external.host, external.port)


@pytest_twisted.ensureDeferred
async def test_a_table_deleted_behind_the_gateway_s_back_hands_the_media_to_python(
    net: Network,
) -> None:
    # An `nft flush ruleset` (a firewall reload) takes the table: the gateway notices at
    # its next reading of the counters and carries the media itself from then on.
    rtp = await kernelTrack(net)
    rtp.server[0].send(b"in the kernel", rtp.serverFacing.addressOf(0))
    await within(rtp.client[0].received.get())
    registry = rtp.session._gateway.kernelUDP
    subprocess.run(["nft", "delete", "table", "inet", tableOf(rtp)], check=True)
    await within(registry.recount())
    await until(lambda: not conntrackLines(rtp.serverFacing.addressOf(0).port))
    assert registry.abandoned and not rtp.action(0).kernel.active
    rtp.server[0].send(b"in python", rtp.serverFacing.addressOf(0))
    assert await within(rtp.client[0].received.get()) == (b"in python", rtp.clientFacing(0))
    assert rtp.serverFacing.countsOf(0).packetsIn == 1
