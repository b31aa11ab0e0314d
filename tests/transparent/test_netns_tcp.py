"""twistd fwx tcp --transparent between three namespaces (root; see netns.py).

The client connects to the server's address; the gateway's ruleset
(examples/transparent.nft, loaded as it is) redirects port 7000 to the gateway, which
connects to the original destination from its own WAN address (the server sees the
gateway, not the client: the gateway is a proxy, not a router).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator

import pytest

from tests.transparent.netns import (
    CLIENT4,
    GATEWAY_LAN4,
    GATEWAY_WAN4,
    GATEWAY_WAN6,
    INTERCEPTED_PORT,
    LISTEN_PORT,
    OTHER_PORT,
    SERVER4,
    SERVER6,
    Namespaces,
    NetnsProcess,
    namespaces,
    peerTool,
    twistd,
)

SIZE = 16 << 20


@pytest.fixture(scope="module")
def ns() -> Iterator[Namespaces]:
    with namespaces("t") as made:
        server = NetnsProcess(
            made.server, peerTool("server", str(INTERCEPTED_PORT), str(OTHER_PORT)), "server"
        )
        with server.start():
            server.waitFor("ready")
            made.serverProcess = server  # type: ignore[attr-defined]
            yield made


@pytest.fixture(scope="module")
def gateway(ns: Namespaces) -> Iterator[NetnsProcess]:
    process = NetnsProcess(
        ns.gateway,
        twistd(
            "tcp",
            "--listen",
            f"tcp6:{LISTEN_PORT}",
            "--transparent",
            "--external-address",
            GATEWAY_WAN4,
            "--external-address",
            GATEWAY_WAN6,
        ),  # fmt: skip
        "gateway",
    )
    with process.start():
        process.waitFor("allowFutureConnect: nftables table")
        yield process


def client(ns: Namespaces, *argv: str) -> dict[str, object]:
    output = ns.exec(ns.client, *peerTool(*argv), timeout=60, check=False)
    result: dict[str, object] = json.loads(output.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("server,external", [(SERVER4, GATEWAY_WAN4), (SERVER6, GATEWAY_WAN6)])
def test_relayed_to_the_original_destination(
    ns: Namespaces, gateway: NetnsProcess, server: str, external: str
) -> None:
    result = client(ns, "client", server, str(INTERCEPTED_PORT), str(SIZE))
    assert result["ok"], (result, gateway.log())
    assert result["received"] == SIZE
    log = ns.serverProcess.log()  # type: ignore[attr-defined]
    assert f"accepted {INTERCEPTED_PORT} {external}" in log
    assert CLIENT4 not in log


@pytest.mark.parametrize("server", [SERVER4, SERVER6])
def test_other_port_without_permission_refused(
    ns: Namespaces, gateway: NetnsProcess, server: str
) -> None:
    result = client(ns, "probe", server, str(OTHER_PORT))
    assert not result["ok"]
    assert f"accepted {OTHER_PORT}" not in ns.serverProcess.log()  # type: ignore[attr-defined]


def test_destination_is_the_gateway_refused(ns: Namespaces, gateway: NetnsProcess) -> None:
    result = client(ns, "probe", GATEWAY_LAN4, str(INTERCEPTED_PORT))
    assert not result["ok"]
    gateway.waitFor(f"to {GATEWAY_LAN4}:{INTERCEPTED_PORT}: its destination is the gateway itself")


def test_sigterm_leaves_no_table(ns: Namespaces, gateway: NetnsProcess) -> None:
    assert "table inet fwxtwisted" in ns.tables()
    gateway.signal(signal.SIGTERM)
    # twistd ends itself with the signal it got once it has stopped cleanly.
    assert gateway.returncode in (0, -signal.SIGTERM), gateway.log()
    assert "Server Shut Down." in gateway.log()
    ruleset = ns.tables()
    assert "fwxtwisted" not in ruleset
    assert "table inet fwx_transparent" in ruleset


#: The tproxy variant in the comments of examples/transparent.nft, applied to it.
TPROXY = f"""
delete chain inet fwx_transparent prerouting
table inet fwx_transparent {{
    chain prerouting {{
        type filter hook prerouting priority mangle; policy accept;
        iifname "lan0" meta l4proto tcp tcp dport {INTERCEPTED_PORT} \\
            tproxy to :{LISTEN_PORT} meta mark set 1 accept
    }}
}}
insert rule inet fwx_transparent input meta mark 1 accept
"""


@pytest.mark.parametrize("server,external", [(SERVER4, GATEWAY_WAN4), (SERVER6, GATEWAY_WAN6)])
def test_tproxy(ns: Namespaces, server: str, external: str) -> None:
    """Packets kept their destination (no NAT): the accepted socket's local address
    is the original destination.  Runs after the redirect tests (it replaces the
    example's prerouting chain in this module's namespaces)."""
    if "tproxy" not in ns.tables():
        for family, everything in (("-4", "0.0.0.0/0"), ("-6", "::/0")):
            ns.exec(ns.gateway, "ip", family, "rule", "add", "fwmark", "1", "lookup", "100")
            ns.exec(ns.gateway, "ip", family, "route", "add", "local", everything,
                    "dev", "lo", "table", "100")  # fmt: skip
        ns.exec(ns.gateway, "nft", "-f", "-", input=TPROXY)
    assert "redirect" not in ns.exec(ns.gateway, "nft", "list", "chain", "inet",
                                     "fwx_transparent", "prerouting")  # fmt: skip
    process = NetnsProcess(
        ns.gateway,
        twistd(
            "tcp",
            "--listen",
            f"tcp6:{LISTEN_PORT}",
            "--transparent",
            "--external-address",
            GATEWAY_WAN4,
            "--external-address",
            GATEWAY_WAN6,
        ),  # fmt: skip
        "gateway",
    )
    before = ns.serverProcess.log().count(f"accepted {INTERCEPTED_PORT} {external}")  # type: ignore[attr-defined]
    with process.start():
        process.waitFor("allowFutureConnect: nftables table")
        result = client(ns, "client", server, str(INTERCEPTED_PORT), str(SIZE))
        assert result["ok"], (result, process.log())
        destination = f"[{server}]" if ":" in server else server
        process.waitFor(f"to {destination}:{INTERCEPTED_PORT} from {external}")
    after = ns.serverProcess.log().count(f"accepted {INTERCEPTED_PORT} {external}")  # type: ignore[attr-defined]
    assert after == before + 1
