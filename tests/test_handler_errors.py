"""An Exception in any kind of handler: logged, that connection closed, the loop goes on."""

from __future__ import annotations

import http.client
import logging
import threading
from typing import Any

import pytest

import lws
from lws.testing import pump

SERVER_HANDLERS = ["on_filter_protocol_connection", "on_established", "on_receive",
                   "on_message", "on_server_writeable", "on_closed", "on_wsi_destroy"]
CLIENT_HANDLERS = ["on_client_established", "on_client_receive", "on_client_writeable",
                   "on_client_closed"]


def _boom(*args: Any) -> None:
    raise RuntimeError("boom from a handler")


def _server_class(failing: str) -> type[lws.Protocol]:
    class Server(lws.Protocol):
        name = "srv"

        def on_message(self, conn: lws.Connection, message: Any) -> None:
            conn.send(message)

        def on_http(self, conn: lws.Connection, path: str) -> int:
            return conn.http_respond(200, "ok")

    if failing in SERVER_HANDLERS:
        nargs = {"on_receive": 2, "on_message": 2}.get(failing, 1)
        fn = (lambda self, conn, data: _boom()) if nargs == 2 else (lambda self, conn: _boom())
        return type("Failing", (Server,), {failing: fn})
    return Server


def _client_class(failing: str) -> type[lws.Protocol]:
    class Client(lws.Protocol):
        name = "cli"

        def on_client_established(self, conn: lws.Connection) -> None:
            conn.send("hello")

        def on_message(self, conn: lws.Connection, message: Any) -> None:
            conn.close()

    if failing in CLIENT_HANDLERS:
        fn = (lambda self, conn, data: _boom()) if failing == "on_client_receive" \
            else (lambda self, conn: _boom())
        return type("Failing", (Client,), {failing: fn})
    return Client


def _round_trip(ctx: lws.Context, client: lws.Protocol) -> lws.Connection:
    conn = ctx.connect(f"ws://127.0.0.1:{ctx.port}/", client, subprotocol="srv")
    pump(ctx, lambda: conn.closed, timeout=10)
    return conn


@pytest.mark.parametrize("failing", SERVER_HANDLERS + CLIENT_HANDLERS)
def test_exception_is_logged_and_the_loop_goes_on(failing: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    server, client = _server_class(failing)(), _client_class(failing)()
    with caplog.at_level(logging.ERROR, logger="lws"):
        with lws.Context([server, client], port=0, host="127.0.0.1") as ctx:
            _round_trip(ctx, client)
            # The context still serves: plain HTTP and a second session work.
            pump(ctx, lambda: not any(c._established and not c.closed
                                      for c in ctx.connections()), timeout=10)
            http_ok: list[int] = []
            def get() -> None:
                c = http.client.HTTPConnection("127.0.0.1", ctx.port, timeout=5)
                c.request("GET", "/")
                http_ok.append(c.getresponse().status)
                c.close()

            t = threading.Thread(target=get)
            t.start()
            pump(ctx, lambda: bool(http_ok), timeout=10)
            t.join()
            assert http_ok == [200]
    logged = [r for r in caplog.records
              if r.exc_info and "boom from a handler" in str(r.exc_info[1])]
    assert logged, f"the exception in {failing} was not logged"
    assert failing.split("on_")[1].upper() in logged[0].getMessage() or failing == "on_message"


def test_exception_in_timer_and_threadsafe_callbacks_is_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    class Nop(lws.Protocol):
        name = "nop"

    ran: list[str] = []
    with caplog.at_level(logging.ERROR, logger="lws"), lws.Context([Nop()]) as ctx:
        ctx.call_later(0, _boom)
        ctx.call_soon_threadsafe(_boom)
        ctx.call_later(0.02, ran.append, "after")
        pump(ctx, lambda: bool(ran))
    assert ran == ["after"]
    assert len([r for r in caplog.records if r.exc_info]) == 2


def test_close_on_error_false_keeps_the_connection(caplog: pytest.LogCaptureFixture) -> None:
    got: list[Any] = []

    class Server(lws.Protocol):
        name = "srv"

        def on_message(self, conn: lws.Connection, message: Any) -> None:
            if message == "bad":
                raise ValueError("tolerated")
            conn.send(message)

    class Client(lws.Protocol):
        name = "cli"

        def on_client_established(self, conn: lws.Connection) -> None:
            conn.send("bad")
            conn.send("good")

        def on_message(self, conn: lws.Connection, message: Any) -> None:
            got.append(message)
            conn.close()

    with caplog.at_level(logging.ERROR, logger="lws"), \
            lws.Context([Server(), Client()], port=0, host="127.0.0.1",
                        close_on_error=False) as ctx:
        conn = ctx.connect(f"ws://127.0.0.1:{ctx.port}/", "cli", subprotocol="srv")
        pump(ctx, lambda: conn.closed)
    assert got == ["good"]
    assert any("tolerated" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)
