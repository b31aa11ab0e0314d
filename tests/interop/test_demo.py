"""`twistd -n fwx demo`: the gateway before an embedded server, with curl hints."""

from __future__ import annotations

import re
import shlex
import time

import pytest

from fwxtwisted.app.demo import SAMPLE_FOLDER
from tests.interop.support import CLIENT_TIMEOUT, LIFETIME, listenEndpoint
from tests.peers import Gateway, curl, freePort, runGateway

pytestmark = pytest.mark.peers


def startupHints(gateway: Gateway, timeout: float = 5.0) -> list[str]:
    """The curl command lines the demo printed at startup (comments dropped)."""
    deadline = time.monotonic() + timeout
    while True:
        # Printed to stdout, which twistd's log file records as "[stdout#info]   curl ...".
        hints = re.findall(r"\s(curl [^#\n]*?)\s*(?:#[^\n]*)?$", gateway.log(), re.MULTILINE)
        if hints or time.monotonic() >= deadline:
            return hints
        time.sleep(0.05)


def test_demoServesHelloThroughTheGateway() -> None:
    port = freePort()
    argv = ["demo", "--listen", listenEndpoint("127.0.0.1", port)]
    with runGateway(argv, ("127.0.0.1", port), lifetime=LIFETIME) as gateway:
        hints = startupHints(gateway)
        hello = f"curl ftp://127.0.0.1:{port}/hello.txt"
        assert hello in hints, gateway.log()
        expected = (SAMPLE_FOLDER / "hello.txt").read_text()
        # Every suggested command works as printed.
        for hint in hints:
            argv = shlex.split(hint)
            result = curl(argv[1:], timeout=CLIENT_TIMEOUT).check()
            if argv[-1].endswith("/hello.txt"):
                assert result.stdout == expected, result
            else:
                assert "hello.txt" in result.stdout, result
        assert any("-P" in hint for hint in hints), hints
    assert "Traceback" not in gateway.log()
