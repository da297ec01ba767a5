"""The per-message calls that bypass cffi's wrapper (lws/_cdef/fastcall.c).

They take pointers as ints and keep the GIL; a wrong argument must still be
a Python exception, never a crash, and they must do what the cffi-wrapped
functions they stand for do.
"""

from __future__ import annotations

import asyncio
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from frames import masked_frame, read_frame, read_upgrade_response, upgrade_request

import lws
from lws._binding import (
    addr,
    fast_bridge_consumed,
    fast_bridge_deliver,
    fast_native_service,
    fast_send,
    fast_write_now,
    ffi,
    lib,
)
from lws.testing import pump

WRITE_BINARY = 2  # LWS_WRITE_BINARY
LIMIT = 1 << 20


@pytest.fixture
def txq() -> Any:
    q = ffi.new("struct lwspy_txq *")
    lib.lwspy_txq_init(q)
    yield q
    lib.lwspy_txq_kill(q)


def test_send_queues_and_counts_like_lwspy_send(txq: Any) -> None:
    assert fast_send(addr(txq), 0, b"hello", WRITE_BINARY, LIMIT) == 5
    assert fast_send(addr(txq), 0, b"", WRITE_BINARY, LIMIT) == 5
    assert lib.lwspy_send(txq, ffi.NULL, b"abc", 3, WRITE_BINARY, LIMIT) == 8
    assert (txq.count, txq.queued) == (3, 8)


def test_send_past_the_limit_and_after_kill(txq: Any) -> None:
    assert fast_send(addr(txq), 0, b"x" * 10, WRITE_BINARY, 16) == 10
    assert fast_send(addr(txq), 0, b"x" * 10, WRITE_BINARY, 16) == -1  # would pass 16
    assert txq.queued == 10
    lib.lwspy_txq_kill(txq)
    assert fast_send(addr(txq), 0, b"x", WRITE_BINARY, LIMIT) == -2  # dead


@pytest.mark.parametrize(("call", "error"), [
    (lambda q: fast_send(q, 0, b"x", WRITE_BINARY), TypeError),          # 4 arguments
    (lambda q: fast_send(q, 0, "text", WRITE_BINARY, 0), TypeError),     # str payload
    (lambda q: fast_send(q, 0, bytearray(b"x"), WRITE_BINARY, 0), TypeError),
    (lambda q: fast_send("q", 0, b"x", WRITE_BINARY, 0), TypeError),     # not an int
    (lambda q: fast_send(0, 0, b"x", WRITE_BINARY, 0), ValueError),      # NULL queue
    (lambda q: fast_send(q, 0, b"x", WRITE_BINARY, -1), OverflowError),  # negative limit
    (lambda q: fast_bridge_deliver(0, {}), ValueError),               # NULL bridge
    (lambda q: fast_bridge_deliver(None, {}), TypeError),
    (lambda q: fast_bridge_deliver(q, []), TypeError),                # by_id not a dict
    (lambda q: fast_bridge_deliver(q), TypeError),
    (lambda q: fast_bridge_consumed(0), ValueError),
    (lambda q: fast_native_service(0, 0, 1), ValueError),
    (lambda q: fast_native_service(1, 2), TypeError),
    (lambda q: fast_write_now(0, 0, 0), ValueError),
    (lambda q: fast_write_now(1, 2), TypeError),
])
def test_bad_arguments_raise(txq: Any, call: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        call(addr(txq))
    assert txq.count == 0  # nothing was queued by a refused call


def test_consumed_without_a_bridge_is_a_no_op(txq: Any) -> None:
    assert fast_bridge_consumed(addr(txq)) is None


def test_addr_of_null_is_zero() -> None:
    assert addr(ffi.NULL) == 0


def test_deliver_from_an_empty_bridge_is_none() -> None:
    class Nop(lws.Protocol):
        name = "nop"

    ctx = lws.Context([Nop()], port=0, host="127.0.0.1")
    try:
        bridge = ffi.new("struct lwspy_bridge *")
        assert lib.lwspy_bridge_init(bridge, ctx._ctx, 0) == 0
        assert fast_bridge_deliver(addr(bridge), {}) is None
        assert lib.lwspy_bridge_take(bridge) == 0  # the cffi-wrapped one agrees
        lib.lwspy_bridge_free(bridge)
    finally:
        ctx.close()


class _Reader:
    """What bridge_deliver needs of lws.asyncio's WebSocket: a reader's
    future (``_getter``), a queue, and the connection's queue address."""

    def __init__(self, txq_addr: int) -> None:
        self._getter: asyncio.Future[Any] | None = None
        self._messages: list[Any] = []
        self._txq_addr = txq_addr


def test_deliver_hands_each_message_to_its_reader_or_queue() -> None:
    # A real connection whose whole messages C puts in the bridge (attached
    # as lws.asyncio does), then handed over by fast_bridge_deliver.
    class Bridged(lws.Protocol):
        name = "bridged"

        def __init__(self) -> None:
            super().__init__()
            self.conn: Any = None

        def on_established(self, conn: lws.Connection) -> None:
            lib.lwspy_bridge_attach(bridge, conn._txq, conn._wsi, conn.id, 1000)
            self.conn = conn

        def on_message(self, conn: lws.Connection, message: Any) -> None:
            raise AssertionError("a bridged connection's messages go to the bridge")

    bridge = ffi.new("struct lwspy_bridge *")
    loop = asyncio.new_event_loop()
    proto = Bridged()
    # lws checks no UTF-8 here, so that text that is not UTF-8 reaches C
    ctx = lws.Context([proto], port=0, host="127.0.0.1", validate_utf8=False)
    try:
        assert lib.lwspy_bridge_init(bridge, ctx._ctx, 0) == 0
        ctx._cx.bridge = bridge
        b = addr(bridge)
        with socket.create_connection(("127.0.0.1", ctx.port), timeout=10) as sock:
            sock.sendall(upgrade_request())
            pump(ctx, lambda: proto.conn is not None)
            read_upgrade_response(sock)
            conn = proto.conn
            reader = _Reader(conn._txq_addr)
            by_id = {conn.id: reader}

            def arrive(*frames: bytes, waiting: int) -> None:
                # one write, which lws reads at once: C counts each message
                # it hands over as waiting for the app
                sock.sendall(b"".join(frames))
                pump(ctx, lambda: conn._txq.rx_waiting == waiting)

            # nobody waits: all queued, in order, text as str, binary as bytes
            arrive(masked_frame(1, "é".encode()), masked_frame(2, b"\x00"),
                   masked_frame(1, b""), waiting=3)
            assert fast_bridge_deliver(b, by_id) == (None, False, ())
            assert reader._messages == ["é", b"\x00", ""]
            assert conn._txq.rx_waiting == 3  # not read by the app yet
            assert fast_bridge_deliver(b, by_id) is None  # taken once

            # a reader waits: a batch of one goes to it, read at once
            reader._getter = waiting = loop.create_future()
            arrive(masked_frame(2, b"next"), waiting=4)
            assert fast_bridge_deliver(b, by_id) == (reader, True, ())
            assert waiting.result() == b"next" and reader._getter is None
            assert conn._txq.rx_waiting == 3  # consumed as it was handed over
            assert len(reader._messages) == 3

            # a reader that gave up: its message is queued, not lost
            reader._getter = gave_up = loop.create_future()
            gave_up.cancel()
            arrive(masked_frame(1, b"kept"), waiting=4)
            assert fast_bridge_deliver(b, by_id) == (reader, False, ())
            assert reader._messages[-1] == "kept" and reader._getter is None
            assert conn._txq.rx_waiting == 4

            # text that is not UTF-8: no message; Python closes that one (1007)
            arrive(masked_frame(1, b"\xff\xfe"), waiting=5)
            assert fast_bridge_deliver(b, by_id) == (reader, False, [reader])
            assert len(reader._messages) == 4 and conn._txq.rx_waiting == 5

            # a connection the loop no longer knows: its messages are dropped
            arrive(masked_frame(1, b"gone"), masked_frame(1, b"too"), waiting=7)
            assert fast_bridge_deliver(b, {}) == (None, False, ())
            assert len(reader._messages) == 4
    finally:
        ctx.close()
        lib.lwspy_bridge_free(bridge)  # after the context: its sockets point at it
        loop.close()


# What both child processes below start with: an echo protocol.
_CHILD_ECHO = """
import socket, sys, threading
import lws
from lws.testing import pump, serving, ws_url

class Echo(lws.Protocol):
    name = "echo"

    def on_message(self, conn, message):
        conn.send(message)
"""


@contextmanager
def _child(script: str, *argv: str) -> Iterator[Callable[[str | None], int]]:
    """``python -c _CHILD_ECHO + script *argv``, killed after the block.

    Yields ``answer(line)``: writes ``line`` to the child's stdin (unless
    None), then reads the int the child prints back, failing the test if it
    does not within 10 s. In a child process so that a hang of lws or the
    GIL there is a failed read here, not a hung test run.
    """
    child = subprocess.Popen([sys.executable, "-c", _CHILD_ECHO + script, *argv],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    stdin, stdout = child.stdin, child.stdout

    def answer(line: str | None) -> int:
        if line is not None:
            stdin.write(line + "\n")
            stdin.flush()
        ready, _, _ = select.select([stdout], [], [], 10)
        assert ready, f"the server process did not answer {line!r} in 10 s"
        return int(stdout.readline())

    try:
        yield answer
    finally:
        child.kill()
        child.wait(10)
        stdin.close()
        stdout.close()


# The server of the test below: a Context.run() thread echoing, and a thread
# that counts. Its main thread prints the port, then the count for each line
# read from stdin.
_COUNTING_SERVER = """
count = 0

def counting():
    global count
    while True:
        count += 1

with lws.Context([Echo()], port=0, host="127.0.0.1") as ctx, serving(ctx):
    threading.Thread(target=counting, daemon=True).start()
    print(ctx.port, flush=True)
    for line in sys.stdin:
        print(count, flush=True)
"""


def test_a_served_context_lets_other_threads_run_between_rounds() -> None:
    # Under Context.run(), the messages delivered in one service round share
    # one hold of the GIL (binding.c, lwspy_gil_round_take), released before
    # lws polls again. Held across that poll, it would stop every other
    # Python thread of the server until lws woke: the counting thread would
    # not count, nor the main thread answer.
    with _child(_COUNTING_SERVER) as answer:
        port = answer(None)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(upgrade_request())
            read_upgrade_response(sock)
            for round_ in range(20):
                # 16 frames in one write: lws reads them at once, and they
                # reach Python in one round
                sock.sendall(b"".join(masked_frame(2, b"%d.%d" % (round_, i))
                                      for i in range(16)))
                assert [read_frame(sock) for _ in range(16)] == [
                    (0x82, b"%d.%d" % (round_, i)) for i in range(16)]
            # lws waits in poll() now, with nothing to do
            before = answer("count")
            time.sleep(0.2)
            assert answer("count") > before


# A handler of a served context (on_established: no message delivered yet
# in that round) drives a client context of its own, with service() or
# run() (argv[1]), whose messages reach Python there, inside the handler.
_NESTED_SERVICE = """
class Client(lws.Protocol):
    name = "echo"

    def __init__(self):
        super().__init__()
        self.got = []

    def on_client_established(self, conn):
        conn.send("nested")

    def on_message(self, conn, message):
        self.got.append(message)
        self.inner.stop()

class Outer(lws.Protocol):
    name = "outer"

    def on_established(self, conn):
        client = Client()
        with lws.Context([client]) as inner:
            client.inner = inner
            inner.connect(ws_url(echo), client)
            if sys.argv[1] == "run":
                inner.run()
            else:
                pump(inner, lambda: client.got, timeout=10)
        conn.send(client.got[0])

with lws.Context([Echo()], port=0, host="127.0.0.1") as echo, serving(echo), \\
        lws.Context([Outer()], port=0, host="127.0.0.1") as outer, serving(outer):
    print(outer.port, flush=True)
    sys.stdin.readline()
"""


@pytest.mark.parametrize("how", ["service", "run"])
def test_a_handler_may_serve_another_context_inside_run(how: str) -> None:
    # The round's GIL hold (lwspy_gil_round_take) is for messages lwspy_run's
    # own service delivers: one delivered inside a handler's nested
    # service() (cffi released the GIL around it) must take the GIL for
    # itself and give it back, or cffi's return would wait for it forever.
    with _child(_NESTED_SERVICE, how) as answer:
        port = answer(None)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(upgrade_request("outer"))
            read_upgrade_response(sock)
            sock.settimeout(15)
            try:
                frame = read_frame(sock)
            except TimeoutError:
                frame = (0, b"no answer: the server process hangs")
            assert frame == (0x81, b"nested")
