"""Interop with websockets (a WebSocket implementation nobody here wrote).

websockets as the client of the binding's server, and as the server for the
binding's client: text, binary, fragmented, empty and 16 MiB messages, pings
both ways, and every close path: normal (1000), going away (1001), protocol
error (1002), message too big (1009) and an abnormal drop (websockets' 1006:
no close frame at all).

The same message exchange runs with permessage-deflate
(``Context(permessage_deflate=True)``; websockets offers and accepts it), with
the binding in a child process (``tests/interop_peer.py``): a crash inside
lws' compression then fails that test instead of ending the whole run.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from _modload import load
from frames import masked_frame
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect
from websockets.sync.server import Server, ServerConnection, serve

import lws
from lws.testing import pump, serving

HERE = Path(__file__).resolve().parent
TIMEOUT = 30.0


peer = load("lws_tests_interop_peer", HERE / "interop_peer.py")
BIG: int = peer.BIG
EchoServer = peer.EchoServer
ScriptedClient = peer.ScriptedClient


def _extensions(headers: Any) -> str:
    return str(headers.get("Sec-WebSocket-Extensions") or "")


# -- the binding's server, websockets as client ------------------------------------------


def _url(ctx: lws.Context) -> str:
    return f"ws://127.0.0.1:{ctx.port}/"


def _wait(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.01)


def _exchange(ws: Any, proto: Any | None) -> None:
    """The message exchange, from the websockets client's side."""
    for message in peer.messages():
        ws.send(message)
        got = ws.recv(timeout=TIMEOUT)
        assert type(got) is type(message) and got == message, len(message)
    for parts, whole in peer.FRAGMENTS:       # one message in fragments
        ws.send(parts)
        assert ws.recv(timeout=5) == whole
    # pings: websockets -> lws (lws answers), lws -> websockets (websockets answers)
    ws.ping(b"abc").wait(5)
    ws.send("ping me")
    # The echo of a later message arrives after lws' ping, and websockets has
    # answered that ping by then: only then may the close race nothing.
    ws.send("sync")
    assert ws.recv(timeout=5) == "sync"
    if proto is not None:
        _wait(lambda: proto.pongs == [b"from lws"])
    ws.close(1000, "bye")


def test_websockets_client_messages_to_binding_server() -> None:
    proto = EchoServer()
    with lws.Context([proto], port=0, host="127.0.0.1") as ctx, serving(ctx):
        with ws_connect(_url(ctx), subprotocols=["echo"], max_size=2 * BIG,  # type: ignore[list-item]
                        compression=None, open_timeout=5) as ws:
            assert _extensions(ws.response.headers) == ""
            _exchange(ws, proto)
        _wait(lambda: len(proto.closes) == 1)
    assert proto.closes == [(1000, "bye")]


@contextmanager
def _peer_server(*args: str) -> Iterator[tuple[int, list[str]]]:
    """tests/interop_peer.py server in a child process; its output after it stops."""
    proc = subprocess.Popen([sys.executable, str(HERE / "interop_peer.py"), "server", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().decode()
        assert first.startswith("listening on port "), first
        yield int(first.split()[-1]), lines
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            out = proc.communicate(timeout=10)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate(timeout=10)[0]
        lines += out.decode("utf-8", "replace").splitlines()
        lines.append(f"exit status {proc.returncode}")


def test_websockets_client_compressed_messages_to_binding_server() -> None:
    failure: BaseException | None = None
    with _peer_server("--deflate") as (port, output):
        try:
            with ws_connect(f"ws://127.0.0.1:{port}/", subprotocols=["echo"],  # type: ignore[list-item]
                            max_size=2 * BIG, compression="deflate", open_timeout=5) as ws:
                assert "permessage-deflate" in _extensions(ws.response.headers)
                _exchange(ws, None)
        except (ConnectionClosed, TimeoutError) as exc:
            failure = exc
    if failure is not None:
        pytest.fail(f"{failure!r}; the binding's server said: {output}")
    summary = json.loads(output[-2])
    assert output[-1] == "exit status 0", output
    assert summary == {"closes": [[1000, "bye"]], "pongs": ["from lws"]}


def test_close_codes_from_the_binding_server() -> None:
    """The server closes with 1000, 1001 (context closing) and an application code."""
    proto = EchoServer()
    with lws.Context([proto], port=0, host="127.0.0.1") as ctx, serving(ctx):
        for code, reason in ((1000, "done"), (1008, "policy"), (4000, "app")):
            with ws_connect(_url(ctx), subprotocols=["echo"], open_timeout=5) as ws:  # type: ignore[list-item]
                ws.send(f"close {code} {reason}")
                with pytest.raises(ConnectionClosed) as info:
                    ws.recv(timeout=5)
                assert info.value.rcvd is not None
                assert (info.value.rcvd.code, info.value.rcvd.reason) == (code, reason)
    # 1001: the context closes with a client connected
    ctx = lws.Context([EchoServer()], port=0, host="127.0.0.1")
    got: dict[str, Any] = {}
    ready = threading.Event()

    def client() -> None:
        with ws_connect(_url(ctx), subprotocols=["echo"], open_timeout=5) as ws:  # type: ignore[list-item]
            ready.set()
            try:
                ws.recv(timeout=10)
            except ConnectionClosed as exc:
                got["rcvd"] = exc.rcvd

    t = threading.Thread(target=client)
    t.start()
    try:
        pump(ctx, lambda: ready.is_set() and len(ctx.protocols[0].connections()) == 1)
    finally:
        ctx.close()
        t.join(10)
    assert got["rcvd"] is not None and got["rcvd"].code == 1001


def test_close_codes_from_a_websockets_client() -> None:
    """What the server sees: 1000, 1001 with reasons, no status, 1002, 1009, a drop."""
    class Small(EchoServer):
        max_message_size = 1000

    proto = Small()
    with lws.Context([proto], port=0, host="127.0.0.1") as ctx, serving(ctx):
        url = _url(ctx)
        with ws_connect(url, subprotocols=["echo"], open_timeout=5) as ws:  # type: ignore[list-item]
            ws.close(1000, "normal")
        with ws_connect(url, subprotocols=["echo"], open_timeout=5) as ws:  # type: ignore[list-item]
            ws.close(1001, "tab closed")
        _wait(lambda: len(proto.closes) == 2)
        assert proto.closes == [(1000, "normal"), (1001, "tab closed")]

        # 1002: a frame with a reserved opcode (0x3) -> lws fails the connection
        with ws_connect(url, subprotocols=["echo"], open_timeout=5,  # type: ignore[list-item]
                        compression=None) as ws:
            ws.socket.sendall(masked_frame(0x3, b"x"))
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=5)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1002
        # 1009: a message over Protocol.max_message_size
        with ws_connect(url, subprotocols=["echo"], open_timeout=5) as ws:  # type: ignore[list-item]
            ws.send(b"y" * 1001)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=5)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        # 1006: the client vanishes without a close frame
        with ws_connect(url, subprotocols=["echo"], open_timeout=5) as ws:  # type: ignore[list-item]
            ws.send("still there?")
            assert ws.recv(timeout=5) == "still there?"
            before = len(proto.closes)
            ws.socket.shutdown(socket.SHUT_RDWR)
            _wait(lambda: len(proto.closes) == before + 1)
        # no close frame was received: the binding reports no code (websockets: 1006)
        assert proto.closes[-1] == (None, "")
        # the server goes on
        with ws_connect(url, subprotocols=["echo"], open_timeout=5) as ws:  # type: ignore[list-item]
            ws.send("after")
            assert ws.recv(timeout=5) == "after"


# -- websockets' server, the binding's client ------------------------------------------------


@contextmanager
def ws_server(handler: Callable[[ServerConnection], None], **kwargs: Any) -> Iterator[Server]:
    """A websockets (sync API) server on a loopback port, in a background thread."""
    with serve(handler, "127.0.0.1", 0, **kwargs) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server
        finally:
            server.shutdown()
            thread.join(10)


def _port(server: Server) -> int:
    return int(server.socket.getsockname()[1])


def _echo_handler(seen: dict[str, Any]) -> Callable[[ServerConnection], None]:
    def handler(ws: ServerConnection) -> None:
        seen["extensions"] = _extensions(ws.request.headers) if ws.request else ""
        seen["negotiated"] = _extensions(ws.response.headers) if ws.response else ""
        try:
            for message in ws:
                if message == "ping me":
                    ws.ping(b"from websockets")
                else:
                    ws.send(message)
        except ConnectionClosed:
            pass
        seen["rcvd"] = ws.close_code, ws.close_reason
    return handler


def _client_exchange(deflate: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The binding's scripted client against a websockets echo server.

    Without compression in this process; with it, in a child process.
    """
    seen: dict[str, Any] = {}
    with ws_server(_echo_handler(seen), max_size=2 * BIG,
                   compression="deflate" if deflate else None) as server:
        url = f"ws://127.0.0.1:{_port(server)}/"
        if not deflate:
            result = peer.run_client(url, False)
        else:
            proc = subprocess.run([sys.executable, str(HERE / "interop_peer.py"), "client", url,
                                   "--deflate"], capture_output=True, timeout=45, check=False)
            out = proc.stdout.decode("utf-8", "replace")
            assert proc.returncode == 0, (proc.returncode, out[-2000:],
                                          proc.stderr.decode("utf-8", "replace")[-2000:])
            result = json.loads(out.splitlines()[-1])
        _wait(lambda: "rcvd" in seen, timeout=10)
    return result, seen


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
def test_binding_client_messages_to_websockets_server(deflate: bool) -> None:
    result, seen = _client_exchange(deflate)
    assert ("permessage-deflate" in seen["extensions"]) == deflate
    assert ("permessage-deflate" in seen["negotiated"]) == deflate
    assert result["established"] and result["error"] is None
    assert result["received"] == result["expected"]
    assert result["pongs"] == ["from lws"]
    assert seen["rcvd"] == (1000, "bye")


def test_binding_client_with_deflate_takes_uncompressed_frames_once() -> None:
    """A pong with a payload and an uncompressed message on a compressed connection.

    lws' client parser before 4.3.5 hands such a frame to the callback for
    ever, inside one lws_service() (lws' C client does it on 4.1.6); the
    binding's extension callback makes it consume the frame once. The client
    runs in a child process so that a regression fails this test instead of
    hanging the run.
    """
    seen: dict[str, Any] = {}

    def handler(ws: ServerConnection) -> None:
        seen["negotiated"] = _extensions(ws.response.headers) if ws.response else ""
        assert ws.recv(timeout=5) == "go"
        ws.send("compressed ✓")
        ws.pong(b"from websockets")
        # RSV1 clear: a text frame the server chose not to compress (RFC 7692
        # allows it per message); websockets' own send() compresses everything.
        ws.socket.sendall(bytes([0x81, 5]) + b"plain")
        ws.send("after")
        ws.send("done")
        try:
            ws.recv(timeout=5)
        except ConnectionClosed:
            pass
        seen["rcvd"] = ws.close_code, ws.close_reason

    with ws_server(handler, compression="deflate") as server:
        url = f"ws://127.0.0.1:{_port(server)}/"
        proc = subprocess.run([sys.executable, str(HERE / "interop_peer.py"), "listen", url,
                               "--deflate"], capture_output=True, timeout=30, check=False)
        out = proc.stdout.decode("utf-8", "replace")
        assert proc.returncode == 0, (proc.returncode, out[-2000:],
                                      proc.stderr.decode("utf-8", "replace")[-2000:])
        _wait(lambda: "rcvd" in seen)
    result = json.loads(out.splitlines()[-1])
    assert "permessage-deflate" in seen["negotiated"]
    assert result["received"] == ["compressed ✓", "plain", "after", "done"]
    assert result["pongs"] == ["from websockets"]
    assert result["error"] is None and seen["rcvd"] == (1000, "bye")


def _run_client(handler: Callable[[ServerConnection], None], script: list[Any],
                **server_kwargs: Any) -> tuple[ScriptedClient, lws.Connection]:
    client = ScriptedClient(script)
    with ws_server(handler, **server_kwargs) as server, lws.Context([client]) as ctx:
        conn = ctx.connect(f"ws://127.0.0.1:{_port(server)}/", client, subprotocol=None)
        pump(ctx, lambda: conn.closed, timeout=10)
    return client, conn


def test_close_codes_seen_by_the_binding_client() -> None:
    def closer(code: int, reason: str) -> Callable[[ServerConnection], None]:
        def handler(ws: ServerConnection) -> None:
            ws.recv(timeout=5)
            ws.close(code, reason)
        return handler

    # normal closure and going away, with reasons
    for code, reason in ((1000, "done"), (1001, "server restart")):
        client, conn = _run_client(closer(code, reason), ["hi"])
        assert client.established and (conn.close_code, conn.close_reason) == (code, reason)

    # 1009: websockets' max_size is smaller than what the binding sends
    def reader(ws: ServerConnection) -> None:
        try:
            for _ in ws:
                pass
        except ConnectionClosed:
            pass

    client, conn = _run_client(reader, [b"z" * 5000], max_size=1000)
    assert conn.close_code == 1009

    # 1002: websockets sends a frame with a reserved opcode; lws fails the connection
    result: dict[str, Any] = {}

    def bad_frame(ws: ServerConnection) -> None:
        ws.recv(timeout=5)
        ws.socket.sendall(bytes([0x83, 0x01]) + b"x")   # unmasked, opcode 0x3
        try:
            ws.recv(timeout=5)
        except ConnectionClosed as exc:
            result["rcvd"] = exc.rcvd

    client, conn = _run_client(bad_frame, ["hi"])
    assert client.established and conn.closed and client.received == []
    # lws' client fails the connection by dropping it, without a 1002 close
    # frame (the C client does the same: Autobahn 4.x in client mode)
    assert "rcvd" in result and (result["rcvd"] is None or result["rcvd"].code == 1002)

    # 1006: the server drops the TCP connection without a close frame
    def dropper(ws: ServerConnection) -> None:
        ws.recv(timeout=5)
        ws.socket.shutdown(socket.SHUT_RDWR)

    client, conn = _run_client(dropper, ["hi"])
    assert client.established and conn.closed
    assert conn.close_code is None          # no close frame: websockets would say 1006

    # the binding client closes with an application code; websockets reads it
    seen: dict[str, Any] = {}

    class Closer(ScriptedClient):
        def on_message(self, conn: lws.Connection, message: Any) -> None:
            conn.close(4321, "client says bye")

    closer_client = Closer(["hello"])
    with ws_server(_echo_handler(seen)) as server, lws.Context([closer_client]) as ctx:
        conn = ctx.connect(f"ws://127.0.0.1:{_port(server)}/", closer_client, subprotocol=None)
        pump(ctx, lambda: conn.closed, timeout=10)
        _wait(lambda: "rcvd" in seen)
    assert seen["rcvd"] == (4321, "client says bye")
