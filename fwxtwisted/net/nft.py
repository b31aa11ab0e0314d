"""The gateway's own nftables table: the exact flows C{allowFutureConnect} lets through.

libnftables' Python binding (python3-nftables) is Debian's, for /usr/bin/python3
only; the project's interpreter cannot import it.  The gateway therefore drives
C{nft -j -f -} with libnftables' JSON, the same schema the binding takes: at start
and stop synchronously (a few milliseconds, before the reactor runs or while it
stops), each permission asynchronously (C{spawnProcess}), so a session never waits
on another's rule change.

The table (C{inet fwxtwisted} by default) belongs to the gateway: it is deleted and
made again at start (so a gateway killed with SIGKILL leaves nothing after its
restart) and deleted at stop.  It holds, per family, two sets with per-element
timeouts (source IP, destination IP and port; and source IP and port, destination IP
and port) and one nat prerouting chain (at priority dstnat - 10, before a user's own
redirects) whose rules send a flow found in a set to the gateway's interception
listener with C{redirect}.  A flow in no set is not touched by this table: the
host's own forward policy decides (drop, in a gateway that lets nothing through).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from fwxtwisted.address import Address
from fwxtwisted.errors import FWXError
from fwxtwisted.logs import Logger

log = Logger()

DEFAULT_TABLE = "fwxtwisted"
FAMILY = "inet"
#: Runs before a user's own nat prerouting chains (dstnat = -100).
CHAIN_PRIORITY = -110
#: Seconds an nft command may take.
NFT_TIMEOUT = 10.0

Command = dict[str, Any]


class NftError(FWXError):
    """nft refused a command (or is missing)."""


class NftTimeout(NftError):
    """nft did not finish within NFT_TIMEOUT and was killed (it may have committed)."""


def nftPath() -> str | None:
    """The nft executable, or None."""
    return shutil.which("nft") or next(
        (p for p in ("/usr/sbin/nft", "/sbin/nft") if shutil.which(p)), None
    )


class NftRunner:
    """Runs batches of libnftables JSON commands with C{nft -j -f -}; one batch is one
    atomic transaction."""

    def __init__(self, reactor: Any = None, executable: str | None = None) -> None:
        self._reactor = reactor
        self._executable = executable

    def _argv(self, arguments: Sequence[str] = ("-j", "-f", "-")) -> list[str]:
        executable = self._executable or nftPath()
        if executable is None:
            raise NftError("nft not found (install nftables)")
        return [executable, *arguments]

    @staticmethod
    def encode(commands: Sequence[Command]) -> bytes:
        return json.dumps({"nftables": list(commands)}).encode()

    def runNow(self, commands: Sequence[Command]) -> None:
        """Run a batch and wait for it.  @raise NftError."""
        self._runNow(self._argv(), self.encode(commands))

    def runScriptNow(self, script: str) -> None:
        """Run an nft script (nft's own syntax, one transaction) and wait.  @raise NftError."""
        self._runNow(self._argv(("-f", "-")), script.encode())

    def outputNow(self, arguments: Sequence[str]) -> bytes:
        """What C{nft arguments...} prints, waiting for it.  @raise NftError."""
        return self._runNow(self._argv(arguments), b"")

    def _runNow(self, argv: list[str], stdin: bytes) -> bytes:
        try:
            done = subprocess.run(
                argv, input=stdin, capture_output=True, timeout=NFT_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise NftError(f"nft: {e}") from None
        if done.returncode != 0:
            raise NftError(f"nft: {done.stderr.decode(errors='replace').strip()}")
        return done.stdout

    def run(self, commands: Sequence[Command]) -> Deferred[None]:
        """Run a batch without blocking the reactor; fails with NftError."""
        return self._spawn(("-j", "-f", "-"), self.encode(commands)).addCallback(lambda _: None)

    def runScript(self, script: str) -> Deferred[None]:
        """Run an nft script without blocking the reactor; fails with NftError."""
        return self._spawn(("-f", "-"), script.encode()).addCallback(lambda _: None)

    def output(self, arguments: Sequence[str]) -> Deferred[bytes]:
        """What C{nft arguments...} prints (e.g. a listing), without blocking the
        reactor; fails with NftError."""
        return self._spawn(arguments, b"")

    def _spawn(self, arguments: Sequence[str], stdin: bytes) -> Deferred[bytes]:
        result: Deferred[bytes] = Deferred()
        try:
            argv = self._argv(arguments)
        except NftError:
            result.errback(Failure())
            return result
        protocol = _NftProcess(stdin, result)
        try:
            process = self._reactor.spawnProcess(protocol, argv[0], argv, env=None)
        except Exception as e:  # noqa: BLE001 - EMFILE, ENOMEM...: nft never ran
            result.errback(NftError(f"nft: cannot start it: {e}"))
            return result
        # A hung nft (a lock, a stuck netlink) must not hold a permission for ever.
        killer = self._reactor.callLater(NFT_TIMEOUT, _kill, process)
        result.addBoth(_cancelled, killer)
        return result


def _kill(process: Any) -> None:
    try:
        process.signalProcess("KILL")
    except Exception:  # noqa: BLE001, S110 - it ended meanwhile
        pass


def _cancelled(result: object, killer: Any) -> object:
    if killer.active():
        killer.cancel()
    return result


class _NftProcess(ProcessProtocol):
    def __init__(self, stdin: bytes, result: Deferred[bytes]) -> None:
        self._stdin = stdin
        self._result = result
        self._output: list[bytes] = []
        self._errors = b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._stdin)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self._output.append(data)

    def errReceived(self, data: bytes) -> None:
        self._errors += data[:4096]

    def processEnded(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", 0)
        if code is None:
            self._result.errback(
                NftTimeout(f"nft: killed after {NFT_TIMEOUT:g} s without an answer")
            )
        elif code == 0:
            self._result.callback(b"".join(self._output))
        else:
            text = self._errors.decode(errors="replace").strip() or f"exit status {code}"
            self._result.errback(NftError(f"nft: {text}"))


def _setName(source: Address, anyPort: bool) -> str:
    return ("any" if anyPort else "exact") + ("6" if source.isIPv6 else "4")


def _key(source: Address, destination: Address) -> dict[str, list[object]]:
    if source.port:
        return {"concat": [source.host, source.port, destination.host, destination.port]}
    return {"concat": [source.host, destination.host, destination.port]}


class FutureConnectTable:
    """The commands of the gateway's table: made at start, one element per permission,
    deleted at stop."""

    def __init__(self, runner: NftRunner, name: str = DEFAULT_TABLE) -> None:
        self.runner = runner
        self.name = name

    def _table(self) -> Command:
        return {"family": FAMILY, "name": self.name}

    def setupCommands(self, port4: int | None, port6: int | None) -> list[Command]:
        """Delete whatever a previous run left, then make the sets, chain and rules."""
        table = self._table()
        commands: list[Command] = [
            {"add": {"table": table}},
            {"delete": {"table": table}},
            {"add": {"table": table}},
            {
                "add": {
                    "chain": {
                        "family": FAMILY,
                        "table": self.name,
                        "name": "prerouting",
                        "type": "nat",
                        "hook": "prerouting",
                        "prio": CHAIN_PRIORITY,
                        "policy": "accept",
                    }
                }
            },
        ]
        for proto, addrType, port in (("ip", "ipv4_addr", port4), ("ip6", "ipv6_addr", port6)):
            if port is None:
                continue
            suffix = "6" if proto == "ip6" else "4"
            for kind, fields in (
                ("exact", [(proto, "saddr"), ("tcp", "sport"), (proto, "daddr"), ("tcp", "dport")]),
                ("any", [(proto, "saddr"), (proto, "daddr"), ("tcp", "dport")]),
            ):
                types = [addrType if f[0] == proto else "inet_service" for f in fields]
                commands.append(
                    {
                        "add": {
                            "set": {
                                "family": FAMILY,
                                "table": self.name,
                                "name": kind + suffix,
                                "type": types,
                                "flags": ["timeout"],
                            }
                        }
                    }
                )
                match = {
                    "match": {
                        "op": "==",
                        "left": {
                            "concat": [{"payload": {"protocol": p, "field": f}} for p, f in fields]
                        },
                        "right": "@" + kind + suffix,
                    }
                }
                commands.append(
                    {
                        "add": {
                            "rule": {
                                "family": FAMILY,
                                "table": self.name,
                                "chain": "prerouting",
                                "expr": [match, {"redirect": {"port": port}}],
                            }
                        }
                    }
                )
        return commands

    def teardownCommands(self) -> list[Command]:
        table = self._table()
        return [{"add": {"table": table}}, {"delete": {"table": table}}]

    def addCommand(
        self, source: Address, destination: Address, timeout: float | None
    ) -> list[Command]:
        elem: dict[str, object] = {"val": _key(source, destination)}
        if timeout is not None:
            elem["timeout"] = max(1, int(timeout + 0.999))
        return [self._element("add", source, {"elem": elem})]

    def deleteCommand(self, source: Address, destination: Address) -> list[Command]:
        return [self._element("delete", source, _key(source, destination))]

    def _element(self, verb: str, source: Address, elem: object) -> Command:
        return {
            verb: {
                "element": {
                    "family": FAMILY,
                    "table": self.name,
                    "name": _setName(source, not source.port),
                    "elem": [elem],
                }
            }
        }

    # Running them.

    def setup(self, port4: int | None, port6: int | None) -> None:
        """@raise NftError."""
        self.runner.runNow(self.setupCommands(port4, port6))

    def teardown(self) -> None:
        """Delete the table (nothing if it is gone already).  @raise NftError."""
        self.runner.runNow(self.teardownCommands())

    def add(self, source: Address, destination: Address, timeout: float | None) -> Deferred[None]:
        return self.runner.run(self.addCommand(source, destination, timeout))

    def delete(self, source: Address, destination: Address) -> Deferred[None]:
        return self.runner.run(self.deleteCommand(source, destination))
