"""Interop with lws' own C test apps (Debian package libwebsockets-test-server).

* The C ``libwebsockets-test-client`` drives the Python twin of the test
  server's protocols (``examples/test_server_protocols.py``).
* The Python twin of the test client (``examples/test_client.py``) drives the
  C ``libwebsockets-test-server``.

Every test asserts on the traffic itself: the counter increases one by one,
reset and close commands act, mirrored messages come back (to the sender and
to a third-party observer), the C client's echo mode checks 12 MiB byte for
byte. The Debian apps are built against the system lws (4.1.6); on the 4.3.5
run the binding still talks to them over loopback.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest
from _modload import load

import lws
from lws.testing import serving

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
C_SERVER = shutil.which("libwebsockets-test-server")
C_CLIENT = shutil.which("libwebsockets-test-client")

pytestmark = pytest.mark.skipif(
    C_SERVER is None or C_CLIENT is None,
    reason="lws' C test apps are missing: apt-get install libwebsockets-test-server (make deps)")

CIRCLE = re.compile(r"c #[0-9A-F]{6} \d+ \d+ \d+;")
# What a mirror relays is circles cut wherever lws' rx chunks happened to end
# (both mirrors relay each received chunk as one message, as the C one does);
# both also drop chunks while their 32-message ring is full (by design).
PIECES = re.compile(r"[c #0-9A-F\d;]*")
RX_LINE = re.compile(r"\brx \d+ '(\d+)'")


def _whole_circles(messages: list[str]) -> list[str]:
    """Circles that arrived inside one message (a cut one may have lost a piece)."""
    return [c for m in messages for c in CIRCLE.findall(m)]


def _in_order(got: list[str], sent: list[str]) -> bool:
    """``got`` is ``sent`` with some items left out (a mirror may drop, not reorder)."""
    it = iter(sent)
    return all(any(x == y for y in it) for x in got)


def _example(name: str) -> ModuleType:
    return load(f"lws_example_{name}", EXAMPLES / f"{name}.py")


server_example = _example("test_server_protocols")
client_example = _example("test_client")


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the C test server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextmanager
def c_test_server(port: int) -> Iterator[subprocess.Popen[bytes]]:
    assert C_SERVER is not None
    proc = subprocess.Popen([C_SERVER, f"--port={port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        _wait_listening(port, proc)
        yield proc
    finally:
        _stop(proc)


# A third client of a mirror, in its own process (a mirror hangs up on its
# slowest reader after 3 s, and a thread of this process may be starved).
OBSERVER = r"""
import json, sys, time
from websockets.sync.client import connect
url, want, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
got, deadline = [], time.monotonic() + seconds
with connect(url, subprotocols=["lws-mirror-protocol"], open_timeout=5) as ws:
    print("ready", flush=True)
    try:
        while sum(m.count(";") for m in got) < want and time.monotonic() < deadline:
            left = max(0.01, deadline - time.monotonic())
            try:
                m = ws.recv(timeout=min(left, 2.0) if got else left)
            except TimeoutError:
                if got:
                    break  # quiet for 2 s: the mirror has relayed all it will
                continue
            got.append(m if isinstance(m, str) else m.decode())
    except Exception as exc:
        got.append("ERROR " + repr(exc))
print(json.dumps(got), flush=True)
"""


@contextmanager
def observer(url: str, want: int, seconds: float) -> Iterator[list[str]]:
    """Yields a list that holds what the observer received once the block ends."""
    proc = subprocess.Popen([sys.executable, "-c", OBSERVER, url, str(want), str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    received: list[str] = []
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.strip() == "ready", line
        yield received
        out = proc.communicate(timeout=seconds + 10)[0].decode()
        received += json.loads(out.splitlines()[-1])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def _consecutive(numbers: list[int]) -> bool:
    return all(b == a + 1 for a, b in itertools.pairwise(numbers))


# -- the C client drives the Python server -------------------------------------------


def test_c_test_client_against_python_test_server_protocols() -> None:
    """Dumb-increment counts up for the C client; its circles are mirrored to others."""
    assert C_CLIENT is not None
    protos = server_example.protocols()
    dumb, mirror = protos[1], protos[2]
    with lws.Context(protos, port=0, host="127.0.0.1") as ctx, serving(ctx), \
            observer(f"ws://127.0.0.1:{ctx.port}/", 200, 8.0) as observed, \
            tempfile.TemporaryFile() as log:
        # -d 15: errors, warnings, notices and info (the client logs each rx at info).
        client = subprocess.Popen([C_CLIENT, "127.0.0.1", f"--port={ctx.port}", "-d", "15"],
                                  stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while (dumb.sent < 40 or mirror.received < 400) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            _stop(client)
        log.seek(0)
        out = log.read().decode("utf-8", "replace")
        received, written = mirror.received, mirror.written

    numbers = [int(n) for n in RX_LINE.findall(out)]
    assert len(numbers) >= 30, out[-3000:]
    assert numbers[0] == 0 and _consecutive(numbers), numbers
    assert "mirror: LWS_CALLBACK_CLIENT_ESTABLISHED" in out
    # The C client's circles reached a third client through the Python mirror.
    assert not any(m.startswith("ERROR") for m in observed), observed[-1:]
    assert len(_whole_circles(observed)) >= 100, (observed[-3:], received)
    assert all(PIECES.fullmatch(m) for m in observed), [m for m in observed
                                                         if not PIECES.fullmatch(m)][:3]
    assert received >= len(observed)
    assert written >= received  # each message goes to the C client and the observer


def test_c_test_client_echo_mode_through_python_mirror() -> None:
    """``--echo``: 1024 x 12 KiB of random bytes in text frames, checked byte by byte.

    The C client sends random bytes as text frames; the C test server validates
    UTF-8 and refuses them, so this runs the Python server with the check off
    (``--no-utf8-check``), as a script: the example's command line is tested too.
    """
    assert C_CLIENT is not None
    server = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "test_server_protocols.py"), "--host", "127.0.0.1",
         "--port", "0", "--no-utf8-check"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        assert server.stdout is not None
        line = server.stdout.readline().decode()
        assert line.startswith("listening on port "), line
        port = int(line.split()[-1])
        client = subprocess.run([C_CLIENT, "127.0.0.1", f"--port={port}", "--echo"],
                                capture_output=True, timeout=60, check=False)
    finally:
        _stop(server, signal.SIGTERM)
    out = client.stdout.decode("utf-8", "replace") + client.stderr.decode("utf-8", "replace")
    assert "send completed: 1024 x 12288" in out, out[-2000:]
    assert "Everything received: errs 0" in out, out[-2000:]
    assert client.returncode == 0
    summary = server.communicate(timeout=10)[0].decode()
    found = re.search(r"mirror: (\d+) received, (\d+) written, (\d+) dropped", summary)
    assert found, summary
    assert int(found.group(1)) > 0 and int(found.group(3)) == 0


def test_python_test_server_serves_http_on_protocols_zero() -> None:
    """protocols[0] is plain HTTP, as in the C test server; the C client fetches it."""
    assert C_CLIENT is not None
    with lws.Context(server_example.protocols(), port=0, host="127.0.0.1") as ctx, \
            serving(ctx):
        client = subprocess.run([C_CLIENT, f"http://127.0.0.1:{ctx.port}/", "-d", "15"],
                                capture_output=True, timeout=30, check=False)
    out = client.stdout.decode("utf-8", "replace") + client.stderr.decode("utf-8", "replace")
    assert "lws_http_client_http_response 200" in out, out[-2000:]


# -- the Python client drives the C server -------------------------------------------


def test_python_test_client_dumb_increment_against_c_test_server(free_port: int) -> None:
    """Numbers count up by one; ``reset`` restarts them; ``closeme`` closes with 1001."""
    with c_test_server(free_port):
        summary = client_example.run("127.0.0.1", free_port, duration=4.0, nomirror=True,
                                     reset_after=15, closeme_after=30, quiet=True)
    numbers = summary.dumb_numbers
    assert not summary.errors, summary.errors
    assert len(numbers) >= 30, numbers
    assert numbers[:15] == list(range(15))
    # after "reset\n" the counter starts again at 0 (one number may be in flight)
    restart = next(i for i in range(15, len(numbers)) if numbers[i] == 0)
    assert restart <= 17, numbers
    assert _consecutive(numbers[restart:30]), numbers
    assert summary.dumb_closes[0] == (1001, "seeya")


def test_python_test_client_mirror_against_c_test_server(free_port: int) -> None:
    """Circles the Python client sends come back to it and to another client, in order."""
    with c_test_server(free_port), \
            observer(f"ws://127.0.0.1:{free_port}/", 300, 15.0) as observed:
        # 2 ms apart: a burst would mostly overflow the C mirror's 32-message ring
        summary = client_example.run("127.0.0.1", free_port, duration=15.0, once=True,
                                     justmirror=True, lifetime=300, quiet=True, seed=4,
                                     pace=0.002)
    assert not summary.errors, summary.errors
    assert summary.mirror_connects == 1
    sent, back = summary.mirror_sent, summary.mirror_received
    assert len(sent) == 300 and all(CIRCLE.match(m) for m in sent)
    # The sender closes right after its last circle, as the C client does (what
    # is in flight then does not come back to it), and the C mirror drops
    # while its ring is full: both readers get the circles in the order sent.
    assert not any(m.startswith("ERROR") for m in observed), observed[-1:]
    for got, least in ((_whole_circles(back), 1), (_whole_circles(observed), 100)):
        assert len(got) >= least and _in_order(got, sent), (len(got), got[:3])


def test_python_test_client_echo_blocks_against_python_server() -> None:
    """The twins against each other: --echo blocks of text through the Python mirror."""
    with lws.Context(server_example.protocols(), port=0, host="127.0.0.1") as ctx, \
            serving(ctx):
        summary = client_example.run("127.0.0.1", ctx.port, duration=30.0, echo_blocks=64,
                                     quiet=True, seed=7)
    assert summary.echo_complete and summary.echo_errors == 0
    assert summary.echo_received_bytes == 64 * client_example.BLOCK_SIZE
