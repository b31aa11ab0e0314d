"""The kernel UDP path's nftables table: NAT maps that carry a UDP flow's datagrams in
the kernel, and a named counter per direction.

A L{KernelFlow} is one UDP redirect with a known peer: datagrams from C{peer} to the
gateway's C{internal} address go to C{target} from the gateway's C{external} address,
and datagrams from C{target} to C{external} go back to C{peer} from C{internal}.  The
table holds, per IP family:

  - C{dnat4}: (source IP, source port, destination IP, destination port) -> new
    destination, looked up in nat prerouting (datagrams from elsewhere) and nat output
    (from this host, e.g. a player or server on the gateway itself);
  - C{snat4}: the flow's original destination -> new source, looked up in nat
    postrouting on the conntrack entry's original tuple (so whichever side sends
    first, the other's datagrams are the entry's replies);
  - C{count4}: the rewritten datagram's addresses -> one of the flow's two named
    counters, in a filter postrouting chain.

Only the first datagram of a flow passes the nat chains (conntrack keeps the NAT for
the rest), so an element's removal must come with the flow's conntrack entries'
(net/conntrack.py).  This module only writes nft scripts and reads nft's JSON
(net/nft.py runs them).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from fwxtwisted.address import Address

DEFAULT_TABLE = "fwxtwisted_udp"
FAMILY = "inet"
#: nat prerouting/output before a user's own dstnat (-100); postrouting before srcnat
#: (100), so a masquerade rule does not take the flow's datagrams first.
DNAT_PRIORITY = -110
SNAT_PRIORITY = 90
COUNT_PRIORITY = 300
#: The bit of the conntrack mark the table sets on its flows (others are kept): after a
#: gateway killed without its stop, the next start deletes the entries that carry it,
#: which would otherwise go on rewriting for as long as their peers send.
FLOW_MARK = 0x40000000


@dataclass(frozen=True)
class KernelFlow:
    """One redirect's datagrams, both ways (see the module docstring)."""

    name: str
    peer: Address
    internal: Address
    external: Address
    target: Address

    @property
    def isIPv6(self) -> bool:
        return self.peer.isIPv6

    @property
    def counterToTarget(self) -> str:
        return self.name + "t"

    @property
    def counterToPeer(self) -> str:
        return self.name + "p"

    def conntrackTuples(self) -> list[tuple[Address, Address]]:
        """The (source, destination) pairs whose conntrack entries carry this flow (or
        would keep it out of the kernel path)."""
        return [(self.peer, self.internal), (self.target, self.external)]


def fitsKernel(peer: Address, internal: Address, external: Address, target: Address) -> bool:
    """Can the kernel rewrite this flow: one IP family on both sides, real ports."""
    addresses = (peer, internal, external, target)
    families = {a.isIPv6 for a in addresses}
    return (
        len(families) == 1
        and all(a.port for a in addresses)
        and not any("%" in a.host for a in addresses)  # link-local with a scope
    )


def _ip(address: Address) -> str:
    # Validated here: the text goes into an nft script.
    ip = ipaddress.ip_address(address.host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        raise ValueError(f"a scoped address has no place in a NAT map: {address.host!r}")
    return str(ip)


def _concat(*addresses: Address) -> str:
    return " . ".join(f"{_ip(a)} . {int(a.port)}" for a in addresses)


class KernelUDPTable:
    """The nft scripts of the kernel UDP path's table (made at start, deleted at stop).

    Written in nft's own syntax rather than its JSON: nft 1.0.6's JSON parser crashes
    on a map whose data is a concatenation.
    """

    def __init__(self, name: str = DEFAULT_TABLE) -> None:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,62}", name):
            raise ValueError(f"not an nftables table name: {name!r}")
        self.name = name

    def setupScript(self) -> str:
        """Delete what a previous run left, then make the maps, chains and rules."""
        lines = [
            f"add table {FAMILY} {self.name}",
            f"delete table {FAMILY} {self.name}",
            f"table {FAMILY} {self.name} {{",
        ]
        rules: dict[str, list[str]] = {"to_in": [], "to_local": [], "from_out": [], "counted": []}
        for proto, addr, nfproto in (("ip", "ipv4_addr", "ipv4"), ("ip6", "ipv6_addr", "ipv6")):
            s = "6" if proto == "ip6" else "4"
            pair = f"{addr} . inet_service"
            lines += [
                f"  map dnat{s} {{ type {pair} . {pair} : {pair}; }}",
                f"  map snat{s} {{ type {pair} : {pair}; }}",
                f"  map count{s} {{ type {pair} . {pair} : counter; }}",
            ]
            key = f"{proto} saddr . udp sport . {proto} daddr . udp dport"
            udp = f"meta nfproto {nfproto} meta l4proto udp"
            dnat = f"{udp} dnat {proto} to {key} map @dnat{s}"
            rules["to_in"].append(dnat)
            rules["to_local"].append(dnat)
            rules["from_out"].append(
                f"{udp} snat {proto} to ct original {proto} daddr . ct original proto-dst "
                f"map @snat{s}"
            )
            rules["counted"].append(
                f"{udp} ct status dnat counter name {key} map @count{s} "
                f"ct mark set ct mark or {FLOW_MARK:#x}"
            )
        hooks = {
            "to_in": ("nat", "prerouting", DNAT_PRIORITY),
            "to_local": ("nat", "output", DNAT_PRIORITY),
            "from_out": ("nat", "postrouting", SNAT_PRIORITY),
            "counted": ("filter", "postrouting", COUNT_PRIORITY),
        }
        for chain, (kind, hook, prio) in hooks.items():
            lines.append(f"  chain {chain} {{")
            lines.append(f"    type {kind} hook {hook} priority {prio}; policy accept;")
            lines += [f"    {rule}" for rule in rules[chain]]
            lines.append("  }")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def teardownScript(self) -> str:
        return f"add table {FAMILY} {self.name}\ndelete table {FAMILY} {self.name}\n"

    def listCountersArgv(self) -> list[str]:
        """The nft arguments that print every counter of the table as JSON."""
        return ["-j", "list", "counters", "table", FAMILY, self.name]

    def _element(self, verb: str, map_: str, flow: KernelFlow, elems: list[str]) -> str:
        suffix = "6" if flow.isIPv6 else "4"
        return f"{verb} element {FAMILY} {self.name} {map_}{suffix} {{ {', '.join(elems)} }}"

    def addScript(self, flow: KernelFlow) -> str:
        """The counters first (the count map names them), then the maps' elements."""
        return (
            "\n".join(
                [
                    f"add counter {FAMILY} {self.name} {flow.counterToTarget}",
                    f"add counter {FAMILY} {self.name} {flow.counterToPeer}",
                    self._element(
                        "add",
                        "dnat",
                        flow,
                        [
                            f"{_concat(flow.peer, flow.internal)} : {_concat(flow.target)}",
                            f"{_concat(flow.target, flow.external)} : {_concat(flow.peer)}",
                        ],
                    ),
                    self._element(
                        "add",
                        "snat",
                        flow,
                        [
                            f"{_concat(flow.internal)} : {_concat(flow.external)}",
                            f"{_concat(flow.external)} : {_concat(flow.internal)}",
                        ],
                    ),
                    self._element(
                        "add",
                        "count",
                        flow,
                        [
                            f'{_concat(flow.external, flow.target)} : "{flow.counterToTarget}"',
                            f'{_concat(flow.internal, flow.peer)} : "{flow.counterToPeer}"',
                        ],
                    ),
                ]
            )
            + "\n"
        )

    def unmapScript(self, flow: KernelFlow) -> str:
        """The NAT maps' elements: no new conntrack entry of the flow is rewritten."""
        return (
            "\n".join(
                [
                    self._element(
                        "delete",
                        "dnat",
                        flow,
                        [_concat(flow.peer, flow.internal), _concat(flow.target, flow.external)],
                    ),
                    self._element(
                        "delete", "snat", flow, [_concat(flow.internal), _concat(flow.external)]
                    ),
                ]
            )
            + "\n"
        )

    def uncountScript(self, flow: KernelFlow) -> str:
        """The count map's elements, then the counters they named."""
        return (
            "\n".join(
                [
                    self._element(
                        "delete",
                        "count",
                        flow,
                        [_concat(flow.external, flow.target), _concat(flow.internal, flow.peer)],
                    ),
                    f"delete counter {FAMILY} {self.name} {flow.counterToTarget}",
                    f"delete counter {FAMILY} {self.name} {flow.counterToPeer}",
                ]
            )
            + "\n"
        )


def gatewayTables(listing: bytes, prefix: str = DEFAULT_TABLE) -> list[str]:
    """The kernel UDP path's tables (C{prefix_...}, family inet) in C{nft -j list
    tables} output.

    @raise ValueError: the output is not nft's JSON.
    """
    document = json.loads(listing)
    if not isinstance(document, dict):
        raise ValueError("not nft's JSON listing")
    names = []
    for item in document.get("nftables", []):
        table = item.get("table") if isinstance(item, dict) else None
        if not isinstance(table, dict) or table.get("family") != FAMILY:
            continue
        name = str(table.get("name", ""))
        if re.fullmatch(re.escape(prefix) + r"_[A-Za-z0-9_]+", name):
            names.append(name)
    return names


def parseCounters(output: bytes) -> Mapping[str, tuple[int, int]]:
    """Named counters (packets, bytes) by name, from C{nft -j list counters} output.

    @raise ValueError: the output is not nft's JSON.
    """
    document = json.loads(output)
    if not isinstance(document, dict):
        raise ValueError("not nft's JSON listing")
    counters: dict[str, tuple[int, int]] = {}
    for item in document.get("nftables", []):
        counter = item.get("counter") if isinstance(item, dict) else None
        if isinstance(counter, dict) and "name" in counter:
            counters[str(counter["name"])] = (
                int(counter.get("packets", 0)),
                int(counter.get("bytes", 0)),
            )
    return counters
