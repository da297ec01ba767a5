"""``python -m lws client`` and ``echo``, run as subprocesses against real peers.

(``demo``, ``version`` and an unknown command are covered by test_examples.py.)
"""

from __future__ import annotations

import os
import pty
import queue
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from websockets.sync.client import connect as ws_connect

import lws
from lws import testing
from lws.__main__ import EchoServer

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
LWS = [sys.executable, "-m", "lws"]


class Probe(EchoServer):
    """Echo, plus what the server saw of the client's handshake and close."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def on_filter_protocol_connection(self, conn: lws.Connection) -> None:
        self.seen.append(("x-test", conn.header("x-test")))
        self.seen.append(("origin", conn.header("origin")))

    def on_message(self, conn: lws.Connection, message: Any) -> None:
        self.seen.append(("message", message))
        if message == "binary please":
            conn.send(b"\x00\xff")
        elif message == "close please":
            conn.close(4000, "bye")
        else:
            super().on_message(conn, message)

    def on_closed(self, conn: lws.Connection) -> None:
        self.seen.append(("closed", conn.close_code))


@pytest.fixture
def probe() -> Iterator[tuple[Probe, str]]:
    proto = Probe()
    with testing.server(proto) as ctx:
        yield proto, testing.ws_url(ctx)


def _client(url: str, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([*LWS, "client", url, "--subprotocol", "echo", *args],
                            stdin=kwargs.pop("stdin", subprocess.PIPE), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, **kwargs)


class Lines:
    """Lines of a subprocess' output, read on a thread so that waits are bounded."""

    def __init__(self, stream: Any) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line)

    def next(self, timeout: float = 10.0) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output within {timeout}s") from None

    def rest(self, timeout: float = 10.0) -> str:
        self.thread.join(timeout)
        out = []
        while not self.lines.empty():
            out.append(self.lines.get())
        return "".join(out)


def test_client_sends_each_line_and_prints_what_arrives(probe: tuple[Probe, str]) -> None:
    proto, url = probe
    proc = _client(url, "--header", "X-Test: 42", "--origin", "http://example.test")
    assert proc.stdin is not None
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    try:
        proc.stdin.write("hello\n")
        proc.stdin.flush()
        assert out.next() == "< hello\n"
        proc.stdin.write("wörld\r\nbinary please\n")
        proc.stdin.flush()
        assert out.next() == "< wörld\n"
        assert out.next() == "< (binary) 00ff\n"
        proc.stdin.close()                         # end of input: close with 1000
        assert proc.wait(20) == 0
    finally:
        proc.kill()
    assert out.rest() == ""
    errors = err.rest()
    assert f"Connected to {url}." in errors
    assert "Connection closed: 1000 (OK)." in errors
    testing.wait_until(lambda: ("closed", 1000) in proto.seen)
    assert ("x-test", "42") in proto.seen and ("origin", "http://example.test") in proto.seen


def test_client_reads_piped_input_to_its_end(probe: tuple[Probe, str]) -> None:
    proto, url = probe
    done = subprocess.run([*LWS, "client", url, "--subprotocol", "echo"],
                          input="one\ntwo\nthree without newline", capture_output=True,
                          text=True, env=ENV, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "Connection closed: 1000 (OK)." in done.stderr
    testing.wait_until(lambda: ("closed", 1000) in proto.seen)
    messages = [v for k, v in proto.seen if k == "message"]
    assert messages == ["one", "two", "three without newline"]


def test_client_ctrl_d_on_a_terminal_closes_with_1000(probe: tuple[Probe, str]) -> None:
    proto, url = probe
    master, slave = pty.openpty()
    proc = _client(url, stdin=slave)
    os.close(slave)
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    try:
        assert err.next().startswith("Connected to")
        os.write(master, b"typed\n")
        assert out.next() == "< typed\n"
        os.write(master, b"\x04")                  # Ctrl-D at the start of a line
        assert proc.wait(20) == 0
    finally:
        proc.kill()
        os.close(master)
    assert "Connection closed: 1000 (OK)." in err.rest()
    testing.wait_until(lambda: ("closed", 1000) in proto.seen)


def test_client_ends_when_the_server_closes(probe: tuple[Probe, str]) -> None:
    _, url = probe
    proc = _client(url)
    assert proc.stdin is not None
    err = Lines(proc.stderr)
    try:
        proc.stdin.write("close please\n")
        proc.stdin.flush()                         # and stdin stays open
        assert proc.wait(20) == 0
    finally:
        proc.kill()
        proc.stdin.close()
    assert "Connection closed: 4000 bye." in err.rest()


def test_client_reports_a_refused_connection(free_port: int) -> None:
    done = subprocess.run([*LWS, "client", f"ws://127.0.0.1:{free_port}/"],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, env=ENV,
                          timeout=30)
    assert done.returncode == 1
    assert done.stderr.startswith(f"Failed to connect to ws://127.0.0.1:{free_port}/")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("args, message", [
    ([], "the following arguments are required: url"),
    (["http://127.0.0.1/"], "expected a ws:// or wss:// URL"),
    (["ws://"], "expected a ws:// or wss:// URL"),
    (["ws://127.0.0.1:99999/"], "bad port"),
    (["ws://127.0.0.1/", "--header", "no colon"], "expected 'Name: value'"),
    (["ws://127.0.0.1/", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_client_argument_errors(args: list[str], message: str) -> None:
    done = subprocess.run([*LWS, "client", *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, env=ENV, timeout=30)
    assert done.returncode == 2
    assert done.stderr.startswith("usage:")
    assert message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("option", "value", "message"), [
    *[("--port", v, "expected a port number") for v in ("99999", "-1", "http")],
    *[("--rx-buffer", v, "expected a byte count") for v in ("-5", "lots", "99999999")],
])
def test_echo_numbers_are_checked(option: str, value: str, message: str) -> None:
    done = subprocess.run([*LWS, "echo", option, value], capture_output=True, text=True,
                          env=ENV, timeout=30)
    assert done.returncode == 2
    assert done.stderr.startswith("usage:") and message in done.stderr


def test_echo_serves_the_client_and_stops_on_ctrl_c() -> None:
    # SIGINT at its default even if this run inherited it ignored (a background
    # job), so that Python turns it into KeyboardInterrupt in the child.
    server = subprocess.Popen([*LWS, "echo", "--port", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=ENV,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    out = Lines(server.stdout)
    try:
        line = out.next()
        assert line.startswith("echo server on ws://127.0.0.1:"), line
        url = line.split()[-1]
        done = subprocess.run([*LWS, "client", url, "--subprotocol", "echo"], input="",
                              capture_output=True, text=True, env=ENV, timeout=30)
        assert done.returncode == 0, done.stderr
        assert "Connection closed: 1000 (OK)." in done.stderr
        time.sleep(0.2)
        server.send_signal(signal.SIGINT)
        assert server.wait(20) == 0
    finally:
        server.kill()
    rest = out.rest()
    assert "stopping" in rest and "Traceback" not in rest


def test_echo_on_a_busy_port_is_one_line_not_a_traceback() -> None:
    class P(lws.Protocol):
        name = "p"

    with testing.server(P) as ctx:
        done = subprocess.run([*LWS, "echo", "--port", str(ctx.port)], capture_output=True,
                              text=True, env=ENV, timeout=30)
    assert done.returncode == 1
    assert "python -m lws: error:" in done.stderr and "Traceback" not in done.stderr


def test_echo_over_tls_with_deflate(tmp_path: Path) -> None:
    """``python -m lws echo --cert/--key/--deflate``: wss and compression, seen by websockets."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "k.pem"))
    proc = subprocess.Popen([sys.executable, "-m", "lws", "echo", "--port", "0", "--cert",
                             str(tmp_path / "c.pem"), "--key", str(tmp_path / "k.pem"),
                             "--deflate"], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("echo server on wss://"), line
        port = int(line.rstrip().rstrip("/").rsplit(":", 1)[1])
        context = ssl.create_default_context()
        ca.configure_trust(context)
        with ws_connect(f"wss://localhost:{port}/", ssl=context, subprotocols=["echo"]) as ws:
            assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
            ws.send("secure and small " * 100)
            assert ws.recv(timeout=10) == "secure and small " * 100
    finally:
        proc.terminate()
        proc.wait(10)
    bad = subprocess.run([sys.executable, "-m", "lws", "echo", "--cert", "x.pem"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "go together" in bad.stderr and "Traceback" not in bad.stderr


def test_echo_rx_buffer_sets_lws_read_size() -> None:
    """``--rx-buffer``: lws' read size (as the C echo's); a 1 MiB message still echoes whole."""
    proc = subprocess.Popen([*LWS, "echo", "--port", "0", "--rx-buffer", "65536"],
                            stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("echo server on ws://"), line
        url = line.split()[-1]
        payload = os.urandom(1 << 20)
        with ws_connect(url, subprotocols=["echo"], max_size=None) as ws:
            ws.send(payload)
            assert ws.recv(timeout=20) == payload
    finally:
        proc.terminate()
        proc.wait(10)

