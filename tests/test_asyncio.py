"""lws.asyncio: serve()/connect() on the native stack, in every mode the build offers,
on asyncio's default loop and on uvloop."""

from __future__ import annotations

import asyncio
import base64
import os
import resource
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import trustme
import uvloop
import websockets
from compressing_clients import echo_concurrently
from frames import masked_frame, read_frame, read_upgrade_response, upgrade_request
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve as ws_serve

import lws
import lws.asyncio as la
from lws import c
from lws._binding import lib

# Every mode this build has: native where lws has external poll, libuv where
# it has its libuv event library (Debian's 4.1.6), thread always.
MODES = ((["native"] if lws.features["external_poll"] else [])
         + (["libuv"] if la._libuv_usable() else []) + ["thread"])
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=list(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """Run a coroutine on a fresh loop of the given kind, bounded in time."""

    def runner(coro: Coroutine[Any, Any, Any]) -> Any:
        loop = LOOPS[request.param]()
        try:
            return loop.run_until_complete(asyncio.wait_for(coro, 60))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    return runner


async def echo(ws: la.WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


def test_auto_mode_follows_the_build() -> None:
    """auto: native with external poll, else thread (libuv is opt-in). An
    lws built with libuv whose plugin or libuv does not load is a broken
    install here (Debian's libwebsockets-dev depends on
    libwebsockets-evlib-uv): it fails."""
    if lws.features["libuv"]:
        assert la._libuv_usable(), "install libwebsockets-evlib-uv (lws' libuv plugin)"
    assert la._pick_mode("auto") == ("native" if lws.features["external_poll"] else "thread")
    if not lws.features["external_poll"]:
        with pytest.raises(lws.FeatureUnavailable, match="LWS_WITH_EXTERNAL_POLL"):
            la._pick_mode("native")
    if not lws.features["libuv"]:
        with pytest.raises(lws.FeatureUnavailable, match="LWS_WITH_LIBUV"):
            la._pick_mode("libuv")
    with pytest.raises(ValueError, match="'libuv'"):
        la._pick_mode("fast")


def test_libuv_mode_runs_lws_timers_on_the_loop(run: Any) -> None:
    """libuv mode: lws runs on a uv loop nested in the asyncio loop, no
    thread. lws' own timers (here Context.call_later, an lws sul) fire on
    time under it, during traffic and when idle; a server-side close sends
    its code (lws 4.1's debug build would drop it, see
    lwspy_uv_close_later). Where lws has no libuv, the mode says so."""
    if not lws.features["libuv"]:
        with pytest.raises(lws.FeatureUnavailable):
            la._pick_mode("libuv")
        return

    async def handler(ws: la.WebSocket) -> None:
        async for message in ws:
            if message == "bye":
                await ws.close(4002, "bye")
            else:
                await ws.send(message)

    async def main() -> tuple[list[Any], float, int, int]:
        threads = threading.active_count()
        loop = asyncio.get_running_loop()
        got: list[Any] = []
        async with la.serve(handler, "127.0.0.1", 0, mode="libuv") as server:
            fired = loop.create_future()
            start = loop.time()
            server.context.call_later(0.05, lambda: fired.set_result(loop.time() - start))
            async with ws_connect(f"ws://127.0.0.1:{server.port}/") as ws:
                for i in range(20):
                    await ws.send(str(i))
                    got.append(await ws.recv())
                late = await asyncio.wait_for(fired, 5)
                idle = loop.create_future()
                server.context.call_later(0.1, lambda: idle.set_result(None))
                await asyncio.wait_for(idle, 5)
                await ws.send("bye")
                with pytest.raises(websockets.ConnectionClosedError):  # 4002 is not OK to it
                    await ws.recv()
                code = ws.close_code
            running = threading.active_count()
        return got, late, code or 0, running - threads

    got, late, code, extra_threads = run(main())
    assert got == [str(i) for i in range(20)]
    assert 0.04 <= late < 1.0
    assert code == 4002
    assert extra_threads == 0


def test_libuv_mode_context_is_served_by_the_loop(run: Any) -> None:
    """libuv mode: the server's Context cannot run() (lws_service() would run
    the uv loop until it has no handles left). Closing with a peer that never
    answers the close serves the uv loop from Context.close() (waiting on
    libuv's fd) until its timeout, then frees lws and the loop."""
    if not lws.features["libuv"]:
        with pytest.raises(lws.FeatureUnavailable):
            la._pick_mode("libuv")
        return

    async def main() -> tuple[str, float, bool]:
        loop = asyncio.get_running_loop()
        server = await la.serve(echo, "127.0.0.1", 0, mode="libuv", close_timeout=0.2)
        with pytest.raises(lws.LwsError, match="asyncio loop serves it") as info:
            server.context.run()
        sock = socket.create_connection(("127.0.0.1", server.port))
        try:
            sock.sendall(upgrade_request())
            await loop.run_in_executor(None, read_upgrade_response, sock)
            for _ in range(200):
                if server.connections:
                    break
                await asyncio.sleep(0.01)
            start = loop.time()
            await server.close()  # the peer never answers: both timeouts pass
            took = loop.time() - start
        finally:
            sock.close()
        return str(info.value), took, server.context.closed

    message, took, closed = run(main())
    assert "uv loop" in message
    assert 0.2 <= took < 5.0
    assert closed


def test_libuv_mode_writes_a_queue_in_one_writeable(run: Any) -> None:
    """libuv mode: queued messages of a server connection go out several per
    WRITEABLE (each WRITEABLE asked for costs lws' libuv plugin epoll_ctl
    calls), in order and whole; thread mode asks for one per message."""
    if not lws.features["libuv"]:
        with pytest.raises(lws.FeatureUnavailable):
            la._pick_mode("libuv")
        return

    async def one(mode: str) -> tuple[bool, int]:
        async with la.serve(echo, "127.0.0.1", 0, mode=mode) as server:
            async with ws_connect(f"ws://127.0.0.1:{server.port}/") as ws:
                sent = [f"{i}:".encode() * (i + 1) for i in range(64)]
                before = lib.lwspy_count_writeable
                for m in sent:
                    await ws.send(m)
                got = [await ws.recv() for _ in sent]
                return got == sent, lib.lwspy_count_writeable - before

    async def main() -> list[tuple[bool, int]]:
        return [await one("libuv"), await one("thread")]

    (uv_ok, uv_writeables), (thr_ok, thr_writeables) = run(main())
    assert uv_ok and thr_ok
    assert thr_writeables >= 64
    assert uv_writeables < 48, uv_writeables


def _count_over_round_trips(run: Any, mode: str, attr: str) -> tuple[bool, int]:
    """200 echo round trips, one message in flight, against a server in
    ``mode``; whether each came back whole, and how often the server's
    runner called its ``attr`` meanwhile."""

    async def main() -> tuple[bool, int]:
        async with la.serve(echo, "127.0.0.1", 0, mode=mode) as server:
            runner = server._runner
            calls = 0
            original = getattr(runner, attr)

            def counted(*args: Any) -> Any:
                nonlocal calls
                calls += 1
                return original(*args)

            async with ws_connect(f"ws://127.0.0.1:{server.port}/") as ws:
                await ws.send(b"warm")
                await ws.recv()
                setattr(runner, attr, counted)
                sent = [b"%d" % i * 50 for i in range(200)]
                got = []
                for m in sent:
                    await ws.send(m)
                    got.append(await ws.recv())
                setattr(runner, attr, original)
                return got == sent, calls

    result: tuple[bool, int] = run(main())
    return result


def test_native_mode_one_in_flight_takes_one_service(run: Any) -> None:
    """Native mode, one message in flight: the reply is written from the
    handler's send (lws_service_fd, POLLOUT), and when that was all lws had
    to do no further service is scheduled: one per round trip, the read."""
    if not lws.features["external_poll"]:
        with pytest.raises(lws.FeatureUnavailable):
            la._pick_mode("native")
        return
    ok, calls = _count_over_round_trips(run, "native", "_service_fn")
    assert ok
    # two per round trip before (the read, then one behind the handler);
    # lws' 250 ms tick may add one
    assert 200 <= calls < 260, calls


def test_thread_mode_one_in_flight_wakes_the_service_thread_from_send(run: Any) -> None:
    """Thread mode, one message in flight: the handler's send wakes the
    service thread itself (C, as it queues the reply); no batch of answers
    is gathered and flushed behind the handler's step."""
    ok, flushes = _count_over_round_trips(run, "thread", "_flush")
    assert ok
    assert flushes < 10, flushes  # one per round trip before


def test_echo_round_trips(mode: str, run: Any) -> None:
    async def main() -> list[Any]:
        got: list[Any] = []
        async with la.serve(echo, "127.0.0.1", 0, mode=mode, max_size=4 << 20) as server:
            assert server.mode == mode
            async with la.connect(f"ws://127.0.0.1:{server.port}/", mode=mode,
                                  max_size=4 << 20) as ws:
                assert ws.mode == mode
                for message in ["text", b"bin", "", b"", "é" * 1000, b"x" * (2 << 20)]:
                    await ws.send(message)
                    got.append(await ws.recv())
                await ws.send(["frag", "ments"])
                got.append(await ws.recv())
        return got

    assert run(main()) == ["text", b"bin", "", b"", "é" * 1000, b"x" * (2 << 20), "fragments"]


async def _read_server_frame(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(2)
    n = head[1] & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    return await reader.readexactly(n)


async def _raw_upgrade(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A bare TCP client that has done the WebSocket upgrade and frames by hand."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    return reader, writer


@pytest.mark.parametrize("read_size", [4096, la.DEFAULT_READ_SIZE, 65536])
def test_messages_that_arrive_in_pieces_or_together(mode: str, run: Any, read_size: int) -> None:
    """lws reads read_size at a time (16 KiB by default): a message cut across
    reads (lws is asked to read again at once, and finds nothing when the
    rest is late) and several in one write all come back whole and in order."""
    async def main() -> list[bytes]:
        async with la.serve(echo, "127.0.0.1", 0, mode=mode, read_size=read_size) as server:
            reader, writer = await _raw_upgrade(server.port)
            late = masked_frame(2, bytes(range(256)) * 40)           # 10,240 bytes
            for cut in (3000, 9000):                               # three pieces, late
                writer.write(late[:cut] if cut == 3000 else late[3000:cut])
                await writer.drain()
                await asyncio.sleep(0.05)
            writer.write(late[9000:])
            together = [b"a" * 9000, b"b" * 5, b"c" * 20000]
            writer.write(b"".join(masked_frame(2, m) for m in together))
            await writer.drain()
            got = [await _read_server_frame(reader) for _ in range(4)]
            writer.close()
        return got

    assert run(main()) == [bytes(range(256)) * 40, b"a" * 9000, b"b" * 5, b"c" * 20000]


def test_text_and_binary_messages_of_one_read_keep_their_types(mode: str, run: Any) -> None:
    """Messages that arrive together reach the loop as one batch, each as its
    own object: str for text (empty or not), bytes for binary."""
    sent = ["é" * 3, b"\x00\xff", "", b"", "z" * 9000, b"y" * 9000]

    async def main() -> list[Any]:
        got: list[Any] = []
        done = asyncio.Event()

        async def collect(ws: Any) -> None:
            async for message in ws:
                got.append(message)
                if len(got) == len(sent):
                    done.set()

        async with la.serve(collect, "127.0.0.1", 0, mode=mode) as server:
            _reader, writer = await _raw_upgrade(server.port)
            writer.write(b"".join(
                masked_frame(1, m.encode()) if isinstance(m, str) else masked_frame(2, m)
                for m in sent))
            await writer.drain()
            await asyncio.wait_for(done.wait(), 5)
            writer.close()
        return got

    got = run(main())
    assert got == sent
    assert [type(m) for m in got] == [type(m) for m in sent]


def test_read_size_is_checked() -> None:
    for bad in (0, 4095, (1 << 20) + 1):
        with pytest.raises(ValueError, match="read_size"):
            la.serve(echo, read_size=bad)
        with pytest.raises(ValueError, match="read_size"):
            la.connect("ws://127.0.0.1:1/", read_size=bad)


def test_websockets_client_and_server_interop(mode: str, run: Any) -> None:
    async def main() -> tuple[list[Any], list[Any]]:
        async with la.serve(echo, "127.0.0.1", 0, mode=mode) as server:
            async with ws_connect(f"ws://127.0.0.1:{server.port}/") as client:
                for m in ("a", b"b"):
                    await client.send(m)
                first = [await client.recv(), await client.recv()]

        async def ws_echo(conn: Any) -> None:
            async for m in conn:
                await conn.send(m)

        async with ws_serve(ws_echo, "127.0.0.1", 0) as ws_server:
            port = ws_server.sockets[0].getsockname()[1]
            async with la.connect(f"ws://127.0.0.1:{port}/", mode=mode) as ws:
                await ws.send("c")
                await ws.send(b"d")
                second = [await ws.recv(), await ws.recv()]
        return first, second

    assert run(main()) == (["a", b"b"], ["c", b"d"])


def test_close_codes_ok_and_error(mode: str, run: Any) -> None:
    async def handler(ws: la.WebSocket) -> None:
        message = await ws.recv()
        if message == "fail":
            raise RuntimeError("handler failed")
        if message == "custom":
            await ws.close(4001, "custom reason")
        # returning closes with 1000

    async def main() -> list[Any]:
        out: list[Any] = []
        async with la.serve(handler, "127.0.0.1", 0, mode=mode) as server:
            url = f"ws://127.0.0.1:{server.port}/"
            for what in ("done", "fail", "custom"):
                async with la.connect(url, mode=mode) as ws:
                    await ws.send(what)
                    with pytest.raises(lws.ConnectionClosed) as info:
                        await ws.recv()
                    out.append((type(info.value).__name__, info.value.code,
                                info.value.reason))
        return out

    assert run(main()) == [("ConnectionClosedOK", 1000, ""),
                           ("ConnectionClosedError", 1011, "internal error"),
                           ("ConnectionClosedError", 4001, "custom reason")]


def test_async_for_ends_cleanly_and_max_size_closes_1009(mode: str, run: Any) -> None:
    async def main() -> tuple[list[Any], int | None]:
        got: list[Any] = []
        async with la.serve(echo, "127.0.0.1", 0, mode=mode, max_size=1000) as server:
            async with la.connect(f"ws://127.0.0.1:{server.port}/", mode=mode) as ws:
                await ws.send("one")
                got.append(await ws.recv())
                await ws.send(b"x" * 1001)
                with pytest.raises(lws.ConnectionClosedError) as info:
                    await ws.recv()
        return got, info.value.code

    assert run(main()) == (["one"], 1009)


def test_a_reader_that_gives_up_loses_no_message(mode: str, run: Any) -> None:
    # While nothing is queued, async for waits on the future the next message
    # completes (and recv() on the same): a reader that gives up cancels it,
    # and the message then queues for the next read. Two readers at once
    # are refused.
    async def late_echo(ws: la.WebSocket) -> None:
        async for message in ws:
            if message == "bye":
                return  # closes with 1000
            await asyncio.sleep(0.1)  # longer than the client waits below
            await ws.send(message)

    async def main() -> list[Any]:
        got: list[Any] = []
        async with la.serve(late_echo, "127.0.0.1", 0, mode=mode) as server:
            async with la.connect(f"ws://127.0.0.1:{server.port}/", mode=mode) as ws:
                for read in (ws.recv, ws.__anext__):
                    await ws.send(f"late {read.__name__}")
                    with pytest.raises(asyncio.TimeoutError):
                        await asyncio.wait_for(read(), 0.02)
                    got.append(await ws.recv())
                waiting = asyncio.ensure_future(ws.__anext__())
                with pytest.raises(RuntimeError, match="already waiting"):
                    await ws.recv()
                await ws.send("last")
                got.append(await waiting)
                await ws.send("bye")
                async for message in ws:  # waits: the server's close (1000) ends it quietly
                    got.append(message)
        return got

    assert run(main()) == ["late recv", "late __anext__", "last"]


async def _serve_to_peer(peer: Callable[[int], None], handler: Any, mode: str,
                         **options: Any) -> None:
    """Serve until peer(port), a blocking client on a thread of its own, returns."""
    async with la.serve(handler, "127.0.0.1", 0, mode=mode, **options) as server:
        thread = threading.Thread(target=peer, args=(server.port,))
        thread.start()
        while thread.is_alive():
            await asyncio.sleep(0.01)
        thread.join()


def test_one_message_in_flight_is_answered_inside_send(mode: str, run: Any) -> None:
    """The reply to a lone message leaves inside ``send()``: it reaches the
    peer while the handler still holds the loop (native mode writes it
    there; thread mode wakes the service thread for it there, not after the
    handler's step). The peer is a blocking socket on a thread of its own."""
    replied = threading.Event()
    seen: list[bool] = []

    def peer(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(upgrade_request())
            read_upgrade_response(sock)
            sock.sendall(masked_frame(2, b"lone"))
            if read_frame(sock)[1] == b"lone":
                replied.set()

    async def handler(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)
            # the loop is held here: only a write made inside send() gets out
            seen.append(replied.wait(5))

    run(_serve_to_peer(peer, handler, mode))
    assert seen == [True]


def test_large_messages_do_not_fault_their_pages_in_anew(mode: str, run: Any) -> None:
    """Echoing 1 MiB messages reuses the big send buffers: without that, glibc
    maps (or trims and grows back) a fresh block per message and each of its
    256 pages faults in again. Counted as the process' minor page faults over
    round trips whose peer reads into a buffer it allocated beforehand (so
    with glibc's malloc: valgrind's own allocator faults differently)."""
    payload = bytes(range(256)) * 4096  # 1 MiB
    frame = masked_frame(2, payload)
    rounds = 20
    faults: list[int] = []
    intact: list[bool] = []

    def peer(port: int) -> None:
        buf = bytearray(len(payload))
        view = memoryview(buf)
        head = bytearray(10)

        def fill(sock: socket.socket, into: memoryview) -> None:
            got = 0
            while got < len(into):
                n = sock.recv_into(into[got:])
                if not n:
                    raise ConnectionError("the server closed the connection")
                got += n

        def read_message(sock: socket.socket) -> int:
            """Frames into buf (the echo may come in fragments): the length."""
            size = 0
            while True:
                fill(sock, memoryview(head)[:2])
                n = head[1] & 0x7F
                if n >= 126:
                    extra = 2 if n == 126 else 8
                    fill(sock, memoryview(head)[2:2 + extra])
                    n = int.from_bytes(head[2:2 + extra], "big")
                fill(sock, view[size:size + n])
                size += n
                if head[0] & 0x80:
                    return size

        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(upgrade_request())
            read_upgrade_response(sock)
            for i in range(5 + rounds):
                if i == 5:  # after warming up
                    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                sock.sendall(frame)
                size = read_message(sock)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
            intact.append(size == len(payload) and view == payload)

    run(_serve_to_peer(peer, echo, mode, max_size=2 << 20))
    assert intact == [True], "the peer did not finish, or the echo differs"
    # a quarter of one message's pages per round trip; about 250 without the reuse
    assert faults[0] < rounds * 64, faults


def test_large_frames_written_header_first_stay_whole(mode: str, run: Any) -> None:
    """Frames of 32 KiB and up go out header first, in a write of its own.
    A peer with a tiny receive buffer that only starts reading later leaves
    lws with payloads it could write only in part (it keeps the rest): each
    payload still follows its own header, whole, and the pong lws owes for
    a ping that arrives meanwhile gets in between no frame's parts. (300,000
    bytes go out as 256 KiB fragments, tx_fragment_size.)"""
    sizes = [32767, 32768, 40000, 65535, 65536, 70000, 5, 100000, 1 << 17, 300_000]
    sent = [(bytes([i]) * n if i % 2 else "é" * (n // 2)) for i, n in enumerate(sizes * 3)]
    got: list[bytes] = []
    pongs: list[bytes] = []

    async def handler(ws: Any) -> None:
        for message in sent:
            await ws.send(message)
        await ws.recv()  # the peer's "done"

    def peer(port: int) -> None:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(10)
            sock.connect(("127.0.0.1", port))
            sock.sendall(upgrade_request())
            read_upgrade_response(sock)
            time.sleep(0.3)  # the server's sends fill the socket meanwhile
            sock.sendall(masked_frame(9, b"meanwhile"))
            message = b""
            while len(got) < len(sent) or not pongs:
                head, payload = read_frame(sock)
                if head & 0x0F == 10:
                    pongs.append(payload)
                    continue
                message += payload
                if head & 0x80:
                    got.append(message)
                    message = b""
            sock.sendall(masked_frame(1, b"done"))

    run(_serve_to_peer(peer, handler, mode, write_limit=64 * 1024))
    assert len(got) == len(sent)
    assert [m.decode() if isinstance(s, str) else m for m, s in zip(got, sent, strict=True)] == sent
    assert pongs == [b"meanwhile"]


def test_send_waits_while_the_peer_does_not_read(mode: str, run: Any) -> None:
    """write_limit bounds what send() queues; it resumes when the peer reads."""

    async def main() -> tuple[bool, int]:
        release = asyncio.Event()
        sent = 0
        blocked = False

        async def slow_reader(conn: Any) -> None:
            await release.wait()
            async for _ in conn:
                pass

        async with ws_serve(slow_reader, "127.0.0.1", 0, max_size=None) as ws_server:
            port = ws_server.sockets[0].getsockname()[1]
            async with la.connect(f"ws://127.0.0.1:{port}/", mode=mode,
                                  write_limit=256 * 1024) as ws:
                chunk = b"z" * 65536
                for _ in range(400):  # 25 MiB: far beyond socket buffers
                    try:
                        await asyncio.wait_for(ws.send(chunk), 0.5)
                    except asyncio.TimeoutError:
                        blocked = True
                        break
                    sent += 1
                assert ws.connection.queued_bytes <= 256 * 1024 + 65536
                release.set()
                if blocked:
                    await asyncio.wait_for(ws.send(chunk), 20)  # drains once read
        return blocked, sent

    blocked, sent = run(main())
    assert blocked and sent < 400


def test_slow_consumer_pauses_lws_reads(mode: str, run: Any) -> None:
    async def main() -> tuple[int, int]:
        peak = 0
        holder: dict[str, la.WebSocket] = {}
        got_all = asyncio.Event()

        async def lazy(ws: la.WebSocket) -> None:
            holder["ws"] = ws
            await got_all.wait()
            n = 0
            async for _ in ws:
                n += 1
                if n == 200:
                    await ws.send(str(n))

        async with la.serve(lazy, "127.0.0.1", 0, mode=mode, max_queue=8) as server:
            async with ws_connect(f"ws://127.0.0.1:{server.port}/") as client:
                for i in range(200):
                    await client.send(f"m{i}")
                for _ in range(20):
                    await asyncio.sleep(0.02)
                    if "ws" in holder:
                        peak = max(peak, len(holder["ws"]._messages))
                got_all.set()
                reply = await asyncio.wait_for(client.recv(), 20)
        return peak, int(reply)

    peak, reply = run(main())
    assert reply == 200
    assert peak <= 8 + 4, f"{peak} messages waited: lws did not pause reading"


def test_one_socket_watched_by_the_loop_itself(mode: str, run: Any) -> None:
    """Native mode: the loop watches the input of one WebSocket itself (no
    inner epoll on a lone message's way). It goes back to the epoll instance
    when lws pauses its reads for a slow consumer (else the loop would find
    it readable again and again: the services stay few while it waits), and
    when it closes. Only a connection that opens alone becomes direct: not
    one that opens beside another, but the next one alone does. A client
    from connect() has its own context, and its connection is direct there.
    Thread mode has none."""
    native = mode == "native"

    async def main() -> list[Any]:
        seen: list[Any] = []
        release = asyncio.Event()

        async def handler(ws: la.WebSocket) -> None:
            if ws.request is not None and ws.request.path == "/slow":
                await release.wait()
            async for message in ws:
                await ws.send(message)

        async with la.serve(handler, "127.0.0.1", 0, mode=mode, max_queue=4) as server:
            runner = server._runner
            ps = runner.ctx._pollset if native else None

            def direct() -> Any:
                if runner._direct is None:
                    return None
                return next(ws.request.path for ws in server.connections
                            if ws.connection is runner._direct)

            async with ws_connect(f"ws://127.0.0.1:{server.port}/slow") as slow:
                await slow.send("hello")
                for _ in range(500):
                    if server.connections:
                        break
                    await asyncio.sleep(0.01)
                seen.append(direct())
                for i in range(60):  # more than lws reads at once: the rest waits in the kernel
                    await slow.send(f"m{i}" + "." * 1000)
                for _ in range(500):
                    if len(server.connections[0]._messages) >= 4 and runner._direct is None:
                        break
                    await asyncio.sleep(0.01)
                seen.append(direct())
                services = ps.gen if native else 0
                await asyncio.sleep(0.3)
                seen.append((ps.gen if native else 0) - services < 20)
                async with ws_connect(f"ws://127.0.0.1:{server.port}/fast") as fast:
                    await fast.send("x")
                    seen.append(await fast.recv())
                    seen.append(direct())
                release.set()
                seen.append([await slow.recv() for _ in range(61)]
                            == ["hello"] + [f"m{i}" + "." * 1000 for i in range(60)])
                seen.append(direct())
            async with la.connect(f"ws://127.0.0.1:{server.port}/again", mode=mode) as again:
                await again.send("y")
                seen.append(await again.recv())
                seen.append(direct())
                # a client's own context: its connection is direct there
                seen.append(again._runner._direct is again.connection)
        return seen

    assert run(main()) == (["/slow", None, True, "x", None, True, None, "y", "/again", True]
                           if native else
                           [None, None, True, "x", None, True, None, "y", None, False])


def test_direct_socket_refused_by_the_loop() -> None:
    """If the loop cannot watch the direct socket (its add_reader fails),
    that is reported and the connection goes on through lws' epoll
    instance; the next one to open gets it. Native mode, on asyncio's own
    loop (its add_reader can be replaced on the instance); where there is
    no native mode, serve() says so."""
    if not lws.features["external_poll"]:
        with pytest.raises(lws.FeatureUnavailable):
            la._pick_mode("native")
        return

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        reports: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, ctx: reports.append(ctx))
        real = loop.add_reader

        def refuse(fd: int, callback: Any, *args: Any) -> Any:
            if args and isinstance(args[0], int) and args[0] < 0:  # the direct socket
                raise OSError(28, "no room to watch it")
            return real(fd, callback, *args)

        seen: list[Any] = []
        async with la.serve(echo, "127.0.0.1", 0, mode="native") as server:
            loop.add_reader = refuse  # type: ignore[method-assign]
            try:
                async with ws_connect(f"ws://127.0.0.1:{server.port}/") as first:
                    for i in range(3):
                        await first.send(f"m{i}")
                        seen.append(await asyncio.wait_for(first.recv(), 10))
                    seen.append(server._runner._direct)
            finally:
                loop.add_reader = real  # type: ignore[method-assign]
            async with ws_connect(f"ws://127.0.0.1:{server.port}/") as second:
                await second.send("again")
                seen.append(await asyncio.wait_for(second.recv(), 10))
                seen.append(server._runner._direct is server.connections[0].connection)
        seen.append([str(r["exception"]) for r in reports])
        return seen

    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(asyncio.wait_for(main(), 60)) == [
            "m0", "m1", "m2", None, "again", True, ["[Errno 28] no room to watch it"]]
    finally:
        loop.close()


def test_ping_request_headers_subprotocol_and_session(mode: str, run: Any) -> None:
    class Pss(lws.Struct):
        hits: c.uint32_t

    async def handler(ws: la.WebSocket) -> None:
        ws.session.hits += 1
        assert ws.request is not None
        await ws.send(f"{ws.subprotocol} {ws.request.path} {ws.request.query} "
                      f"{ws.request.headers.get('origin')} hits={ws.session.hits}")
        pong = await ws.ping(b"p1")
        await asyncio.wait_for(pong, 5)
        await ws.send("ponged")

    async def main() -> list[Any]:
        async with la.serve(handler, "127.0.0.1", 0, mode=mode, subprotocols=["chat", "v2"],
                            session=Pss) as server:
            async with la.connect(f"ws://127.0.0.1:{server.port}/room?x=1", mode=mode,
                                  subprotocols=["v2"], origin="http://o.example") as ws:
                assert ws.subprotocol == "v2"
                return [await ws.recv(), await ws.recv()]

    first, second = run(main())
    assert first == "v2 /room {'x': '1'} http://o.example hits=1"
    assert second == "ponged"


def test_shutdown_leaves_nothing_behind(mode: str, run: Any) -> None:
    before = threading.active_count()

    async def forever(ws: la.WebSocket) -> None:
        await asyncio.sleep(3600)

    async def main() -> list[Any]:
        codes: list[Any] = []
        server = await la.serve(forever, "127.0.0.1", 0, mode=mode)
        clients = [await ws_connect(f"ws://127.0.0.1:{server.port}/") for _ in range(3)]
        await asyncio.sleep(0.1)
        await server.close()  # cancels handlers, closes with 1001
        for client in clients:
            try:
                await asyncio.wait_for(client.recv(), 5)
            except websockets.ConnectionClosed as exc:
                codes.append(exc.rcvd.code if exc.rcvd else None)
        assert server.context.closed
        return codes

    assert run(main()) == [1001, 1001, 1001]
    assert threading.active_count() <= before


def test_a_socket_epoll_refuses_costs_that_connection_only(mode: str, run: Any) -> None:
    """Native mode: when epoll refuses one of lws' sockets (no memory), that
    connection is closed and the loop's exception handler hears of it once;
    open connections and new ones go on. The refusal is injected: the
    pollset's ``refuse`` counter fails its next epoll add, and the real
    fallback (epoll's other verb) fails after it. The other modes have no pollset."""
    async def main() -> tuple[list[Any], list[str]]:
        reports: list[Any] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, c: reports.append(c))
        echoed: list[str] = []
        async with la.serve(echo, "127.0.0.1", 0, mode=mode) as server:
            ps = server.context._pollset
            if mode != "native":
                assert ps is None
                return reports, echoed
            url = f"ws://127.0.0.1:{server.port}/"
            async with ws_connect(url) as a:
                await a.send("a1")
                echoed.append(await a.recv())
                ps.refuse = 1
                # lws may answer the handshake before the kill lands: either way
                # the connection ends without a close handshake
                with pytest.raises((websockets.InvalidMessage, websockets.ConnectionClosedError,
                                    EOFError, OSError)):
                    async with ws_connect(url, open_timeout=5) as b:
                        await b.recv()
                assert ps.refuse == 0
                await a.send("a2")
                echoed.append(await a.recv())
                async with ws_connect(url) as c:
                    await c.send("c1")
                    echoed.append(await c.recv())
        return reports, echoed

    reports, echoed = run(main())
    if mode != "native":
        assert (reports, echoed) == ([], [])
        return
    assert echoed == ["a1", "a2", "c1"]
    assert len(reports) == 1, reports
    assert isinstance(reports[0]["exception"], lws.LwsError)
    assert "could not watch one of lws' sockets" in str(reports[0]["exception"])


def test_many_connections_at_once_and_no_fd_left(mode: str, run: Any) -> None:
    """40 connections with 5 messages each in flight at once all get their
    echoes, and after close() no fd is left open. The loop does not watch
    lws' sockets one by one: in native mode it watches their epoll instance
    and the input of one of them (the direct socket), in thread mode the
    bridge's eventfd (on asyncio's own loop, its selector's map shows it: the
    40 clients, its wake-up pipe, and one or two)."""
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def one(port: int, i: int, go: asyncio.Event) -> bool:
        async with ws_connect(f"ws://127.0.0.1:{port}/") as client:
            await go.wait()
            sent = [f"{i}:{k}" if k % 2 else f"{i}:{k}".encode() * 300 for k in range(5)]
            for m in sent:
                await client.send(m)
            return [await client.recv() for _ in sent] == sent

    async def once() -> tuple[list[bool], int | None]:
        watched = None
        go = asyncio.Event()
        async with la.serve(echo, "127.0.0.1", 0, mode=mode) as server:
            tasks = [asyncio.ensure_future(one(server.port, i, go)) for i in range(40)]
            for _ in range(500):
                if len(server.connections) == 40:
                    break
                await asyncio.sleep(0.01)
            selector = getattr(asyncio.get_running_loop(), "_selector", None)
            if selector is not None:
                watched = len(selector.get_map())
            go.set()
            results = await asyncio.gather(*tasks)
        return results, watched

    async def main() -> tuple[list[bool], int | None, int]:
        await once()  # what the loop and the libraries open once, for good
        before = open_fds()
        results, watched = await once()
        return results, watched, open_fds() - before

    results, watched, leaked = run(main())
    assert results == [True] * 40
    assert watched in (None, 43 if mode == "native" else 42)
    assert leaked == 0


def test_connect_errors(mode: str, run: Any, free_port: int) -> None:
    async def main() -> None:
        with pytest.raises(lws.ConnectError):
            await la.connect(f"ws://127.0.0.1:{free_port}/", mode=mode, open_timeout=10)

    run(main())
    with pytest.raises(ValueError):
        la.connect("http://x/")


def test_tls_compression_and_http_on_the_same_port(mode: str, run: Any,
                                                   tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "k.pem"))

    class Page(lws.Protocol):
        name = "page"

        def on_request(self, conn: lws.Connection, req: lws.Request) -> lws.Response:
            return lws.Response(200, "plain http too")

    async def main() -> tuple[Any, bytes]:
        async with la.serve(echo, "127.0.0.1", 0, mode=mode, compression="deflate",
                            tls=lws.ServerTLS(tmp_path / "c.pem", tmp_path / "k.pem"),
                            http=Page()) as server:
            async with la.connect(f"wss://localhost:{server.port}/", mode=mode,
                                  compression="deflate",
                                  tls=lws.ClientTLS(ca=tmp_path / "ca.pem")) as ws:
                await ws.send("secure " * 1000)
                echoed = await ws.recv()
            result = await asyncio.get_running_loop().run_in_executor(
                None, lambda: lws.fetch(f"https://localhost:{server.port}/page",
                                        tls=lws.ClientTLS(ca=tmp_path / "ca.pem")))
        return echoed, result.body

    assert run(main()) == ("secure " * 1000, b"plain http too")


def test_concurrent_compressed_connections_keep_their_own_input(mode: str, run: Any) -> None:
    """Four compressing clients at once (see tests/compressing_clients.py): lws
    may inflate the rest of one connection's read after another connection's
    read has overwritten the buffer it was in; the binding's copy prevents it."""

    async def main() -> list[str]:
        async with la.serve(echo, "127.0.0.1", 0, mode=mode, compression="deflate") as server:
            return await echo_concurrently(f"ws://127.0.0.1:{server.port}/")

    verdicts = run(main())
    assert verdicts == ["ok"] * len(verdicts)


def test_tls_big_and_pipelined_messages(mode: str, run: Any, tmp_path: Path) -> None:
    """Over TLS, OpenSSL holds decrypted bytes the socket no longer signals;
    native mode gives them the forced service lws asks for (without it the
    250 ms tick would still get them through, only late: this checks that
    every byte arrives, in order, not how soon)."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "k.pem"))
    big = bytes(range(256)) * 4096  # 1 MiB
    small = [f"m{i}" * 50 for i in range(200)]

    async def main() -> tuple[list[bytes], list[str]]:
        async with la.serve(echo, "127.0.0.1", 0, mode=mode, max_size=4 << 20,
                            tls=lws.ServerTLS(tmp_path / "c.pem", tmp_path / "k.pem")) as server:
            async with la.connect(f"wss://localhost:{server.port}/", mode=mode,
                                  max_size=4 << 20,
                                  tls=lws.ClientTLS(ca=tmp_path / "ca.pem")) as ws:
                for _ in range(3):
                    await ws.send(big)
                bigs = [await asyncio.wait_for(ws.recv(), 20) for _ in range(3)]
                for message in small:
                    await ws.send(message)
                smalls = [await asyncio.wait_for(ws.recv(), 20) for _ in small]
        return bigs, smalls  # type: ignore[return-value]

    bigs, smalls = run(main())
    assert bigs == [big] * 3
    assert smalls == small


def test_thread_mode_service_thread_runs_no_python_per_message(run: Any) -> None:
    """Thread mode hands messages to the loop, and the loop's sends to lws, in C
    (lwspy_bridge): echoing 2,000 messages, 16 in flight, calls Python on the
    service thread a handful of times (opening, closing), not once a message."""
    n = 2000

    async def main() -> tuple[list[str], int]:
        async with la.serve(echo, "127.0.0.1", 0, mode="thread") as server:
            async with ws_connect(f"ws://127.0.0.1:{server.port}/") as client:
                await client.send("warm")
                assert await client.recv() == "warm"
                before = lib.lwspy_count_python
                got: list[str] = []
                for i in range(n):
                    await client.send(f"m{i}")
                    if i >= 15:
                        got.append(str(await client.recv()))
                got += [str(await client.recv()) for _ in range(15)]
                return got, lib.lwspy_count_python - before

    got, calls = run(main())
    assert got == [f"m{i}" for i in range(n)]
    assert calls < n // 20, f"{calls} calls into Python for {n} messages"


def test_thread_mode_send_from_another_thread(run: Any) -> None:
    """A send from a thread that is neither the loop's nor lws' still reaches
    the peer: the loop may be between batches (its flush pending) or idle."""

    async def handler(ws: la.WebSocket) -> None:
        await ws.recv()
        conn = ws.connection
        senders = [threading.Thread(target=lambda i=i: conn.send(f"t{i}")) for i in range(20)]
        for t in senders:
            t.start()
        for t in senders:
            t.join()
        await ws.send("done")
        await ws.wait_closed()

    async def main() -> list[str]:
        async with la.serve(handler, "127.0.0.1", 0, mode="thread") as server:
            async with la.connect(f"ws://127.0.0.1:{server.port}/", mode="thread") as ws:
                await ws.send("go")
                got = [str(await asyncio.wait_for(ws.recv(), 10)) for _ in range(21)]
        return got

    got = run(main())
    assert got[-1] == "done"  # queued after every thread's send had returned
    assert sorted(got[:-1]) == sorted(f"t{i}" for i in range(20))


def test_keepalive_pings_and_timeout(mode: str, run: Any) -> None:
    async def main() -> tuple[int, Any]:
        pings = 0

        async def quiet(ws: la.WebSocket) -> None:
            await ws.wait_closed()

        async with la.serve(quiet, "127.0.0.1", 0, mode=mode, ping_interval=0.05,
                            ping_timeout=1) as server:
            async with ws_connect(f"ws://127.0.0.1:{server.port}/", ping_interval=None) as c:
                # websockets answers pings by itself; count what arrives.
                for _ in range(40):
                    await asyncio.sleep(0.02)
                pings = len([w for w in server.connections if not w.closed])
                assert c.state.name == "OPEN"

        # A peer that never answers pings: websockets' client with pongs blocked
        # is not easy to get, so use a raw TCP peer that does the handshake only.
        async with la.serve(quiet, "127.0.0.1", 0, mode=mode, ping_interval=0.05,
                            ping_timeout=0.2) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         b"Sec-WebSocket-Version: 13\r\n\r\n")
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")
            data = b""
            deadline = asyncio.get_running_loop().time() + 5
            while b"\x88" not in data and asyncio.get_running_loop().time() < deadline:
                chunk = await asyncio.wait_for(reader.read(4096), 5)
                if not chunk:
                    break
                data += chunk
            writer.close()
        close_at = data.find(b"\x88")
        code = int.from_bytes(data[close_at + 2:close_at + 4], "big") if close_at >= 0 else None
        return pings, code

    alive, code = run(main())
    assert alive == 1, "a peer answering pings stays connected"
    assert code == 1011, "a peer that never answers is closed with 1011"
