"""allowFutureConnect for real: the gateway's nftables table lets one permitted flow
through, once; SIGKILL then a restart leaves nothing behind (root; see netns.py)."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator

import pytest

from tests.transparent.netns import (
    GATEWAY_WAN4,
    INTERCEPTED_PORT,
    LISTEN_PORT,
    OTHER_PORT,
    SERVER4,
    Namespaces,
    NetnsProcess,
    elements,
    namespaces,
    peerTool,
)

READY = "allowFutureConnect: nftables table"


@pytest.fixture(scope="module")
def ns() -> Iterator[Namespaces]:
    with namespaces("f") as made:
        server = NetnsProcess(
            made.server, peerTool("server", str(INTERCEPTED_PORT), str(OTHER_PORT)), "server"
        )
        with server.start():
            server.waitFor("ready")
            made.serverProcess = server  # type: ignore[attr-defined]
            yield made


def grantGateway(ns: Namespaces) -> NetnsProcess:
    argv = [sys.executable, "-m", "tests.transparent.grantgateway"]
    argv += [str(LISTEN_PORT), str(OTHER_PORT), GATEWAY_WAN4]
    return NetnsProcess(ns.gateway, argv, "grant-gateway").start()


def grant(ns: Namespaces) -> dict[str, object]:
    argv = peerTool("grant", SERVER4, str(INTERCEPTED_PORT), str(OTHER_PORT))
    output = ns.exec(ns.client, *argv, timeout=60, check=False)
    result: dict[str, object] = json.loads(output.strip().splitlines()[-1])
    return result


def test_permitted_flow_passes_once(ns: Namespaces) -> None:
    with grantGateway(ns) as gateway:
        gateway.waitFor(READY)
        result = grant(ns)
        assert result["echoed"] == "x", (result, gateway.log())
        assert result["first"]["ok"], (result, gateway.log())  # type: ignore[index]
        assert not result["second"]["ok"], result  # type: ignore[index]
        server = ns.serverProcess.log()  # type: ignore[attr-defined]
        assert server.count(f"accepted {OTHER_PORT} {GATEWAY_WAN4}") == 1
        gateway.waitFor("event CONNECTION_TERMINATING")
        # Single use: the element went when the flow was accepted; the session's end
        # took nothing else with it.
        assert elements(ns) == []


def test_sigkill_then_restart_leaves_nothing(ns: Namespaces) -> None:
    with grantGateway(ns) as gateway:
        gateway.waitFor(READY)
        # A permission nobody uses, alive while its primary connection is held.
        holder = NetnsProcess(
            ns.client,
            [sys.executable, "-c", HOLD, SERVER4, str(INTERCEPTED_PORT)],
            "holder",
        )
        with holder.start():
            holder.waitFor("held")
            assert len(elements(ns)) == 1
            gateway.signal(signal.SIGKILL)
            assert len(elements(ns)) == 1  # what a crash leaves
    with grantGateway(ns) as again:
        again.waitFor(READY)
        assert elements(ns) == []
        again.signal(signal.SIGTERM)
        again.waitFor("stopped")
    assert "fwxtwisted" not in ns.tables()


HOLD = """
import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
c.sendall(b"x"); c.recv(1); print("held", flush=True); time.sleep(60)
"""
