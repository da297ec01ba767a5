"""Frames in and out: fragments, pings, flow control, WRITEABLE for all."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from frames import masked_frame, read_frame, read_upgrade_response, upgrade_request
from websockets.sync.client import connect as ws_connect

import lws
from lws.testing import serving


def url(ctx: lws.Context) -> str:
    return f"ws://127.0.0.1:{ctx.port}/"


def _wait(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_receive_sees_fragments_type_and_remaining() -> None:
    frames: list[tuple[bytes, bool, bool, bool, int]] = []

    class Frames(lws.Protocol):
        name = "frames"

        def on_receive(self, conn: lws.Connection, data: bytes) -> None:
            frames.append((data, conn.is_first_fragment, conn.is_final_fragment,
                           conn.is_binary, conn.remaining_payload))

    with lws.Context([Frames()], port=0, host="127.0.0.1") as ctx, serving(ctx):
        with ws_connect(url(ctx), subprotocols=["frames"]) as ws:
            ws.send([b"ab", b"cd", b"ef"])  # one binary message in three frames
            ws.send("text")
            _wait(lambda: len(frames) >= 5)
    # websockets ends a fragmented message with an empty final continuation frame.
    assert [f[0] for f in frames] == [b"ab", b"cd", b"ef", b"", b"text"]
    assert [(f[1], f[2]) for f in frames] == [(True, False), (False, False), (False, False),
                                             (False, True), (True, True)]
    assert [f[3] for f in frames] == [True, True, True, True, False]
    assert all(f[4] == 0 for f in frames)


def test_send_fragments_and_ping_pong() -> None:
    pongs: list[bytes] = []

    class Sender(lws.Protocol):
        name = "sender"

        def on_established(self, conn: lws.Connection) -> None:
            conn.send_fragment("hel", first=True, final=False)
            conn.send_fragment("lo", first=False, final=True)
            conn.send_fragment(b"\x01", first=True, final=False)
            conn.send_fragment(b"\x02", first=False, final=True)
            conn.ping(b"are you there")

        def on_receive_pong(self, conn: lws.Connection, data: bytes) -> None:
            pongs.append(data)

    with lws.Context([Sender()], port=0, host="127.0.0.1") as ctx, serving(ctx):
        with ws_connect(url(ctx), subprotocols=["sender"]) as ws:
            assert ws.recv(timeout=5) == "hello"
            assert ws.recv(timeout=5) == b"\x01\x02"
            _wait(lambda: bool(pongs))
    assert pongs == [b"are you there"]


def test_ping_payload_limit() -> None:
    class P(lws.Protocol):
        name = "p"

    conn_errors: list[Exception] = []

    class Srv(P):
        def on_established(self, conn: lws.Connection) -> None:
            try:
                conn.ping(b"x" * 126)
            except ValueError as exc:
                conn_errors.append(exc)
            conn.close()

    with lws.Context([Srv()], port=0, host="127.0.0.1") as ctx, serving(ctx):
        with ws_connect(url(ctx), subprotocols=["p"]) as ws:
            try:
                ws.recv(timeout=5)
            except Exception:
                pass
    assert conn_errors and "125" in str(conn_errors[0])


def test_pause_and_resume_reading() -> None:
    got: list[str] = []
    paused = threading.Event()

    class Slow(lws.Protocol):
        name = "slow"

        def on_message(self, conn: lws.Connection, message: Any) -> None:
            got.append(message)
            if message == "pause":
                conn.pause_reading()
                paused.set()
                self.context.call_later(0.3, conn.resume_reading)

    with lws.Context([Slow()], port=0, host="127.0.0.1") as ctx, serving(ctx):
        with ws_connect(url(ctx), subprotocols=["slow"]) as ws:
            ws.send("pause")
            paused.wait(5)
            ws.send("after")
            time.sleep(0.1)
            assert got == ["pause"], "nothing is read while paused"
            _wait(lambda: got == ["pause", "after"])


def test_a_burst_to_a_late_reader_arrives_whole_and_in_order() -> None:
    """Context.run() gives a connection its next WRITEABLE without a poll()
    after a complete write; once the socket is full, lws must keep the bytes
    and wait for POLLOUT: a reader that starts late still gets everything."""
    big = [bytes([i % 256]) * 32768 for i in range(300)]  # ~9.8 MB, far past the socket buffers
    small = [f"s{i}" for i in range(2000)]

    class Burst(lws.Protocol):
        name = "burst"
        send_queue_limit = 16 << 20

        def on_message(self, conn: lws.Connection, message: Any) -> None:
            for part in big if message == "big" else small:
                conn.send(part)

    with lws.Context([Burst()], port=0, host="127.0.0.1") as ctx, serving(ctx):
        with ws_connect(url(ctx), subprotocols=["burst"], max_size=None) as ws:
            ws.send("big")
            time.sleep(0.5)  # the server fills the socket meanwhile
            assert [ws.recv(timeout=10) for _ in big] == big
            ws.send("small")
            time.sleep(0.2)
            assert [ws.recv(timeout=10) for _ in small] == small


def test_messages_cut_across_reads_or_sharing_one_on_several_sockets() -> None:
    """lws reads 4 KiB per socket event; Context.run() reads a socket again at
    once when its read ended inside a message (and finds nothing if the rest
    is late). Two connections, interleaved: a message in three late pieces,
    then several in one write, all come back whole, in order, on the right
    connection."""
    class Echo(lws.Protocol):
        name = "echo"

        def on_message(self, conn: lws.Connection, message: Any) -> None:
            conn.send(message)

    late = [bytes([i]) * 10240 for i in range(2)]
    together = [[b"a" * 9000, b"b" * 5, b"c" * 20000], [b"d" * 4090, b"e" * 60000]]
    with lws.Context([Echo()], port=0, host="127.0.0.1") as ctx, serving(ctx):
        socks = [socket.create_connection(("127.0.0.1", ctx.port), timeout=10) for _ in range(2)]
        try:
            for s in socks:
                s.sendall(upgrade_request())
                assert b" 101 " in read_upgrade_response(s)
            frames = [masked_frame(2, m) for m in late]
            for a, b in ((0, 3000), (3000, 9000), (9000, None)):  # three pieces, late
                for s, f in zip(socks, frames, strict=True):
                    s.sendall(f[a:b])
                time.sleep(0.05)
            for s, ms in zip(socks, together, strict=True):
                s.sendall(b"".join(masked_frame(2, m) for m in ms))
            got = [[read_frame(s) for _ in range(1 + len(ms))]
                   for s, ms in zip(socks, together, strict=True)]
        finally:
            for s in socks:
                s.close()
    assert got == [[(0x82, m) for m in [late[i], *together[i]]] for i in range(2)]


def test_request_writeable_all_reaches_every_connection() -> None:
    class Ticker(lws.Protocol):
        name = "ticker"

        def __init__(self) -> None:
            self.ticks = 0

        def on_server_writeable(self, conn: lws.Connection) -> None:
            conn.write(f"tick {self.ticks}".encode(), lws._binding.lib.LWS_WRITE_TEXT)

    ticker = Ticker()
    with lws.Context([ticker], port=0, host="127.0.0.1") as ctx, serving(ctx):
        with ws_connect(url(ctx), subprotocols=["ticker"]) as a, \
                ws_connect(url(ctx), subprotocols=["ticker"]) as b:
            _wait(lambda: len(ticker.connections()) == 2)
            ticker.request_writeable_all()  # from this (non-lws) thread
            assert a.recv(timeout=5) == "tick 0"
            assert b.recv(timeout=5) == "tick 0"


def test_send_after_close_raises_connection_closed() -> None:
    errors: list[Exception] = []

    class Closer(lws.Protocol):
        name = "closer"

        def on_established(self, conn: lws.Connection) -> None:
            conn.close(1000, "bye")
            try:
                conn.send("too late")
            except lws.ConnectionClosed as exc:
                errors.append(exc)
            conn.close(1000)  # twice is harmless

    with lws.Context([Closer()], port=0, host="127.0.0.1") as ctx, serving(ctx):
        with ws_connect(url(ctx), subprotocols=["closer"]) as ws:
            try:
                ws.recv(timeout=5)
            except Exception:
                pass
    assert errors and "closing" in str(errors[0])


def test_a_writeable_after_the_close_frame_waits_for_the_peers_close() -> None:
    # A WRITEABLE can still come after close() sent its frame: one asked for
    # earlier, or the one a close() from another thread asks for. It must
    # leave lws waiting for the peer's close, not drop the connection (which
    # lost the close handshake and, by a reset, data the peer had not read).
    conns: list[lws.Connection] = []
    closed: list[int | None] = []

    class Closer(lws.Protocol):
        name = "closer"

        def on_message(self, conn: lws.Connection, message: Any) -> None:
            conns.append(conn)
            conn.close(4000, "bye")

        def on_closed(self, conn: lws.Connection) -> None:
            closed.append(conn.close_code)

    with lws.Context([Closer()], port=0, host="127.0.0.1") as ctx, serving(ctx):
        with socket.create_connection(("127.0.0.1", ctx.port), timeout=5) as sock:
            sock.sendall(upgrade_request("closer"))
            assert read_upgrade_response(sock).startswith(b"HTTP/1.1 101")
            sock.sendall(masked_frame(0x1, b"close please"))
            first, payload = read_frame(sock)
            assert (first, payload) == (0x88, (4000).to_bytes(2, "big") + b"bye")
            # lws now waits for our close; another WRITEABLE arrives meanwhile
            lws.testing.run_on_lws_thread(ctx, conns[0]._request_writeable)
            lws.testing.run_on_lws_thread(ctx, lambda: None)  # a service round later
            sock.settimeout(0.3)
            try:
                early = sock.recv(1)
            except TimeoutError:
                early = None  # still open, as it should be
            assert early is None, "the server dropped the connection before our close"
            sock.settimeout(5)
            sock.sendall(masked_frame(0x8, (4000).to_bytes(2, "big")))
            assert sock.recv(1) == b""  # our close answered the server's: lws ends TCP
        _wait(lambda: bool(closed))
    assert len(closed) == 1


def test_bad_send_and_close_arguments() -> None:
    errors: list[Exception] = []

    class Bad(lws.Protocol):
        name = "bad"

        def on_established(self, conn: lws.Connection) -> None:
            for call in (lambda: conn.send(42),  # type: ignore[arg-type]
                         lambda: conn.close(1005),
                         lambda: conn.close(1000, "x" * 124)):
                try:
                    call()
                except (TypeError, ValueError) as exc:
                    errors.append(exc)
            conn.close()

    with lws.Context([Bad()], port=0, host="127.0.0.1") as ctx, serving(ctx):
        with ws_connect(url(ctx), subprotocols=["bad"]) as ws:
            try:
                ws.recv(timeout=5)
            except Exception:
                pass
    assert [type(e) for e in errors] == [TypeError, ValueError, ValueError]
