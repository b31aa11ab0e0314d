"""Forgetting UDP flows in the kernel's connection tracking (ctnetlink), without a tool.

The kernel UDP path (permissions/kerneludp.py) makes the kernel rewrite a flow's
addresses through nftables NAT maps; NAT is decided on a flow's first datagram and
kept in its conntrack entry.  So an entry made before the map held the flow (a
datagram that reached the gateway's socket, or the gateway's own send) keeps the flow
out of the kernel path, and an entry that outlives the map keeps rewriting toward a
peer that is gone, even for the next session given the same port.  Deleting the
entries by tuple settles both: the next datagram makes a new entry from the maps as
they are now.

A lookup by tuple finds an entry by either of its directions, so one delete per
(source, destination) pair removes the flow whichever side sent first.
"""

from __future__ import annotations

import errno
import itertools
import socket
import struct
from collections.abc import Iterable

from fwxtwisted.address import Address

NETLINK_NETFILTER = 12
_NLMSG_ERROR = 2
_NLM_F_REQUEST = 0x1
_NLM_F_ACK = 0x4
_NLA_F_NESTED = 0x8000
#: (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE
_CT_DELETE = (1 << 8) | 2
_CTA_TUPLE_ORIG = 1
_CTA_TUPLE_IP = 1
_CTA_TUPLE_PROTO = 2
_CTA_PROTO_NUM = 1
_CTA_PROTO_SRC_PORT = 2
_CTA_PROTO_DST_PORT = 3

_sequence = itertools.count(1)
#: Deletions sent before their answers are read.
_CHUNK = 64


class ConntrackError(OSError):
    """The kernel refused to delete an entry (for another reason than its absence)."""


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _nested(kind: int, *children: bytes) -> bytes:
    return _attr(kind | _NLA_F_NESTED, b"".join(children))


def deleteMessage(source: Address, destination: Address, protocol: int, sequence: int) -> bytes:
    """The netlink message deleting the entry of C{source} -> C{destination}."""
    family = socket.AF_INET6 if source.isIPv6 else socket.AF_INET
    first = 3 if family == socket.AF_INET6 else 1  # CTA_IP_V6_SRC or CTA_IP_V4_SRC
    tuple_ = _nested(
        _CTA_TUPLE_ORIG,
        _nested(
            _CTA_TUPLE_IP,
            _attr(first, socket.inet_pton(family, source.host)),
            _attr(first + 1, socket.inet_pton(family, destination.host)),
        ),
        _nested(
            _CTA_TUPLE_PROTO,
            _attr(_CTA_PROTO_NUM, struct.pack("B", protocol)),
            _attr(_CTA_PROTO_SRC_PORT, struct.pack("!H", source.port)),
            _attr(_CTA_PROTO_DST_PORT, struct.pack("!H", destination.port)),
        ),
    )
    return _deleteRequest(struct.pack("=BBH", family, 0, 0) + tuple_, sequence)


def _deleteRequest(body: bytes, sequence: int) -> bytes:
    header = struct.pack(
        "=IHHII", 16 + len(body), _CT_DELETE, _NLM_F_REQUEST | _NLM_F_ACK, sequence, 0
    )
    return header + body


_CTA_MARK = 8
_CTA_MARK_MASK = 21


def flushMessage(mark: int, sequence: int) -> bytes:
    """The netlink message deleting every entry (any family) whose mark has C{mark}'s bits."""
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, 0)
    body += _attr(_CTA_MARK, struct.pack("!I", mark)) + _attr(
        _CTA_MARK_MASK, struct.pack("!I", mark)
    )
    return _deleteRequest(body, sequence)


def forgetMarked(mark: int) -> None:
    """Delete every conntrack entry carrying C{mark}'s bits (what a gateway killed
    without its stop left in the kernel).

    @raise ConntrackError: netlink is not available or refused.
    """
    sequence = next(_sequence)
    _send([(sequence, flushMessage(mark, sequence))])


def forgetUDPFlows(flows: Iterable[tuple[Address, Address]]) -> int:
    """Delete the conntrack entries of these UDP flows (source, destination); absent
    ones are no error.

    @return: how many entries were deleted.
    @raise ConntrackError: netlink is not available or refused (no CAP_NET_ADMIN).
    """
    requests = []
    for source, destination in flows:
        sequence = next(_sequence)
        requests.append(
            (sequence, deleteMessage(source, destination, socket.IPPROTO_UDP, sequence))
        )
    return _send(requests) if requests else 0


def _send(requests: list[tuple[int, bytes]]) -> int:
    """Send these delete requests (sequence, message) and read their answers.

    @return: how many entries were deleted.
    """
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    except OSError as e:
        raise ConntrackError(e.errno, f"conntrack netlink: {e.strerror}") from None
    deleted = 0
    with sock:
        sock.settimeout(2.0)
        try:
            # In chunks: every answer queued at once would overflow the socket's
            # receive buffer (ENOBUFS) from about 200 deletions.
            for start in range(0, len(requests), _CHUNK):
                chunk = requests[start : start + _CHUNK]
                for _, message in chunk:
                    sock.send(message)
                waiting = {sequence for sequence, _ in chunk}
                while waiting:
                    deleted += _readAcks(sock.recv(65536), waiting)
        except OSError as e:
            raise ConntrackError(e.errno or 0, f"conntrack netlink: {e}") from None
    return deleted


def _readAcks(data: bytes, waiting: set[int]) -> int:
    deleted = 0
    offset = 0
    while offset + 16 <= len(data):
        length, kind, _, sequence, _ = struct.unpack_from("=IHHII", data, offset)
        if length < 16:
            break
        if kind == _NLMSG_ERROR and sequence in waiting:
            waiting.discard(sequence)
            (code,) = struct.unpack_from("=i", data, offset + 16)
            if code == 0:
                deleted += 1
            elif -code != errno.ENOENT:
                raise ConntrackError(-code, f"conntrack delete: {errno.errorcode.get(-code, code)}")
        offset += (length + 3) & ~3
    return deleted
