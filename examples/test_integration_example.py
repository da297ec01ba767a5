"""An application's integration test, written with the lws pytest plugin.

The protocol below stands for your application's code; the tests run it on
the real libwebsockets stack, on an ephemeral port, and drive it with the
``websockets`` client and with an lws client. With lws-cffi installed the
plugin loads by itself:

    pytest examples/test_integration_example.py

(from a source checkout: ``pytest -p lws.pytest_plugin ...``).
"""

from __future__ import annotations

from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import lws
from lws import c
from lws.testing import ClientFactory, Recorder, ServerFactory, ws_url


class Visitor(lws.Struct):
    """Per-connection state, in lws' own session buffer."""

    nick: c.char[16]
    said: c.uint32_t


class Shout(lws.Protocol):
    """Answers each text message in capitals, numbered per connection."""

    name = "shout"
    session = Visitor

    def on_filter_protocol_connection(self, conn: lws.Connection) -> None:
        nick = conn.query.get("nick", "anon")
        if len(nick.encode()) > 15:
            raise lws.Refuse(400, "nick too long")
        conn.session.nick = nick

    def on_message(self, conn: lws.Connection, message: Any) -> None:
        if isinstance(message, bytes):
            conn.close(1003, "text only")
            return
        visitor = conn.session
        visitor.said += 1
        conn.send(f"{visitor.nick.decode()}#{visitor.said}: {message.upper()}")


def test_shout_with_websockets(lws_server: ServerFactory) -> None:
    ctx = lws_server(Shout)
    with connect(ws_url(ctx, "/?nick=ada"), subprotocols=["shout"], open_timeout=5) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "ada#1: HELLO"
        ws.send("again")
        assert ws.recv(timeout=5) == "ada#2: AGAIN"


def test_binary_is_refused(lws_server: ServerFactory) -> None:
    ctx = lws_server(Shout)
    with connect(ws_url(ctx), subprotocols=["shout"], open_timeout=5) as ws:
        ws.send(b"\x00\x01")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003


def test_two_clients_and_the_lifecycle(lws_server: ServerFactory, lws_client: ClientFactory,
                                       lws_recorder: Recorder) -> None:
    # lws_recorder records both contexts' callbacks and, after the test,
    # fails it if lws' invariants broke or a freed session view was used.
    ctx = lws_server(Shout)
    ada = lws_client(ctx, path="/?nick=ada", subprotocol="shout").wait_established()
    bob = lws_client(ctx, path="/?nick=bob", subprotocol="shout").wait_established()
    ada.send("one")
    bob.send("two")
    assert ada.recv() == "ada#1: ONE"
    assert bob.recv() == "bob#1: TWO"
    bob.close()
    bob.wait_closed()
    assert lws.Reason.ESTABLISHED in lws_recorder.reasons()
