"""twistd fwx ftp --transparent between three namespaces (root; see netns.py): vsftpd
in the server namespace, curl and a raw client in the client namespace.

The client talks to the server's address; the gateway takes the control connection
(examples/transparent.nft) and, for a passive transfer, passes the server's 227/229
unchanged after letting that one data flow through (allowFutureConnect).  Active
transfers go through a listener of the gateway's, as in reverse-proxy mode (vsftpd
refuses a PORT naming another IP than the control connection's source: the gateway).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers import makeTlsFiles, requirePeer
from tests.transparent.netns import (
    CLIENT4,
    CLIENT6,
    GATEWAY_LAN4,
    GATEWAY_LAN6,
    GATEWAY_WAN4,
    GATEWAY_WAN6,
    INTERCEPTED_PORT,
    LISTEN_PORT,
    SERVER4,
    SERVER6,
    Namespaces,
    NetnsProcess,
    NetnsVsftpd,
    elements,
    namespaces,
    twistd,
)

SIZE = 64 << 20
PASV_PORTS = (30000, 30099)
FTPPEERS = str(Path(__file__).with_name("ftppeers.py"))
READY = "allowFutureConnect: nftables table"


@pytest.fixture(scope="module")
def ns() -> Iterator[Namespaces]:
    for tool in ("vsftpd", "curl"):
        requirePeer(tool)
    with tempfile.TemporaryDirectory(prefix="fwx-tftp-") as top, namespaces("p") as made:
        root = Path(top) / "root"
        root.mkdir()
        payload = os.urandom(SIZE)
        (root / "big").write_bytes(payload)
        (root / "big").chmod(0o644)
        made.digest = hashlib.sha256(payload).hexdigest()  # type: ignore[attr-defined]
        made.downloads = Path(top)  # type: ignore[attr-defined]
        servers = {}
        for host in (SERVER4, SERVER6):
            servers[host] = NetnsVsftpd(made, made.server, root, host, INTERCEPTED_PORT, PASV_PORTS)
        with servers[SERVER4], servers[SERVER6]:
            made.vsftpd = servers  # type: ignore[attr-defined]
            yield made


def gatewayProcess(ns: Namespaces, *more: str) -> NetnsProcess:
    argv = twistd("ftp", "--listen", f"tcp6:{LISTEN_PORT}", "--transparent", "--external-address",
                  GATEWAY_WAN4, "--external-address", GATEWAY_WAN6, *more)  # fmt: skip
    return NetnsProcess(ns.gateway, argv, "gateway").start()


@pytest.fixture(scope="module")
def gateway(ns: Namespaces) -> Iterator[NetnsProcess]:
    with gatewayProcess(ns) as process:
        process.waitFor(READY)
        yield process


MODES = {
    "EPSV": [],
    "PASV": ["--disable-epsv"],
    "EPRT": ["-P", "{client}"],
    "PORT": ["-P", "{client}", "--disable-eprt"],
}
#: curl ignores a 227's address by default (since 7.74), using the control
#: connection's: the server's here, not the gateway's.
RELAY = ["--disable-epsv", "--no-ftp-skip-pasv-ip"]


@pytest.mark.parametrize(
    "mode,server,client",
    [(mode, SERVER4, CLIENT4) for mode in MODES]
    + [("EPSV", SERVER6, CLIENT6), ("EPRT", SERVER6, CLIENT6)],
)
def test_curl_download_intact(
    ns: Namespaces, gateway: NetnsProcess, mode: str, server: str, client: str
) -> None:
    done = curl(ns, gateway, mode, server, client)
    if mode in ("PASV", "EPSV"):
        # The client talked to the server only: no address of the gateway in sight.
        for own in (GATEWAY_LAN4, GATEWAY_WAN4, GATEWAY_LAN6, GATEWAY_WAN6):
            assert own not in done, done
    if mode == "PASV":
        assert "(203,0,113,2," in done, done
    external = GATEWAY_WAN6 if ":" in server else GATEWAY_WAN4
    assert ns.vsftpd[server].clients() == {external}  # type: ignore[attr-defined]


def curl(ns: Namespaces, gateway: NetnsProcess, mode: str, server: str, client: str) -> str:
    """Download the 64 MiB file in C{mode}, check it intact; curl's -v output."""
    target = ns.downloads / f"{mode}-{server}"  # type: ignore[attr-defined]
    host = f"[{server}]" if ":" in server else server
    flags = [flag.format(client=client) for flag in MODES.get(mode, RELAY)]
    argv = ["curl", "-sS", "-v", "-g", "--max-time", "30", *flags, "-o", str(target),
            f"ftp://{host}:{INTERCEPTED_PORT}/big"]  # fmt: skip
    done = ns.exec(ns.client, "sh", "-c", " ".join(argv) + " 2>&1", timeout=40, check=False)
    assert target.exists(), f"{done}\n{gateway.log()}"
    assert hashlib.sha256(target.read_bytes()).hexdigest() == ns.digest, done  # type: ignore[attr-defined]
    target.unlink()
    code = "227" if mode.startswith("PASV") else "229" if mode == "EPSV" else "200"
    assert f"< {code} " in done, done
    return done


def test_lftp_passive(ns: Namespaces, gateway: NetnsProcess) -> None:
    requirePeer("lftp")
    target = ns.downloads / "lftp"  # type: ignore[attr-defined]
    script = f"set net:max-retries 1; set net:timeout 10; get -O {target.parent} big -o lftp"
    ns.exec(ns.client, "lftp", "-e", f"{script}; quit",
            f"ftp://anonymous:x@{SERVER4}:{INTERCEPTED_PORT}", timeout=40)  # fmt: skip
    assert hashlib.sha256(target.read_bytes()).hexdigest() == ns.digest  # type: ignore[attr-defined]
    target.unlink()


def test_data_port_is_single_use(ns: Namespaces, gateway: NetnsProcess) -> None:
    output = ns.exec(ns.client, sys.executable, FTPPEERS, "once", SERVER4,
                     str(INTERCEPTED_PORT), timeout=30)  # fmt: skip
    result = json.loads(output.strip().splitlines()[-1])
    assert "(203,0,113,2," in result["reply"], result
    assert result["first"] == "open", (result, gateway.log())
    # The element went with the first connection: the kernel dropped the second SYN
    # (the forward policy), it reached neither the gateway nor the server.
    assert result["second"] == "timeout", (result, gateway.log())
    assert elements(ns) == []


def test_unpermitted_port_refused(ns: Namespaces, gateway: NetnsProcess) -> None:
    """A port vsftpd offers passive connections on, never offered to this client."""
    probe = "import socket,sys; socket.create_connection((sys.argv[1], 30050), timeout=3)"
    probe += "; print('open')"
    done = ns.exec(ns.client, sys.executable, "-c", probe, SERVER4, timeout=20, check=False)
    assert "open" not in done
    assert elements(ns) == []


def test_sigkill_then_restart_then_sigterm_leave_nothing(
    ns: Namespaces, gateway: NetnsProcess
) -> None:
    gateway.signal(signal.SIGTERM)
    assert "fwxtwisted" not in ns.tables()
    with gatewayProcess(ns) as killed:
        killed.waitFor(READY)
        holder = NetnsProcess(
            ns.client, [sys.executable, FTPPEERS, "hold", SERVER4, str(INTERCEPTED_PORT)], "holder"
        )
        with holder.start():
            holder.waitFor("held")
            assert len(elements(ns)) == 1
            killed.signal(signal.SIGKILL)
            assert len(elements(ns)) == 1  # what a crash leaves
    with gatewayProcess(ns) as again:
        again.waitFor(READY)
        assert elements(ns) == []
        again.signal(signal.SIGTERM)
        assert "Server Shut Down." in again.log()
    assert "fwxtwisted" not in ns.tables()


def test_relay_names_the_gateway(ns: Namespaces) -> None:
    """transparent_data = relay: the 227 names the gateway's LAN address, whose
    listener the example ruleset's DATA_PORTS lets the client reach (a client that
    honours the 227's address: EPSV is refused, its 229 names none)."""
    with gatewayProcess(ns, "--transparent-data", "relay") as relay:
        relay.waitFor(READY)
        done = curl(ns, relay, "PASV-relay", SERVER4, CLIENT4)
        assert "(192,0,2,1," in done, done
        assert elements(ns) == []


#: A second address of the server namespace, for the FTPS server.
SERVER4_TLS = "203.0.113.3"


def test_ftps_through_tls_termination(ns: Namespaces) -> None:
    """Explicit FTPS: the gateway terminates TLS (its certificate names the server's
    address, as the client believes it talks to the server), reads the 227 and lets
    the protected data connection through unchanged."""
    tls = makeTlsFiles(ns.downloads / "tls", hosts=(SERVER4_TLS,))  # type: ignore[attr-defined]
    ns.exec(ns.server, "ip", "addr", "add", f"{SERVER4_TLS}/24", "dev", "s0")
    root = ns.downloads / "root"  # type: ignore[attr-defined]
    server = NetnsVsftpd(ns, ns.server, root, SERVER4_TLS, INTERCEPTED_PORT, PASV_PORTS, tls)
    options = ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key),
               "--upstream-ca", str(tls.caCert)]  # fmt: skip
    with server, gatewayProcess(ns, *options) as gateway:
        gateway.waitFor(READY)
        target = ns.downloads / "ftps"  # type: ignore[attr-defined]
        argv = ["curl", "-sS", "-v", "--max-time", "30", "--disable-epsv", "--ssl-reqd",
                "--cacert", str(tls.caCert), "-o", str(target),
                f"ftp://{SERVER4_TLS}:{INTERCEPTED_PORT}/big"]  # fmt: skip
        done = ns.exec(ns.client, "sh", "-c", " ".join(argv) + " 2>&1", timeout=40, check=False)
        assert target.exists(), f"{done}\n{gateway.log()}"
        assert hashlib.sha256(target.read_bytes()).hexdigest() == ns.digest  # type: ignore[attr-defined]
        assert "(203,0,113,3," in done, done
        assert server.clients() == {GATEWAY_WAN4}
