"""LIFECYCLE.md, re-observed on the lws version this run is built against.

Every claim about when lws' per-session buffer exists is checked here by
recording the real callback sequence.
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
from typing import Any

import pytest

import lws
from lws import c
from lws.testing import Recorder, pump, recording, serving

R = lws.Reason


class Counter(lws.Struct):
    counter: c.uint32_t
    tag: c.char[8]


class WsServer(lws.Protocol):
    name = "life"
    session = Counter

    def on_message(self, conn: lws.Connection, message: Any) -> None:
        conn.session.counter += 1
        conn.send(message)


class WsClient(lws.Protocol):
    name = "life-client"
    session = Counter

    def on_client_established(self, conn: lws.Connection) -> None:
        conn.send("ping")

    def on_message(self, conn: lws.Connection, message: Any) -> None:
        conn.close(1000, "done")


def _subsequence(seq: list[R], wanted: list[R]) -> bool:
    it = iter(seq)
    return all(any(x is w for x in it) for w in wanted)


def test_ws_server_and_client_callback_order() -> None:
    rec = Recorder()
    server = recording(WsServer, rec)()
    client = recording(WsClient, rec)()
    with lws.Context([server, client], port=0, host="127.0.0.1") as ctx:
        conn = ctx.connect(f"ws://127.0.0.1:{ctx.port}/", client, subprotocol="life")
        pump(ctx, lambda: conn.closed and len(ctx.connections()) == 0)
    rec.check()
    ids = rec.conn_ids()
    client_seq = rec.reasons(conn.id)
    server_id = next(i for i in ids if i != conn.id)
    server_seq = rec.reasons(server_id)
    assert _subsequence(server_seq, [
        R.HTTP_BIND_PROTOCOL, R.FILTER_PROTOCOL_CONNECTION, R.ADD_HEADERS, R.ESTABLISHED,
        R.RECEIVE, R.WS_SERVER_DROP_PROTOCOL, R.CLOSED, R.WSI_DESTROY]), server_seq
    expected_client = [R.CLIENT_HTTP_BIND_PROTOCOL]
    if lws.version_tuple()[:2] >= (4, 3):
        expected_client.append(R.CONNECTING)
    expected_client += [R.CLIENT_APPEND_HANDSHAKE_HEADER, R.ESTABLISHED_CLIENT_HTTP,
                        R.CLIENT_FILTER_PRE_ESTABLISH, R.CLIENT_ESTABLISHED, R.CLIENT_RECEIVE,
                        R.WS_CLIENT_DROP_PROTOCOL, R.CLIENT_CLOSED, R.WSI_DESTROY]
    assert _subsequence(client_seq, expected_client), client_seq
    # The close callbacks come after the DROP, never before it.
    assert server_seq.index(R.CLOSED) > server_seq.index(R.WS_SERVER_DROP_PROTOCOL)
    assert server_seq[-1] is R.WSI_DESTROY and client_seq[-1] is R.WSI_DESTROY


def test_close_callbacks_still_read_the_buffer() -> None:
    """DROP, CLOSED and WSI_DESTROY see the same, intact buffer."""
    rec = Recorder()
    server = recording(WsServer, rec)()
    client = recording(WsClient, rec)()
    with lws.Context([server, client], port=0, host="127.0.0.1") as ctx:
        conn = ctx.connect(f"ws://127.0.0.1:{ctx.port}/", client, subprotocol="life")
        pump(ctx, lambda: conn.closed and len(ctx.connections()) == 0)
    server_id = next(i for i in rec.conn_ids() if i != conn.id)
    events = [e for e in rec.events if e.conn_id == server_id]
    by_reason = {e.reason: e for e in events}
    drop, closed, destroy = (by_reason[R.WS_SERVER_DROP_PROTOCOL], by_reason[R.CLOSED],
                             by_reason[R.WSI_DESTROY])
    assert drop.address == closed.address == destroy.address
    assert drop.snapshot == closed.snapshot == destroy.snapshot
    assert destroy.snapshot is not None and destroy.snapshot["counter"] == 1


class KeepAlive(lws.Protocol):
    """protocols[0]: answers HTTP from the raw HTTP reason."""

    name = "http"
    session = Counter

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, int]] = []

    def on_http(self, conn: lws.Connection, path: str) -> int:
        conn.state = (conn.state or 0) + 1          # per connection: survives
        before = conn.session.counter               # per transaction: fresh
        conn.session.counter = 1
        self.seen.append((conn.id, before, conn.state))
        return conn.http_respond(200, f"path={path} before={before} txn={conn.state}")


def test_keepalive_gives_each_transaction_a_fresh_zeroed_buffer() -> None:
    rec = Recorder()
    proto = recording(KeepAlive, rec)()
    with lws.Context([proto], port=0, host="127.0.0.1") as ctx, serving(ctx):
        client = http.client.HTTPConnection("127.0.0.1", ctx.port, timeout=5)
        bodies = []
        for path in ("/one", "/two"):
            client.request("GET", path)
            resp = client.getresponse()
            bodies.append((resp.status, resp.read().decode()))
            assert not resp.will_close
        client.close()
        conn_ids = {cid for cid, _, _ in proto.seen}
    assert bodies == [(200, "path=/one before=0 txn=1"), (200, "path=/two before=0 txn=2")]
    assert len(conn_ids) == 1, "both requests must use one keep-alive connection"
    cid = conn_ids.pop()
    seq = rec.reasons(cid)
    rec.check()
    first, second = [i for i, r in enumerate(seq) if r is R.HTTP]
    between = seq[first + 1:second]
    # The buffer of the first transaction is dropped and a new one bound.
    assert R.HTTP_DROP_PROTOCOL in between and R.HTTP_BIND_PROTOCOL in between
    assert between.index(R.HTTP_DROP_PROTOCOL) < between.index(R.HTTP_BIND_PROTOCOL)
    assert seq[-3:] == [R.HTTP_DROP_PROTOCOL, R.CLOSED_HTTP, R.WSI_DESTROY] or \
        seq[-2:] == [R.CLOSED_HTTP, R.WSI_DESTROY]
    # The DROP of the first transaction still saw its counter at 1.
    drops = [e for e in rec.events if e.conn_id == cid and e.reason is R.HTTP_DROP_PROTOCOL]
    assert drops[0].snapshot is not None and drops[0].snapshot["counter"] == 1


def test_filter_network_connection_user_is_not_a_buffer() -> None:
    seen: list[Any] = []

    class Net(KeepAlive):
        # No connection and no view: lws passes the accepted socket's fd in `user`.
        def on_filter_network_connection(self, fd: int) -> None:
            seen.append(fd)
            return None

        def callback(self, conn: Any, reason: lws.Reason, session: Any, value: Any) -> None:
            if reason is R.FILTER_NETWORK_CONNECTION:
                seen.append((conn, session, value))

    with lws.Context([Net()], port=0, host="127.0.0.1") as ctx:
        client = socket.create_connection(("127.0.0.1", ctx.port), timeout=5)
        pump(ctx, lambda: bool(seen))
        fd = seen[0]
        # It really is the accepted socket: its peer is our client.
        with socket.socket(fileno=os.dup(fd)) as accepted:
            assert accepted.getpeername() == client.getsockname()
        client.close()
    assert seen[1] == (None, None, fd)


def test_event_wait_cancelled_has_no_connection() -> None:
    calls: list[str] = []

    class Waker(lws.Protocol):
        name = "waker"

        def on_event_wait_cancelled(self) -> None:
            calls.append(threading.current_thread().name)

    with lws.Context([Waker()]) as ctx:
        threading.Thread(target=lambda: ctx.call_soon_threadsafe(lambda: None)).start()
        pump(ctx, lambda: bool(calls))
    assert calls


def test_protocol_without_session_has_no_view() -> None:
    sessions: list[Any] = []

    class Plain(lws.Protocol):
        name = "plain"

        def on_http(self, conn: lws.Connection, path: str) -> int:
            sessions.append(conn.session)
            return conn.http_respond(204)

    assert Plain.per_session_data_size() == 0
    with lws.Context([Plain()], port=0, host="127.0.0.1") as ctx, serving(ctx):
        client = http.client.HTTPConnection("127.0.0.1", ctx.port, timeout=5)
        client.request("GET", "/")
        assert client.getresponse().status == 204
        client.close()
    assert sessions == [None]


def test_first_filter_http_connection_sees_a_buffer_outside_any_bracket() -> None:
    rec = Recorder()
    held: list[Any] = []

    class Early(KeepAlive):
        def on_filter_http_connection(self, conn: lws.Connection) -> None:
            held.append(conn.session)

    proto = recording(Early, rec)()
    with lws.Context([proto], port=0, host="127.0.0.1") as ctx, serving(ctx):
        client = http.client.HTTPConnection("127.0.0.1", ctx.port, timeout=5)
        client.request("GET", "/x")
        assert client.getresponse().read()
        client.close()
    cid = proto.seen[0][0]
    seq = rec.reasons(cid)
    assert seq.index(R.FILTER_HTTP_CONNECTION) < seq.index(R.HTTP_BIND_PROTOCOL)
    # That first buffer lived only for its callback.
    with pytest.raises(lws.SessionClosed, match="callback returned"):
        _ = held[0].counter


def test_client_session_owned_by_the_binding_lives_until_wsi_destroy() -> None:
    rec = Recorder()
    seen: dict[str, Any] = {}

    class Cli(WsClient):
        def on_client_established(self, conn: lws.Connection) -> None:
            seen["view"] = conn.session
            seen["tag"] = conn.session.tag
            conn.send("ping")

        def on_client_closed(self, conn: lws.Connection) -> None:
            seen["at_close"] = (conn.session.alive, conn.session.counter)

    server = WsServer()
    client = recording(Cli, rec)()
    with lws.Context([server, client], port=0, host="127.0.0.1") as ctx:
        conn = ctx.connect(f"ws://127.0.0.1:{ctx.port}/", client, subprotocol="life",
                           session={"tag": b"mine", "counter": 7})
        pump(ctx, lambda: conn.closed and not ctx.connections())
    assert seen["tag"] == b"mine"
    # lws never freed it: the same view survived the client's DROP...
    assert seen["at_close"] == (True, 7)
    events = [e for e in rec.events if e.conn_id == conn.id]
    assert len({e.address for e in events if e.address is not None}) == 1
    # ...and died with WSI_DESTROY, after which the binding freed it.
    with pytest.raises(lws.SessionClosed, match="WSI_DESTROY"):
        _ = seen["view"].counter


def test_client_connection_error_xor_closed(free_port: int) -> None:
    rec = Recorder()
    client = recording(WsClient, rec)()
    with lws.Context([client]) as ctx:
        try:
            conn = ctx.connect(f"ws://127.0.0.1:{free_port}/", client)
        except lws.ConnectError:
            conn = None
        if conn is not None:
            pump(ctx, lambda: conn.closed and not ctx.connections())
    rec.check()
    for cid in rec.conn_ids():
        seq = rec.reasons(cid)
        assert R.CLIENT_CONNECTION_ERROR in seq
        assert R.CLIENT_CLOSED not in seq and R.CLIENT_ESTABLISHED not in seq


def test_poll_fd_reasons_follow_the_build() -> None:
    """ADD_POLL_FD reaches protocols[0] only in an lws built with external poll."""
    polls: list[lws.Reason] = []

    class Poll(lws.Protocol):
        name = "poll"
        raw_reasons = frozenset({R.ADD_POLL_FD, R.DEL_POLL_FD})

        def callback(self, conn: Any, reason: lws.Reason, session: Any, value: Any) -> None:
            polls.append(reason)

    with lws.Context([Poll()], port=0, host="127.0.0.1") as ctx:
        ctx.service(0)
    if lws.features["external_poll"]:
        assert R.ADD_POLL_FD in polls
    else:
        assert polls == []
