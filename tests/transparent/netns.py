"""Three network namespaces (client, gateway, server) joined by veth pairs, on
documentation ranges, for transparent-mode tests; and processes run inside them.

    client 192.0.2.2, 2001:db8:1::2  --  lan0 192.0.2.1, 2001:db8:1::1   (gateway,
    server 203.0.113.2, 2001:db8:3::2  --  wan0 203.0.113.1, 2001:db8:3::1  forwarding on)

The gateway loads examples/transparent.nft as it is: its forward policy drops
everything, so a flow reaches the server only through the gateway process.  Every
namespace is deleted when the block ends, also when it fails; every command is
bounded in time.  Without root, ip or nft the tests skip (fail under CI=true).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.peers import PROJECT_ROOT, TlsFiles, Vsftpd, _Managed, requireRoot, skipOrFail

EXAMPLE_RULESET = PROJECT_ROOT / "examples" / "transparent.nft"
CLIENT4, GATEWAY_LAN4, GATEWAY_WAN4, SERVER4 = (
    "192.0.2.2",
    "192.0.2.1",
    "203.0.113.1",
    "203.0.113.2",
)
CLIENT6, GATEWAY_LAN6 = "2001:db8:1::2", "2001:db8:1::1"
GATEWAY_WAN6, SERVER6 = "2001:db8:3::1", "2001:db8:3::2"
#: The port examples/transparent.nft intercepts, and where it sends it.
INTERCEPTED_PORT = 7000
LISTEN_PORT = 8070
#: A second listener of the server that nothing permits.
OTHER_PORT = 7001
COMMAND_TIMEOUT = 20.0


def run(
    argv: Sequence[str],
    timeout: float = COMMAND_TIMEOUT,
    check: bool = True,
    input: str | None = None,
) -> str:
    done = subprocess.run(
        list(argv), input=input, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def requireNamespaces() -> None:
    requireRoot("network namespaces and nftables")
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            skipOrFail(f"{tool} not found (install iproute2 and nftables: .ci/install-peers)")
    probe = f"fwxprobe{os.getpid()}"
    try:
        run(["ip", "netns", "add", probe])
    except (RuntimeError, OSError) as e:
        skipOrFail(f"cannot make a network namespace: {e}")
    run(["ip", "netns", "del", probe], check=False)


@dataclass
class Namespaces:
    client: str
    gateway: str
    server: str

    def exec(
        self,
        ns: str,
        *argv: str,
        timeout: float = COMMAND_TIMEOUT,
        check: bool = True,
        input: str | None = None,
    ) -> str:
        return run(["ip", "netns", "exec", ns, *argv], timeout, check, input)

    def tables(self) -> str:
        """The gateway namespace's whole ruleset."""
        return self.exec(self.gateway, "nft", "list", "ruleset")


@contextlib.contextmanager
def namespaces(tag: str) -> Iterator[Namespaces]:
    """Make the three namespaces (named after C{tag} and this process); delete them
    at the end whatever happens."""
    requireNamespaces()
    suffix = f"{tag}{os.getpid()}"
    ns = Namespaces(f"fwxc{suffix}", f"fwxg{suffix}", f"fwxs{suffix}")
    made: list[str] = []
    try:
        for name in (ns.client, ns.gateway, ns.server):
            run(["ip", "netns", "add", name])
            made.append(name)
            ns.exec(name, "ip", "link", "set", "lo", "up")
        _wire(ns)
        yield ns
    finally:
        for name in made:
            run(["ip", "netns", "del", name], check=False)


def _wire(ns: Namespaces) -> None:
    run(["ip", "link", "add", "c0", "netns", ns.client, "type", "veth",
         "peer", "lan0", "netns", ns.gateway])  # fmt: skip
    run(["ip", "link", "add", "s0", "netns", ns.server, "type", "veth",
         "peer", "wan0", "netns", ns.gateway])  # fmt: skip
    for name, link, v4, v6 in (
        (ns.client, "c0", CLIENT4, CLIENT6),
        (ns.gateway, "lan0", GATEWAY_LAN4, GATEWAY_LAN6),
        (ns.gateway, "wan0", GATEWAY_WAN4, GATEWAY_WAN6),
        (ns.server, "s0", SERVER4, SERVER6),
    ):
        ns.exec(name, "ip", "addr", "add", f"{v4}/24", "dev", link)
        ns.exec(name, "ip", "-6", "addr", "add", f"{v6}/64", "dev", link, "nodad")
        ns.exec(name, "ip", "link", "set", link, "up")
    for name, via4, via6 in (
        (ns.client, GATEWAY_LAN4, GATEWAY_LAN6),
        (ns.server, GATEWAY_WAN4, GATEWAY_WAN6),
    ):
        ns.exec(name, "ip", "route", "add", "default", "via", via4)
        ns.exec(name, "ip", "-6", "route", "add", "default", "via", via6)
    ns.exec(ns.gateway, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    ns.exec(ns.gateway, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
    ns.exec(ns.gateway, "nft", "-f", str(EXAMPLE_RULESET))


class NetnsProcess(_Managed):
    """A process of ours inside a namespace; its output in a log file."""

    def __init__(self, ns: str, argv: Sequence[str], name: str, lifetime: float = 300.0):
        super().__init__(lifetime)
        self.name = name
        self._argv = ["ip", "netns", "exec", ns, *argv]

    def start(self) -> NetnsProcess:
        self._makeLogDir()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")])
        )
        env["PYTHONUNBUFFERED"] = "1"
        self._spawn(self._argv, env=env, cwd=PROJECT_ROOT)
        return self

    def waitFor(self, text: str, timeout: float = 20.0) -> None:
        """Until C{text} is in the output; raises with the output if the process ends."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.returncode is not None:
                raise RuntimeError(f"{self.name} exited {self.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.name}: no {text!r} in {timeout:g} s:\n{self.log()}")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)
        self.process.wait(30)


PYTHON = sys.executable
TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"


def twistd(*argv: str) -> list[str]:
    """twistd -n fwx ARGV, its log on stdout."""
    return [PYTHON, "-c", TWISTD, "-n", "--logfile=-", "--pidfile=", "fwx", *argv]


def peerTool(*argv: str) -> list[str]:
    """tests/transparent/peers.py (echo server, client) with this interpreter."""
    return [PYTHON, str(Path(__file__).with_name("peers.py")), *argv]


def elements(ns: Namespaces) -> list[object]:
    """Every element of the gateway's sets (none when the table is gone)."""
    found: list[object] = []
    ruleset = json.loads(ns.exec(ns.gateway, "nft", "-j", "list", "ruleset"))["nftables"]
    for item in ruleset:
        if "set" in item and item["set"]["table"] == "fwxtwisted":
            found += item["set"].get("elem", [])
    return found


class NetnsVsftpd(Vsftpd):
    """tests/peers.py's vsftpd, run inside a namespace (ip netns exec) on a fixed
    address and port; ready once it listens there (seen with ss in that namespace)."""

    def __init__(self, ns: Namespaces, where: str, root: Path, host: str, port: int,
                 pasvPorts: tuple[int, int], tls: TlsFiles | None = None) -> None:  # fmt: skip
        super().__init__(root, host, port, pasvPorts, tls=tls)
        self._ns, self._where = ns, where

    def _command(self) -> list[str]:
        return ["ip", "netns", "exec", self._where, *super()._command()]

    def _startWithRetries(self, attempts: int) -> None:
        self._prepare()
        process = self._spawn(self._command(), stdinToLog=True)
        deadline = time.monotonic() + self.startTimeout
        while time.monotonic() < deadline:
            listening = self._ns.exec(self._where, "ss", "-Hltn", f"sport = :{self.port}")
            if listening.strip():
                return
            if process.poll() is not None:
                raise RuntimeError(f"vsftpd exited {process.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise TimeoutError(f"vsftpd: not listening in {self.startTimeout:g} s:\n{self.log()}")

    def clients(self) -> set[str]:
        """The addresses vsftpd saw its control connections come from."""
        return set(re.findall(r'CONNECT: Client "([^"]+)"', self.log()))
