"""WebSocket server and client behaviour against real peers (lws itself, websockets)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus
from websockets.sync.client import connect as ws_connect

import lws
from lws import c
from lws.testing import pump, serving


class Count(lws.Struct):
    n: c.uint32_t


class Echo(lws.Protocol):
    name = "echo"
    session = Count

    def on_message(self, conn: lws.Connection, message: Any) -> None:
        conn.session.n += 1
        conn.send(message)


def url(ctx: lws.Context, path: str = "/") -> str:
    return f"ws://127.0.0.1:{ctx.port}{path}"


def test_port_zero_gives_a_real_port() -> None:
    with lws.Context([Echo()], port=0, host="127.0.0.1") as ctx:
        assert 1024 <= ctx.port <= 65535


def test_echo_text_binary_empty_and_large_with_websockets_client() -> None:
    class Big(Echo):
        max_message_size = 4 << 20
        send_queue_limit = 8 << 20

    with lws.Context([Big()], port=0, host="127.0.0.1") as ctx, serving(ctx):
        with ws_connect(url(ctx), subprotocols=["echo"], max_size=8 << 20) as ws:
            assert ws.subprotocol == "echo"
            for message in ["hello", "", "héllo ✓", b"\x00\x01\x02", b"", b"x" * (3 << 20)]:
                ws.send(message)
                assert ws.recv(timeout=10) == message
            ws.send(["frag", "mented"])  # one message in two fragments
            assert ws.recv(timeout=5) == "fragmented"


def test_subprotocol_selects_the_protocol() -> None:
    class Upper(lws.Protocol):
        name = "upper"

        def on_message(self, conn: lws.Connection, message: Any) -> None:
            conn.send(message.upper())

    with lws.Context([Echo(), Upper()], port=0, host="127.0.0.1") as ctx, serving(ctx):
        with ws_connect(url(ctx), subprotocols=["upper"]) as ws:
            ws.send("abc")
            assert ws.recv(timeout=5) == "ABC"
        with ws_connect(url(ctx), subprotocols=["echo"]) as ws:
            ws.send("abc")
            assert ws.recv(timeout=5) == "abc"


def test_message_over_the_maximum_closes_with_1009_and_server_goes_on() -> None:
    class Small(Echo):
        max_message_size = 1000

    with lws.Context([Small()], port=0, host="127.0.0.1") as ctx, serving(ctx):
        with ws_connect(url(ctx), subprotocols=["echo"]) as ws:
            ws.send(b"x" * 1001)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=5)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        with ws_connect(url(ctx), subprotocols=["echo"]) as ws:
            ws.send(b"y" * 1000)
            assert ws.recv(timeout=5) == b"y" * 1000


def test_close_code_and_reason_both_ways() -> None:
    got: dict[str, Any] = {}

    class Closer(lws.Protocol):
        name = "closer"

        def on_message(self, conn: lws.Connection, message: Any) -> None:
            if message == "close me":
                conn.close(4001, "as asked")

        def on_closed(self, conn: lws.Connection) -> None:
            got["server_saw"] = (conn.close_code, conn.close_reason)

    with lws.Context([Closer()], port=0, host="127.0.0.1") as ctx, serving(ctx):
        with ws_connect(url(ctx), subprotocols=["closer"]) as ws:
            ws.send("close me")
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=5)
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "as asked")
        with ws_connect(url(ctx), subprotocols=["closer"]) as ws:
            ws.close(3005, "client going")
        deadline = time.monotonic() + 5
        while "server_saw" not in got and time.monotonic() < deadline:
            time.sleep(0.01)
    assert got["server_saw"] == (3005, "client going")


def test_refuse_upgrade_with_http_status() -> None:
    class Guarded(Echo):
        def on_filter_protocol_connection(self, conn: lws.Connection) -> None:
            if conn.query.get("token") != "s3cret" or conn.path != "/chat":
                raise lws.Refuse(403)

    with lws.Context([Guarded()], port=0, host="127.0.0.1") as ctx, serving(ctx):
        assert _upgrade_status(ctx.port, "/chat?token=nope") == (403, "HTTP/1.0")
        assert _upgrade_status(ctx.port, "/other?token=s3cret") == (403, "HTTP/1.0")
        # lws answers a refused upgrade as HTTP/1.0, which websockets declines to parse.
        with pytest.raises((InvalidStatus, InvalidMessage)):
            ws_connect(url(ctx, "/chat?token=nope"), subprotocols=["echo"], open_timeout=5)
        with ws_connect(url(ctx, "/chat?token=s3cret"), subprotocols=["echo"]) as ws:
            ws.send("in")
            assert ws.recv(timeout=5) == "in"


def _upgrade_status(port: int, path: str) -> tuple[int, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: echo\r\n\r\n".encode())
        head = sock.recv(4096).split(b"\r\n", 1)[0].decode()
    version, status, _ = head.split(" ", 2)
    return int(status), version


def test_exception_in_handler_is_logged_closes_that_connection_only(
        caplog: pytest.LogCaptureFixture) -> None:
    class Fragile(Echo):
        def on_message(self, conn: lws.Connection, message: Any) -> None:
            if message == "boom":
                raise ValueError("handler exploded")
            super().on_message(conn, message)

    with lws.Context([Fragile()], port=0, host="127.0.0.1") as ctx, serving(ctx):
        with caplog.at_level(logging.ERROR, logger="lws"):
            with ws_connect(url(ctx), subprotocols=["echo"]) as bad, \
                    ws_connect(url(ctx), subprotocols=["echo"]) as good:
                bad.send("boom")
                with pytest.raises(ConnectionClosed) as info:
                    bad.recv(timeout=5)
                assert info.value.rcvd is not None and info.value.rcvd.code == 1011
                good.send("still here")
                assert good.recv(timeout=5) == "still here"
    assert any("handler exploded" in (r.exc_text or str(r.exc_info)) for r in caplog.records)


def test_keyboard_interrupt_in_handler_stops_run_and_is_reraised() -> None:
    class Stopper(Echo):
        def on_message(self, conn: lws.Connection, message: Any) -> None:
            raise KeyboardInterrupt

    with lws.Context([Stopper()], port=0, host="127.0.0.1") as ctx:
        def client() -> None:
            try:
                with ws_connect(url(ctx), subprotocols=["echo"], open_timeout=5) as ws:
                    ws.send("stop")
                    ws.recv(timeout=5)
            except Exception:
                pass

        t = threading.Thread(target=client)
        t.start()
        timer = threading.Timer(10, ctx.stop)  # bound the test if it misbehaves
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                ctx.run()
        finally:
            timer.cancel()
        t.join(10)


def test_send_queue_is_bounded() -> None:
    results: dict[str, Any] = {}

    class Flood(lws.Protocol):
        name = "flood"
        send_queue_limit = 10_000

        def on_established(self, conn: lws.Connection) -> None:
            conn.send(b"a" * 6000)
            results["queued"] = conn.queued_bytes
            try:
                conn.send(b"b" * 6000)
            except lws.SendQueueFull as exc:
                results["error"] = str(exc)
            results["after"] = conn.queued_bytes

    with lws.Context([Flood()], port=0, host="127.0.0.1") as ctx, serving(ctx):
        with ws_connect(url(ctx), subprotocols=["flood"]) as ws:
            assert ws.recv(timeout=5) == b"a" * 6000
    assert results["queued"] == 6000 and results["after"] == 6000
    assert "10000" in results["error"] and "send_queue_limit" in results["error"]


def test_send_from_another_thread_and_broadcast() -> None:
    class Room(lws.Protocol):
        name = "room"

    room = Room()
    with lws.Context([room], port=0, host="127.0.0.1") as ctx, serving(ctx):
        with ws_connect(url(ctx), subprotocols=["room"]) as a, \
                ws_connect(url(ctx), subprotocols=["room"]) as b:
            deadline = time.monotonic() + 5
            while len(room.connections()) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert room.broadcast("to all") == 2  # from this (non-lws) thread
            assert a.recv(timeout=5) == "to all" and b.recv(timeout=5) == "to all"
            room.connections()[0].send(b"direct")  # one peer only
            got = []
            for ws in (a, b):
                try:
                    got.append(ws.recv(timeout=0.5))
                except TimeoutError:
                    pass
            assert got == [b"direct"]


def test_client_connection_refused_reaches_python(free_port: int) -> None:
    errors: list[str] = []

    class Cli(lws.Protocol):
        name = "cli"

        def on_client_connection_error(self, conn: lws.Connection, message: str) -> None:
            errors.append(message)

    with lws.Context([Cli()]) as ctx:
        try:
            conn = ctx.connect(f"ws://127.0.0.1:{free_port}/")
        except lws.ConnectError as exc:  # lws may report it before returning
            assert errors and errors[0] in str(exc)
        else:
            pump(ctx, lambda: conn.closed)
            assert conn.error and errors == [conn.error]
    assert errors and errors[0]


def test_client_unresolvable_host() -> None:
    errors: list[str] = []

    class Cli(lws.Protocol):
        name = "cli"

        def on_client_connection_error(self, conn: lws.Connection, message: str) -> None:
            errors.append(message)

    with lws.Context([Cli()]) as ctx:
        try:
            conn = ctx.connect("ws://no-such-host.invalid/")
        except lws.ConnectError as exc:
            # lws 4.1 fails the lookup inside lws_client_connect_via_info, with
            # no callback; the exception carries what lws logged.
            assert "no-such-host.invalid" in str(exc)
            assert "(" in str(exc) or errors, str(exc)
        else:
            pump(ctx, lambda: conn.closed, timeout=20)
            assert conn.error and errors == [conn.error]


def test_client_extra_headers_and_origin_reach_the_server() -> None:
    seen: dict[str, Any] = {}

    class Server(Echo):
        def on_filter_protocol_connection(self, conn: lws.Connection) -> None:
            seen["origin"] = conn.header("origin")
            seen["x-token"] = conn.header("X-Token")
            seen["path"] = conn.path

    class Cli(lws.Protocol):
        name = "cli"

        def on_client_established(self, conn: lws.Connection) -> None:
            conn.send("hi")

        def on_message(self, conn: lws.Connection, message: Any) -> None:
            seen["echo"] = message
            conn.close()

    with lws.Context([Server(), Cli()], port=0, host="127.0.0.1") as ctx:
        conn = ctx.connect(url(ctx, "/p?q=1"), "cli", subprotocol="echo",
                           origin="http://example.test", headers={"X-Token": "abc"})
        pump(ctx, lambda: conn.closed)
    assert seen == {"origin": "http://example.test", "x-token": "abc", "path": "/p",
                    "echo": "hi"}


def test_close_sends_1001_to_open_connections() -> None:
    ctx = lws.Context([Echo()], port=0, host="127.0.0.1")
    ready = threading.Event()
    got: dict[str, Any] = {}

    def client() -> None:
        with ws_connect(url(ctx), subprotocols=["echo"], open_timeout=5) as ws:
            ready.set()
            try:
                ws.recv(timeout=10)
            except ConnectionClosed as exc:
                got["code"] = exc.rcvd.code if exc.rcvd else None

    t = threading.Thread(target=client)
    t.start()
    pump(ctx, lambda: ready.is_set() and len(ctx.protocols[0].connections()) == 1)
    ctx.close()
    ctx.close()  # twice is harmless
    t.join(10)
    assert got["code"] == 1001
