"""asyncio on the native stack: :func:`serve` and :func:`connect`, websockets-style.

::

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    async with lws.asyncio.serve(echo, "127.0.0.1", 8765) as server:
        await server.serve_forever()

    async with lws.asyncio.connect("ws://127.0.0.1:8765/") as ws:
        await ws.send("hi")
        print(await ws.recv())

Three ways to run lws under a loop; :attr:`Server.mode` /
:attr:`WebSocket.mode` says which one is in use:

``"native"``
    lws runs on the asyncio loop's own thread: lws reports its sockets
    (``ADD/DEL/CHANGE_MODE_POLL_FD``, needs an lws built with
    ``LWS_WITH_EXTERNAL_POLL``), C keeps them in an epoll instance and the
    loop watches that one fd, calling lws once for all the sockets that are
    ready; a WebSocket that opens alone has its socket watched by the loop
    directly, which spares a lone message in flight a system call. No extra
    thread; Linux only (epoll).
``"libuv"``
    lws runs on its libuv event library (``LWS_WITH_LIBUV``; Debian's 4.1.6
    has it, with the ``libwebsockets-evlib-uv`` plugin), on a uv loop of
    the binding's own nested in the asyncio loop: the loop watches libuv's
    epoll fd (``uv_backend_fd``) and runs ``uv_run(UV_RUN_NOWAIT)`` when it
    is readable, after sends, and when libuv's next timer is due. No extra
    thread; Linux. Such a context cannot ``run()``: the loop serves it.
``"thread"``
    lws runs on a service thread (``Context.run``). Messages cross to the
    loop, and sends back to lws, in C (``lwspy_bridge``: an eventfd the loop
    watches one way, ``lws_cancel_service()`` the other, once per batch), so
    the service thread runs no Python per message; opening, closing and
    pongs cross with ``call_soon_threadsafe``. Works with every lws build.

``mode="auto"`` (the default) picks native where the build allows it, else
thread; libuv mode is opt-in (faster than thread mode with few
connections, slower with many: docs/asyncio.md).

Backpressure: ``send`` waits while more than ``write_limit`` bytes are queued
on the connection; received messages wait in a queue of at most
``max_queue`` messages, past which lws stops reading from the socket until
the application catches up. Nothing grows without bound.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import threading
import urllib.parse
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Mapping,
)
from dataclasses import dataclass
from typing import Any

from ._binding import (
    addr,
    fast_bridge_consumed,
    fast_bridge_deliver,
    fast_native_service,
    fast_send,
    fast_uv_service,
    fast_write_now,
    features,
    ffi,
    lib,
)
from .connection import Connection
from .context import Context
from .errors import (
    ConnectError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    FeatureUnavailable,
    LwsError,
)
from .http import Mount
from .protocol import Protocol
from .session import Struct
from .tls import ClientTLS, ServerTLS

__all__ = ["Request", "Server", "WebSocket", "connect", "serve"]

_WRITE_TEXT = lib.LWS_WRITE_TEXT
_WRITE_BINARY = lib.LWS_WRITE_BINARY
logger = logging.getLogger("lws")
NULL = ffi.NULL
_POLLSET_FAILED = ("native mode could not watch one of lws' sockets (epoll refused it, or "
                   "no memory): that connection is closed")

Message = str | bytes
Handler = Callable[["WebSocket"], Awaitable[None]]

_OK_CODES = frozenset({1000, 1001, 1005})
_TICK = 0.25  # native and libuv modes: lws' own timers are serviced at least this often


_MODES = ("auto", "native", "libuv", "thread")
_LIBUV_NEEDS = ("LWS_WITH_LIBUV, and at run time libuv 1 and lws' libuv event library "
                "(Debian: libwebsockets-evlib-uv)")


class _Probe(Protocol):
    name = "lws-asyncio-probe"


@functools.cache
def _libuv_usable() -> bool:
    """Whether lws can run on a uv loop here: built with its libuv event
    library, and both libuv and that plugin load (tried once, on a context
    with nothing to serve)."""
    if not features["libuv"]:
        return False
    uv = lib.lwspy_uv_new()
    if uv == NULL:
        return False
    try:
        # no listener; the context owns uv from here, and frees it
        Context([_Probe()], _uv_loop=uv).close()
    except LwsError:
        return False
    return True


def _pick_mode(mode: str) -> str:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, _MODES))}, not {mode!r}")
    if mode == "auto":
        # libuv mode is opt-in: with many connections it serves fewer
        # messages than thread mode (docs/asyncio.md)
        return "native" if features["external_poll"] else "thread"
    if mode == "native" and not features["external_poll"]:
        raise FeatureUnavailable("native asyncio mode", "LWS_WITH_EXTERNAL_POLL")
    if mode == "libuv" and not _libuv_usable():
        raise FeatureUnavailable("libuv asyncio mode", _LIBUV_NEEDS)
    return mode


# lws' own default is 4096; 16 KiB measured faster for messages of 8 KiB and
# up (one read per message instead of three) and costs nothing for idle
# connections (docs/asyncio.md, "Read size").
DEFAULT_READ_SIZE = 16384


@dataclass(frozen=True)
class _Limits:
    max_size: int
    max_queue: int
    write_limit: int
    close_timeout: float
    session: type[Struct] | None
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    read_size: int = DEFAULT_READ_SIZE


def _check_read_size(read_size: int) -> int:
    if not 4096 <= read_size <= 1 << 20:
        raise ValueError(f"read_size must be between 4096 and 1 MiB, not {read_size}")
    return read_size


class Request:
    """The opening handshake as the server saw it (a copy; valid any time)."""

    __slots__ = ("headers", "path", "query")

    def __init__(self, path: str, query: dict[str, str], headers: dict[str, str]) -> None:
        self.path = path
        self.query = query
        self.headers = headers

    def __repr__(self) -> str:
        return f"<Request {self.path!r}>"


class WebSocket:
    """One WebSocket connection, on the asyncio side. Use it from the loop's thread.

    ``session`` is the connection's typed per-session data (the same view, with
    the same lifetime rules, as :attr:`lws.Connection.session`).
    """

    def __init__(self, runner: _Runner, conn: Connection, max_queue: int,
                 write_limit: int) -> None:
        self._runner = runner
        self._loop = runner.loop
        self.connection = conn
        self.mode = runner.mode
        self._native = runner.on_loop
        # Messages come through the C bridge (_Runner._pull), and C pauses
        # and resumes reading at max_queue, in both modes: a batch may hold
        # many messages, so the pause is decided in C, per message. Either
        # way _messages is touched on the loop only.
        self._txq_addr = conn._txq_addr
        self._messages: collections.deque[Message] = collections.deque()
        self._max_queue = max_queue
        self._write_limit = write_limit
        # The future a reader waits on while no message is queued: completed
        # with the next message itself (_pull, _take), or, on close, with the
        # error that ends the wait (iterating: StopAsyncIteration on a normal
        # close).
        self._getter: asyncio.Future[Message] | None = None
        self._getter_iterating = False
        self._drained: asyncio.Future[None] | None = None
        self._closed = self._loop.create_future()
        self._pongs: dict[bytes, list[asyncio.Future[float]]] = {}
        self.request: Request | None = None
        self.subprotocol: str | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self._keepalive: asyncio.Task[None] | None = None

    # -- properties -----------------------------------------------------------

    @property
    def id(self) -> int:
        return self.connection.id

    @property
    def session(self) -> Any:
        return self.connection.session

    @property
    def closed(self) -> bool:
        return self._closed.done()

    def __repr__(self) -> str:
        return f"<lws.asyncio.WebSocket #{self.id} {self.mode}>"

    # -- events from lws (called on the loop thread) ----------------------------

    def _take(self, message: Message) -> None:
        """A received message that missed the bridge (on_message), on the loop."""
        getter = self._getter
        self._getter = None
        if getter is not None and not getter.done():
            getter.set_result(message)
        else:
            self._messages.append(message)

    def _consumed(self) -> None:
        """The app took a message: C resumes reading once half the queue is free."""
        fast_bridge_consumed(self._txq_addr)

    def _on_drain(self) -> None:
        waiter = self._drained
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_pong(self, data: bytes) -> None:
        waiters = self._pongs.pop(data, [])
        for fut in waiters:
            if not fut.done():
                fut.set_result(self._loop.time())

    def _start_keepalive(self) -> None:
        if self._runner.ping_interval is not None:
            self._keepalive = self._loop.create_task(self._keepalive_loop())

    async def _keepalive_loop(self) -> None:
        """Ping every ``ping_interval``; no pong within ``ping_timeout`` closes with 1011."""
        interval = self._runner.ping_interval
        timeout = self._runner.ping_timeout
        assert interval is not None
        n = 0
        while not self._closed.done():
            await asyncio.sleep(interval)
            n += 1
            try:
                pong = await self.ping(b"keepalive %d" % n)
                if timeout is not None:
                    await asyncio.wait_for(pong, timeout)
            except asyncio.TimeoutError:
                logger.info("%r: no pong within %ss: closing", self, timeout)
                with contextlib.suppress(ConnectionClosed):
                    self.connection.close(1011, "keepalive ping timeout")
                self._runner.kick()
                return
            except (ConnectionClosed, LwsError):
                return

    def _on_closed(self, code: int | None, reason: str) -> None:
        if self._runner._bridge is not None:
            # Messages lws handed over before the close come first.
            self._runner._pull()
            self._runner._by_id.pop(self.id, None)
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        if self._closed.done():
            return
        self.close_code = code
        self.close_reason = reason
        self._closed.set_result(None)
        getter = self._getter
        self._getter = None
        if getter is not None and not getter.done():
            getter.set_exception(self._end_error(self._getter_iterating))
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)
        for pong_waiters in self._pongs.values():
            for pong in pong_waiters:
                if not pong.done():
                    pong.set_exception(self._closed_error())
        self._pongs.clear()

    def _end_error(self, iterating: bool) -> Exception:
        """What a read raises once the connection is closed and nothing is queued."""
        if iterating and self.close_code in _OK_CODES:
            return StopAsyncIteration()
        return self._closed_error()

    def _closed_error(self) -> ConnectionClosed:
        code = self.close_code
        kind = ConnectionClosedOK if code in _OK_CODES else ConnectionClosedError
        shown = "no close frame" if code is None else f"code {code}"
        if self.close_reason:
            shown += f": {self.close_reason}"
        return kind(f"connection closed ({shown})", code, self.close_reason)

    # -- receiving -------------------------------------------------------------

    def recv(self) -> Coroutine[Any, Any, Message]:
        """The next message (``str`` for text, ``bytes`` for binary): ``await ws.recv()``.

        Raises :class:`lws.ConnectionClosedOK` / :class:`lws.ConnectionClosedError`
        once the connection is closed and every received message was read, and
        ``RuntimeError`` if another coroutine is already waiting for a message.
        """
        return self._pop(False)

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    def __anext__(self) -> Awaitable[Message]:
        """``async for message in ws``: ends quietly on a normal close.

        While no message is queued, this returns the future the next one will
        complete, not a coroutine around it: one object less per message.
        """
        if self._messages or self._closed.done():
            return self._pop(True)
        return self._wait(True)

    async def _pop(self, iterating: bool) -> Message:
        messages = self._messages
        if not messages:
            if self._closed.done():
                raise self._end_error(iterating)
            return await self._wait(iterating)
        message = messages.popleft()
        fast_bridge_consumed(self._txq_addr)
        return message

    def _wait(self, iterating: bool) -> asyncio.Future[Message]:
        getter = self._getter
        if getter is not None and not getter.done():
            raise RuntimeError(f"{self!r}: another coroutine is already waiting for a message")
        self._getter = getter = self._loop.create_future()
        self._getter_iterating = iterating
        return getter

    # -- sending ---------------------------------------------------------------

    async def send(self, message: Message | Iterable[Message]) -> None:
        """Send a message (``str`` text, bytes-like binary), or an iterable as fragments.

        Once the message is queued, waits while more than ``write_limit``
        bytes are queued on the connection (the peer is not reading).
        """
        kind = type(message)
        conn = self.connection
        native = self._native
        if conn._fast and (kind is bytes or kind is str) and (native or conn._bridged):
            # The common case, Connection.send's fast path inlined: queue it
            # (on the lws thread with the wsi; in thread mode without, and C
            # asks the bridge for WRITEABLE), then wait only if that passed
            # the limit.
            if kind is bytes:
                payload: bytes = message  # type: ignore[assignment]
                flags = _WRITE_BINARY
            else:
                payload = message.encode("utf-8")  # type: ignore[union-attr]
                flags = _WRITE_TEXT
            queued = fast_send(self._txq_addr, conn._key if native else 0, payload, flags,
                               conn._limit)
            if queued >= 0:
                runner = self._runner
                if runner._solo is not self:
                    if not runner._kicked:
                        runner.kick()
                else:
                    # One message in flight: the reply goes now, not after
                    # this task's step (see _pull). Native and libuv modes
                    # write it here (2: that was all lws had to do, no
                    # service follows); in thread mode, fast_send has woken
                    # the service thread, unless a batch's answers are being
                    # gathered (kicked): then it is woken now.
                    runner._solo = None
                    if native:
                        if runner._write_now(*runner._service_args, conn._key) != 2:
                            runner.kick()
                    elif runner._kicked:
                        lib.lwspy_bridge_flush(runner._bridge)
                if queued > self._write_limit:
                    await self._wait_drained()
                return
        if self._closed.done():
            raise self._closed_error()
        if kind is bytes or kind is str:
            try:
                queued = conn.send(message)  # type: ignore[arg-type]
            except ConnectionClosed:
                await asyncio.shield(self._closed)
                raise self._closed_error() from None
            self._runner.kick()
            if queued > self._write_limit:
                await self._wait_drained()
            return
        await self._wait_drained()
        try:
            if isinstance(message, (str, bytes, bytearray, memoryview)):
                self.connection.send(message)
            else:
                self._send_fragments(list(message))
            self._runner.kick()
        except ConnectionClosed:
            await asyncio.shield(self._closed)
            raise self._closed_error() from None

    async def _wait_drained(self) -> None:
        """Wait while more than ``write_limit`` bytes are queued on the connection."""
        conn = self.connection
        while conn.queued_bytes > self._write_limit:
            # The queue's last write then hands lws' next WRITEABLE to Python
            # (drained() wakes us). The future exists before the re-check, so
            # the drain either is seen here or wakes it: no lost wake-up.
            conn._txq.give_turn = 1
            self._drained = self._loop.create_future()
            try:
                if conn.queued_bytes > self._write_limit:
                    await self._drained
            finally:
                self._drained = None
                conn._txq.give_turn = 0
            if self._closed.done():
                raise self._closed_error()

    def _send_fragments(self, parts: list[Message]) -> None:
        if not parts:
            raise ValueError("send() got an empty iterable")
        binary = not isinstance(parts[0], str)
        for i, part in enumerate(parts):
            if isinstance(part, str) == binary:
                raise TypeError("all fragments of a message must be str, or all bytes")
            self.connection.send_fragment(part, first=i == 0, final=i == len(parts) - 1,
                                          binary=binary)

    async def ping(self, data: bytes = b"") -> Awaitable[float]:
        """Send a ping; returns an awaitable that resolves (to the loop time) on its pong."""
        fut: asyncio.Future[float] = self._loop.create_future()
        self._pongs.setdefault(bytes(data), []).append(fut)
        self.connection.ping(bytes(data))
        self._runner.kick()
        return fut

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close with ``code`` and ``reason``; waits for the close to finish (bounded)."""
        if not self._closed.done():
            with contextlib.suppress(ConnectionClosed):
                self.connection.close(code, reason)
            self._runner.kick()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._closed),
                                       self._runner.close_timeout)
        if self._runner.owned_by_socket:  # a client: its lws context goes with it
            await self._runner.stop()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    async def __aenter__(self) -> WebSocket:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _AsyncProtocol(Protocol):
    """The lws protocol behind :func:`serve` / :func:`connect`: hands events to the loop."""

    name = "lws-asyncio"
    # Measured one 64 KiB message in flight: 1.09x native, 1.04x thread mode;
    # the callback API on lws 4.1.6 lost 7% with it (docs/asyncio.md).
    _header_first = True

    def __init__(self, runner: _Runner, server: bool) -> None:
        self._runner = runner
        self._server = server

    def on_filter_protocol_connection(self, conn: Connection) -> None:
        self._runner._on_handshake(conn)

    def on_established(self, conn: Connection) -> None:
        self._runner._on_open(self, conn)

    def on_client_established(self, conn: Connection) -> None:
        self._runner._on_open(self, conn)

    def on_message(self, conn: Connection, message: Message) -> None:
        # Messages go through the C bridge once the connection is open (see
        # _Runner._pull); one that came here would still reach the loop.
        self._runner._deliver(conn, "_take", message)

    def on_receive_pong(self, conn: Connection, data: bytes) -> None:
        self._runner._deliver(conn, "_on_pong", data)

    def on_client_receive_pong(self, conn: Connection, data: bytes) -> None:
        self._runner._deliver(conn, "_on_pong", data)

    def on_closed(self, conn: Connection) -> None:
        self._runner._on_close(conn)

    def on_client_closed(self, conn: Connection) -> None:
        self._runner._on_close(conn)

    def on_client_connection_error(self, conn: Connection, message: str) -> None:
        self._runner._on_connect_error(conn, message)


class _Runner:
    """Owns the lws Context and drives it under the loop, in one of the two modes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, mode: str, limits: _Limits) -> None:
        self.loop = loop
        self.mode = _pick_mode(mode)
        # native and libuv modes: lws runs on the loop's own thread
        self.on_loop = self.mode != "thread"
        self.max_queue = limits.max_queue
        self.write_limit = limits.write_limit
        self.close_timeout = limits.close_timeout
        self.ping_interval = limits.ping_interval
        self.ping_timeout = limits.ping_timeout
        self.ctx: Context | None = None
        self.sockets: dict[Connection, WebSocket] = {}
        # The C bridge (lwspy_bridge) that hands messages over, and its
        # sockets by connection id.
        self._bridge: Any = None
        self._bridge_addr = 0
        self._solo: WebSocket | None = None
        # on the loop: the context's address, and the pollset's (native) or
        # the uv loop's (libuv); the C calls that take them
        self._service_args = (0, 0)
        self._service_fn = fast_uv_service if self.mode == "libuv" else fast_native_service
        self._write_now = self._uv_write_now if self.mode == "libuv" else fast_write_now
        self._uv_fd = -1  # libuv mode: the uv loop's epoll instance, watched by the loop
        self._by_id: dict[int, WebSocket] = {}
        self.pending_requests: dict[Connection, Request] = {}
        self.on_open: Callable[[WebSocket], None] | None = None
        self.client_subprotocol: str | None = None
        self.owned_by_socket = False
        self.on_error: Callable[[Connection, str], None] | None = None
        self._thread: threading.Thread | None = None
        self._epfd = -1  # native mode: lws' sockets' epoll instance, watched by the loop
        # native mode: the WebSocket whose socket's input the loop watches
        # itself (lwspy_pollset_direct), and that socket
        self._direct: Connection | None = None
        self._direct_fd = -1
        self._kicked = False
        self._tick: asyncio.TimerHandle | None = None
        self._thread_error: BaseException | None = None
        self._stopping = False
        self._protocol_kw = {
            "max_message_size": limits.max_size, "session": limits.session,
            "send_queue_limit": max(limits.write_limit * 4, limits.max_size * 2),
            # lws reads at most this much per socket event, into a buffer of
            # this size that each connection gets when it opens
            "rx_buffer_size": limits.read_size}
        self._read_size = limits.read_size

    def make_protocol(self, name: str, server: bool) -> _AsyncProtocol:
        attrs = dict(self._protocol_kw, name=name)
        cls = type("AsyncProtocol", (_AsyncProtocol,), attrs)
        return cls(self, server)  # type: ignore[no-any-return]

    # -- starting and stopping -----------------------------------------------

    def start(self, protocols: list[Protocol], **ctx_options: Any) -> Context:
        native = self.mode == "native"
        uv: Any = None  # libuv mode: the uv loop lws runs on (the context owns it)
        if self.mode == "libuv":
            uv = lib.lwspy_uv_new()
            if uv == NULL:
                raise FeatureUnavailable("libuv asyncio mode", _LIBUV_NEEDS)
        self.ctx = Context(protocols, _native=native, pt_serv_buf_size=self._read_size,
                           _uv_loop=uv, **ctx_options)
        bridge = ffi.new("struct lwspy_bridge *")
        fd = lib.lwspy_bridge_init(bridge, self.ctx._ctx, 0 if self.on_loop else 1)
        if fd < 0:
            self.ctx.close()
            raise OSError(ffi.errno, "no eventfd for the lws service thread")
        self._bridge = bridge
        self._bridge_addr = addr(bridge)
        self.ctx._cx.bridge = bridge  # before lws serves anything
        if self.on_loop:
            self._service_args = (addr(self.ctx._ctx), addr(self.ctx._pollset if native else uv))
            self.ctx._lws_thread.ident = threading.get_ident()  # lws lives on this loop
            if native:
                self._sync()
                self._epfd = watched = lib.lwspy_pollset_open(self.ctx._pollset)
            else:
                self._uv_fd = watched = lib.lwspy_uv_fd(uv)
            self.loop.add_reader(watched, self._service, 1)
            self._schedule_tick(0)
        else:
            self.loop.add_reader(fd, self._pull)
            self._thread = threading.Thread(target=self._run_thread, name="lws-service",
                                            daemon=True)
            self._thread.start()
        return self.ctx

    def _run_thread(self) -> None:
        assert self.ctx is not None
        try:
            self.ctx.run()
        except BaseException as exc:
            self._thread_error = exc
            logger.error("lws service thread stopped", exc_info=exc)

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn`` where lws lives (now in native mode, on the lws thread otherwise)."""
        assert self.ctx is not None
        if self.on_loop:
            fn(*args)
        else:
            self.ctx.call_soon_threadsafe(fn, *args)

    async def stop(self) -> None:
        ctx = self.ctx
        if ctx is None or ctx.closed or self._stopping:
            return
        self._stopping = True
        for ws in list(self.sockets.values()):
            if not ws.closed:
                with contextlib.suppress(ConnectionClosed, LwsError):
                    ws.connection.close(1001, "going away")
        self.kick()
        if self.sockets:
            waits = [asyncio.shield(ws._closed) for ws in self.sockets.values()]
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), self.close_timeout)
        if self.on_loop:
            if self._tick is not None:
                self._tick.cancel()
            # before close() closes it
            self.loop.remove_reader(self._epfd if self.mode == "native" else self._uv_fd)
            self._unwatch_direct(True)
            ctx._lws_thread.ident = None
            ctx.close(timeout=0.5)
            self._pull()
            lib.lwspy_bridge_free(self._bridge)  # the memory stays: the sockets point at it
        else:
            ctx.stop()
            thread = self._thread
            if thread is not None:
                # Poll rather than block the loop (or leave an executor thread behind).
                deadline = self.loop.time() + 10
                while thread.is_alive() and self.loop.time() < deadline:
                    await asyncio.sleep(0.005)
                if thread.is_alive():
                    raise LwsError("the lws service thread did not stop")
            ctx.close(timeout=0.5)
            bridge = self._bridge
            if bridge is not None:
                self._pull()
                self.loop.remove_reader(bridge.fd)
                lib.lwspy_bridge_free(bridge)  # the memory stays: the sockets point at it
        for ws in list(self.sockets.values()):
            ws._on_closed(ws.close_code if ws.close_code is not None else 1006,
                          ws.close_reason)
        self.sockets.clear()

    # -- native mode: the loop watches lws' sockets' epoll instance ----------

    def _sync(self) -> None:
        """Native mode: epoll watches what lws wants watched now (C noted it)."""
        ctx = self.ctx
        if ctx is None or ctx._pollset is None:
            return
        ps = ctx._pollset
        if ps.nchanged:
            lib.lwspy_pollset_apply(ctx._ctx, ps)
            if self._direct is not None and not ps.direct:
                self._unwatch_direct(False)
        if ps.failed:
            self._pollset_failed(ps)

    def _watch_direct(self, conn: Connection) -> None:
        """Native mode: the loop watches this WebSocket's input itself, if no
        other's is (one message in flight: no inner epoll on its way)."""
        ctx = self.ctx
        assert ctx is not None
        fd = lib.lwspy_pollset_direct(ctx._ctx, ctx._pollset, conn._wsi)
        if fd >= 0:
            try:
                self.loop.add_reader(fd, self._service, -fd - 1)
            except Exception as exc:  # only a shortcut: epoll keeps watching it
                lib.lwspy_pollset_direct(ctx._ctx, ctx._pollset, ffi.NULL)
                self.loop.call_exception_handler({
                    "message": "lws.asyncio: the loop could not watch a socket; lws' epoll "
                               "instance goes on watching it", "exception": exc})
                return
            self._direct, self._direct_fd = conn, fd

    def _unwatch_direct(self, tell_c: bool) -> None:
        """Native mode: the direct socket goes back to the epoll instance (C
        let go of it already unless ``tell_c``)."""
        if self._direct is None:
            return
        self.loop.remove_reader(self._direct_fd)
        self._direct, self._direct_fd = None, -1
        ctx = self.ctx
        if tell_c and ctx is not None and not ctx.closed:
            lib.lwspy_pollset_direct(ctx._ctx, ctx._pollset, ffi.NULL)

    def _pollset_failed(self, ps: Any) -> None:
        """C closed the connection of a socket it could not watch: tell the loop."""
        ps.failed = 0  # reported once per failure
        self.loop.call_exception_handler({"message": "lws service failed",
                                          "exception": LwsError(_POLLSET_FAILED)})

    def kick(self) -> None:
        """Output was queued from the loop: let lws write it soon, once for a batch.

        Native mode services lws from the loop's ready queue, behind the
        callbacks already there (after a batch, the handlers it woke); thread
        mode wakes the service thread then (sends meanwhile wait in C,
        lwspy_bridge_defer).
        """
        if self._kicked:
            return
        if self.on_loop:
            self._kicked = True
            self.loop.call_soon(self._service)
        elif self._bridge is not None:
            self._kicked = True
            lib.lwspy_bridge_defer(self._bridge)
            self.loop.call_soon(self._flush)

    def _uv_write_now(self, _ctx: int, _loop: int, _wsi: Any) -> int:
        # libuv mode's write_now: the whole service, now (every write comes
        # from libuv, see lwspy_uv_service); nothing is left for another
        self._service()
        return 2

    def _flush(self) -> None:
        self._kicked = False
        lib.lwspy_bridge_flush(self._bridge)

    def _service(self, poll: int = 0) -> None:
        """Native mode: service the sockets epoll reports ready (``poll`` 1: the
        loop found its fd readable; -(fd + 1): the direct socket is), then
        write what is queued (lwspy_native_service, in C). libuv mode: rounds
        of the uv loop, which do both (lwspy_uv_service)."""
        self._kicked = False
        ctx = self.ctx
        if ctx is None or ctx._closed:
            return
        try:
            # C applied lws' poll changes at the end; calls queued on the
            # context may make more (and raise what a handler left pending).
            more = self._service_fn(*self._service_args, poll)
            if ctx._calls or ctx._pending is not None:
                ctx._after_service()
                self._sync()
            if more > 0:
                if more & 2:  # messages came in
                    self._pull()
                if more & 1:  # lws holds buffered input still: next loop iteration
                    self.kick()
                if more & 4:
                    self._pollset_failed(ctx._pollset)
                if more & 8 and not ctx._pollset.direct:  # lws paused its input, or closed it
                    self._unwatch_direct(False)
        except BaseException as exc:
            self.loop.call_exception_handler({"message": "lws service failed",
                                              "exception": exc})

    # -- messages from lws ---------------------------------------------------

    def _pull(self) -> None:
        """Hand over the whole messages lws took in (the service thread's, or,
        in native mode, those of the service that just ran).

        Per message, in C (fast_bridge_deliver): a reader waiting on
        ``ws._getter`` gets it at once, else it joins ``ws._messages``.
        """
        got = fast_bridge_deliver(self._bridge_addr, self._by_id)
        if got is None:
            return
        # A batch of one message: its handler's first send writes at once
        # (native mode: lws_service_fd, POLLOUT, and no service after it when
        # that was all; thread mode: the service thread is woken for it then,
        # by the send itself).
        # Replying sooner is what one message in flight is waiting for;
        # bigger batches keep the single write round (one wake-up) after
        # their handlers, which costs less per message.
        self._solo, woke, bad = got
        for ws in bad:  # text that is not UTF-8 (lws validates it: not expected)
            ws._consumed()
            with contextlib.suppress(ConnectionClosed):
                ws.connection.close(1007, "invalid UTF-8")
        if bad or (woke and self._solo is None):
            # Queued after the handlers' wake-ups, so it runs right after them,
            # in the same loop iteration: their answers reach lws together
            # (thread mode: one wake-up of the service thread; native mode: the
            # service that writes them, with no loop iteration in between).
            # Anything else a handler asks of lws kicks a service itself.
            self.kick()

    def _schedule_tick(self, delay: float) -> None:
        if self._tick is not None:
            self._tick.cancel()
        self._tick = self.loop.call_later(delay, self._on_tick)

    def _on_tick(self) -> None:
        # Native mode: a whole lws_service() round, for lws' timers and any
        # socket the per-fd service missed. libuv mode: a round of the uv
        # loop, which runs lws' timers, then again when its next one is due.
        ctx = self.ctx
        if ctx is None or ctx.closed:
            return
        delay = _TICK
        if self.mode == "libuv":
            # lws looks at its timers on a socket event (lwspy_uv_rearm)
            lib.lws_cancel_service(ctx._ctx)
            self._service(1)
            due = lib.lwspy_uv_timeout(ctx._uv_loop) if not ctx.closed else -1
            if due >= 0:
                delay = min(delay, due / 1000)
        else:
            lib.lws_service(ctx._ctx, -1)
            self._service()
        if not ctx.closed:
            self._schedule_tick(delay)

    # -- events from lws (lws thread in thread mode, loop thread in native mode) --

    def _to_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        if self.on_loop:
            fn(*args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    def _deliver(self, conn: Connection, method: str, *args: Any) -> None:
        ws = self.sockets.get(conn)
        if ws is not None:
            self._to_loop(getattr(ws, method), *args)

    def _on_handshake(self, conn: Connection) -> None:
        self.pending_requests[conn] = Request(conn.path, conn.query, _known_headers(conn))

    def _on_open(self, proto: _AsyncProtocol, conn: Connection) -> None:
        ws = WebSocket(self, conn, self.max_queue, self.write_limit)
        ws.request = self.pending_requests.pop(conn, None)
        if proto._server:
            asked = ws.request.headers.get("sec-websocket-protocol") if ws.request else None
            ws.subprotocol = proto.name if asked else None
        else:
            ws.subprotocol = self.client_subprotocol
        self.sockets[conn] = ws
        if self._bridge is not None:
            # Where lws runs, before any message: from here on C hands
            # messages to the loop, and sends from other threads to lws.
            self._by_id[conn.id] = ws
            lib.lwspy_bridge_attach(self._bridge, conn._txq, conn._wsi, conn.id,
                                    min(self.max_queue, 0x7FFFFFFF))
            conn._bridged = True
            if self._epfd >= 0 and self._direct is None and len(self.sockets) == 1:
                # Only alone (a client, a server with one peer), where a lone
                # message in flight is likely: with many sockets epoll's
                # batches serve better, and churn would pay add_reader and
                # remove_reader per connection.
                self._watch_direct(conn)

        def drained() -> None:  # lws thread: wake a send() only if one waits
            if ws._drained is not None:
                self._to_loop(ws._on_drain)

        conn._drain_cb = drained
        self._to_loop(ws._start_keepalive)
        if self.on_open is not None:
            self._to_loop(self.on_open, ws)

    def _on_close(self, conn: Connection) -> None:
        self.pending_requests.pop(conn, None)
        if conn is self._direct:  # lws may still read the peer's close frame: back to epoll
            self._unwatch_direct(True)
        ws = self.sockets.pop(conn, None)
        if ws is None:
            return
        conn._drain_cb = None
        code = conn.close_code
        if code is None and conn._closing:
            code = 1000  # we closed and the peer answered
        self._to_loop(ws._on_closed, code if code is not None else 1006, conn.close_reason)

    def _on_connect_error(self, conn: Connection, message: str) -> None:
        if self.on_error is not None:
            self._to_loop(self.on_error, conn, message)


def _known_headers(conn: Connection) -> dict[str, str]:
    from ._headers import read_headers

    return read_headers(conn._wsi)


class Server:
    """A running :func:`serve`. ``async with`` it, or ``await server.close()``."""

    def __init__(self, runner: _Runner, handler: Handler) -> None:
        self._runner = runner
        self._handler = handler
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._closed = runner.loop.create_future()

    @property
    def mode(self) -> str:
        """``"native"`` or ``"libuv"`` (lws on the loop's thread) or ``"thread"``."""
        return self._runner.mode

    @property
    def port(self) -> int:
        assert self._runner.ctx is not None
        return self._runner.ctx.port

    @property
    def context(self) -> Context:
        assert self._runner.ctx is not None
        return self._runner.ctx

    @property
    def connections(self) -> list[WebSocket]:
        return list(self._runner.sockets.values())

    def _on_open(self, ws: WebSocket) -> None:
        task = self._runner.loop.create_task(self._run_handler(ws))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_handler(self, ws: WebSocket) -> None:
        try:
            await self._handler(ws)
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            await ws.close(1001, "going away")
            raise
        except Exception as exc:
            logger.error("exception in the connection handler for %r", ws, exc_info=exc)
            await ws.close(1011, "internal error")
            return
        await ws.close()

    async def close(self) -> None:
        """Close every connection with 1001, stop lws, wait for the handlers."""
        if self._closing:
            await asyncio.shield(self._closed)
            return
        self._closing = True
        try:
            await self._runner.stop()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            if not self._closed.done():
                self._closed.set_result(None)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    async def serve_forever(self) -> None:
        """Serve until cancelled (then close)."""
        try:
            await asyncio.shield(self._closed)
        finally:
            await self.close()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class serve:
    """Serve WebSockets (and, optionally, HTTP) on the native stack.

    ``handler(ws)`` runs for each connection; when it returns the connection
    closes with 1000 (1011 if it raised). ``subprotocols``: names to accept
    (a client asking for none gets the first). Pass-through options: ``tls``
    (:class:`lws.ServerTLS`), ``compression`` (``"deflate"`` or ``None``),
    ``mounts``, ``origins``, ``http`` (an extra :class:`lws.Protocol` with
    ``on_request`` for plain HTTP on the same port, it becomes protocols[0]).
    Limits: ``max_size`` (default 1 MiB; larger messages close with 1009),
    ``max_queue`` (received messages waiting for ``recv``), ``write_limit``
    (bytes queued before ``send`` waits). ``session``: a
    :class:`lws.Struct` for each connection's typed session data.
    ``ping_interval``/``ping_timeout``: keepalive pings (``None`` turns
    them off); no pong in time closes the connection with 1011.
    ``read_size`` (4096 to 1 MiB, default 16384; lws' own default is 4096):
    the most lws reads from a socket at a time (``pt_serv_buf_size`` and the
    protocols' ``rx_buffer_size``). Bigger takes fewer system calls for big
    messages; each connection's receive buffer is that big (its pages count
    in memory only once a burst that big has arrived on it).
    ``mode``: ``"auto"``, ``"native"``, ``"libuv"`` or ``"thread"``.
    """

    def __init__(self, handler: Handler, host: str | None = "127.0.0.1", port: int = 0, *,
                 subprotocols: Iterable[str] | None = None, tls: ServerTLS | None = None,
                 compression: str | None = None, mounts: Iterable[Mount] = (),
                 origins: Iterable[str] | None = None, http: Protocol | None = None,
                 max_size: int = 1 << 20, max_queue: int = 16, write_limit: int = 1 << 20,
                 close_timeout: float = 10.0, session: type[Struct] | None = None,
                 ping_interval: float | None = 20.0, ping_timeout: float | None = 20.0,
                 read_size: int = DEFAULT_READ_SIZE, mode: str = "auto") -> None:
        if compression not in (None, "deflate"):
            raise ValueError("compression must be 'deflate' or None")
        if max_queue < 1 or write_limit < 1 or max_size < 1:
            raise ValueError("max_size, max_queue and write_limit must be positive")
        self._handler = handler
        self._options: dict[str, Any] = dict(host=host, port=port, tls=tls, mounts=list(mounts),
                             permessage_deflate=compression == "deflate",
                             allowed_origins=origins)
        self._subprotocols = list(subprotocols or [])
        self._http = http
        self._limits = _Limits(max_size, max_queue, write_limit, close_timeout, session,
                               ping_interval, ping_timeout, _check_read_size(read_size))
        self._mode = mode
        self._server: Server | None = None

    async def _start(self) -> Server:
        runner = _Runner(asyncio.get_running_loop(), self._mode, self._limits)
        server = Server(runner, self._handler)
        runner.on_open = server._on_open
        names = self._subprotocols or ["lws-asyncio"]
        protocols: list[Protocol] = [runner.make_protocol(n, True) for n in names]
        options: dict[str, Any] = dict(self._options)
        if self._http is not None:
            # WebSocket clients asking for no subprotocol get protocols[0], so
            # plain HTTP reaches the http protocol through a mount instead.
            protocols.append(self._http)
            options["mounts"] = [*options["mounts"], Mount("/", protocol=self._http.name)]
        runner.start(protocols, **options)
        self._server = server
        return server

    def __await__(self) -> Generator[Any, None, Server]:
        return self._start().__await__()

    async def __aenter__(self) -> Server:
        return await self._start()

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            await self._server.close()


class connect:
    """Open a client connection: ``ws = await connect(uri)`` or ``async with connect(uri)``.

    ``subprotocols``: names to ask for (first one; lws asks for a single
    protocol). ``additional_headers``, ``origin``, ``tls``
    (:class:`lws.ClientTLS`), ``compression`` (``"deflate"``), ``max_size``,
    ``max_queue``, ``write_limit``, ``open_timeout``, ``session``,
    ``read_size`` as for :func:`serve`. Raises :class:`lws.ConnectError` when the connection
    cannot be made. Each connection runs its own lws context (closed with it).
    """

    def __init__(self, uri: str, *, subprotocols: Iterable[str] | None = None,
                 additional_headers: Mapping[str, str] | None = None,
                 origin: str | None = None, tls: ClientTLS | None = None,
                 compression: str | None = None, max_size: int = 1 << 20,
                 max_queue: int = 16, write_limit: int = 1 << 20, open_timeout: float = 10.0,
                 close_timeout: float = 10.0, session: type[Struct] | None = None,
                 ping_interval: float | None = 20.0, ping_timeout: float | None = 20.0,
                 read_size: int = DEFAULT_READ_SIZE, mode: str = "auto") -> None:
        parts = urllib.parse.urlsplit(uri)
        if parts.scheme not in ("ws", "wss"):
            raise ValueError(f"not a ws:// or wss:// URI: {uri!r}")
        if compression not in (None, "deflate"):
            raise ValueError("compression must be 'deflate' or None")
        self._uri = uri
        self._subprotocols = list(subprotocols or [])
        self._headers = dict(additional_headers or {})
        self._origin = origin
        self._ctx_options = dict(client_tls=tls, permessage_deflate=compression == "deflate")
        self._limits = _Limits(max_size, max_queue, write_limit, close_timeout, session,
                               ping_interval, ping_timeout, _check_read_size(read_size))
        self._open_timeout = open_timeout
        self._mode = mode
        self._ws: WebSocket | None = None

    async def _open(self) -> WebSocket:
        loop = asyncio.get_running_loop()
        runner = _Runner(loop, self._mode, self._limits)
        name = self._subprotocols[0] if self._subprotocols else "lws-asyncio"
        proto = runner.make_protocol(name, False)
        opened: asyncio.Future[WebSocket] = loop.create_future()

        def on_open(ws: WebSocket) -> None:
            if not opened.done():
                opened.set_result(ws)

        def on_error(conn: Connection, message: str) -> None:
            if not opened.done():
                opened.set_exception(ConnectError(f"connecting to {self._uri}: {message}"))

        runner.on_open = on_open
        runner.on_error = on_error
        runner.owned_by_socket = True
        runner.client_subprotocol = name if self._subprotocols else None
        ctx = runner.start([proto], **self._ctx_options)
        connect_kw: dict[str, Any] = dict(subprotocol=name if self._subprotocols else None,
                          headers=self._headers or None, origin=self._origin)
        try:
            if runner.on_loop:
                ctx.connect(self._uri, proto, **connect_kw)
                runner.kick()
            else:
                started: asyncio.Future[None] = loop.create_future()

                def start() -> None:
                    try:
                        ctx.connect(self._uri, proto, **connect_kw)
                    except BaseException as exc:
                        loop.call_soon_threadsafe(_settle, started, exc)
                    else:
                        loop.call_soon_threadsafe(_settle, started, None)

                ctx.call_soon_threadsafe(start)
                await started
            ws = await asyncio.wait_for(opened, self._open_timeout)
        except BaseException:
            await runner.stop()
            raise
        self._ws = ws
        return ws

    def __await__(self) -> Generator[Any, None, WebSocket]:
        return self._open().__await__()

    async def __aenter__(self) -> WebSocket:
        return await self._open()

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()


def _settle(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)
