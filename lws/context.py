"""The lws context: protocols, the listening vhost, the service loop, timers.

Threading rules (lws is single-threaded):

* lws runs on the thread inside :meth:`Context.run` or :meth:`Context.service`;
  every handler runs there.
* :meth:`Context.stop`, :meth:`Context.call_soon_threadsafe` and the
  connection calls documented as thread-safe may be used from any thread: they
  wake lws with ``lws_cancel_service()`` and do their work on its thread.
"""

from __future__ import annotations

import collections
import itertools
import logging
import select
import signal
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from . import _eventpipe, _log
from ._binding import addr, features, ffi, lib, require
from ._guard import Guard, LwsThread
from .connection import DEFAULT, NULL, Connection, HeaderWriter, Refuse
from .errors import ConnectError, ContextError, LwsError
from .http import Mount
from .protocol import NO_CONNECTION_REASONS, Protocol
from .reasons import BOOKKEEPING, IN_KIND, InKind, Reason
from .session import assign
from .tls import ClientTLS, ServerTLS
from .vhost import (
    DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_MAX_HEADER_SIZE,
    DEFAULT_TIMEOUT_SECS,
    Vhost,
)

__all__ = ["Context", "TimerHandle"]

logger = logging.getLogger("lws")

# The reasons the binding always needs, in the C filter's table.
for _r in BOOKKEEPING | {Reason.CLIENT_APPEND_HANDSHAKE_HEADER}:
    lib.lwspy_always[int(_r)] = 1

_NO_CONN = frozenset(int(r) for r in NO_CONNECTION_REASONS)
_CLIENT_REASONS = frozenset(int(r) for r in (
    Reason.CLIENT_HTTP_BIND_PROTOCOL, Reason.CLIENT_CONNECTION_ERROR, Reason.CONNECTING,
    Reason.CLIENT_APPEND_HANDSHAKE_HEADER, Reason.ESTABLISHED_CLIENT_HTTP,
    Reason.CLIENT_FILTER_PRE_ESTABLISH, Reason.CLIENT_ESTABLISHED, Reason.CLIENT_WRITEABLE,
    Reason.CLIENT_RECEIVE, Reason.CLIENT_CLOSED, Reason.WS_CLIENT_BIND_PROTOCOL,
    Reason.WS_CLIENT_DROP_PROTOCOL, Reason.CLIENT_HTTP_DROP_PROTOCOL,
))
_FILTERS = frozenset(int(r) for r in (Reason.FILTER_PROTOCOL_CONNECTION,
                                      Reason.FILTER_HTTP_CONNECTION,
                                      Reason.FILTER_NETWORK_CONNECTION))
_WAIT_CANCELLED = int(Reason.EVENT_WAIT_CANCELLED)
_RECEIVE = int(Reason.RECEIVE)
_CLIENT_RECEIVE = int(Reason.CLIENT_RECEIVE)
_CLOSE_TIMEOUT = 2.0


@ffi.def_extern()  # type: ignore[untyped-decorator]
def _lwspy_callback(ctx_handle: Any, proto_index: int, wsi: Any, reason: int, user: int,
                    in_: Any, len_: int, rx_flags: int) -> int:
    try:
        ctx: Context = ffi.from_handle(ctx_handle)
        return ctx._dispatch(proto_index, wsi, reason, user, in_, len_, rx_flags)
    except BaseException as exc:
        try:
            logger.critical("lws binding: internal error in callback", exc_info=exc)
        finally:
            return -1  # noqa: B012


@ffi.def_extern()  # type: ignore[untyped-decorator]
def _lwspy_timer(ctx_handle: Any, timer_id: int) -> None:
    try:
        ctx: Context = ffi.from_handle(ctx_handle)
        ctx._fire_timer(timer_id)
    except BaseException as exc:
        try:
            logger.critical("lws binding: internal error in timer", exc_info=exc)
        finally:
            return  # noqa: B012


class _SignalWake:
    """While run() is in C on the main thread, a signal wakes it (see binding.c).

    Python runs signal handlers (Ctrl-C's KeyboardInterrupt) only between
    bytecodes, so the C loop must come back to Python when one arrives.
    Elsewhere it does nothing: Python handles signals on the main thread only.
    """

    __slots__ = ("_ctx", "_previous", "_w", "_wfd")

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._w: Any = None
        self._wfd = -1
        self._previous = -1

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        w = ffi.new("struct lwspy_sigwake *")
        wfd = lib.lwspy_sigwake_start(w, self._ctx._ctx, self._ctx._attention)
        if wfd < 0:
            logger.warning("lws binding: no signal wake-up pipe; Ctrl-C waits for lws")
            return
        try:
            self._previous = signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        except (ValueError, OSError):
            lib.lwspy_sigwake_stop(w, wfd)
            return
        w.fwd = self._previous
        self._w, self._wfd = w, wfd

    def __exit__(self, *exc: object) -> None:
        if self._w is None:
            return
        try:
            signal.set_wakeup_fd(self._previous)
        finally:
            lib.lwspy_sigwake_stop(self._w, self._wfd)
            self._w = None


class TimerHandle:
    """A scheduled :meth:`Context.call_later`; :meth:`cancel` it before it fires."""

    __slots__ = ("_ctx", "_id", "cancelled")

    def __init__(self, ctx: Context, timer_id: int) -> None:
        self._ctx = ctx
        self._id = timer_id
        self.cancelled = False

    def cancel(self) -> None:
        """Cancel the call (thread-safe); harmless if it already ran."""
        if not self.cancelled:
            self.cancelled = True
            self._ctx._cancel_timer(self._id)


class Context:
    """An lws context with one listening (or client-only) vhost.

    ``protocols``: :class:`Protocol` instances; the first is ``protocols[0]``,
    which lws also uses for plain HTTP. ``port``: ``None`` for a client-only
    context, ``0`` for an ephemeral port (read it back from :attr:`port`).
    ``host``: address or interface to listen on (``None``: all).
    ``state``: context-wide user data (C's ``info.user``), free for the
    application. ``close_on_error``: an exception in a handler closes that
    connection (default) or is only logged.

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        protocols: Iterable[Protocol],
        *,
        port: int | None = None,
        host: str | None = None,
        state: Any = None,
        close_on_error: bool = True,
        mounts: Sequence[Mount] = (),
        tls: ServerTLS | None = None,
        client_tls: ClientTLS | None = None,
        permessage_deflate: bool = False,
        allowed_origins: Iterable[str] | None = None,
        security_headers: bool = False,
        validate_utf8: bool = True,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
        timeout_secs: int = DEFAULT_TIMEOUT_SECS,
        keepalive_timeout: int = DEFAULT_KEEPALIVE_TIMEOUT,
        pt_serv_buf_size: int = 0,
        _native: bool = False,
        _uv_loop: Any = None,
    ) -> None:
        self._ctx: Any = NULL
        self._event_pipe = -1
        # lws.asyncio's libuv mode: lws runs on this uv loop (lwspy_uv_new),
        # which the asyncio loop drives; the context owns it from here on.
        self._uv_loop: Any = _uv_loop
        # lws.asyncio's native mode: C keeps the sockets lws wants watched
        # (ADD/DEL/CHANGE_MODE_POLL_FD) in this pollset's epoll instance,
        # the one fd the loop watches.
        self._pollset: Any = None
        if _native:
            self._pollset = ffi.new("struct lwspy_pollset *")
            if lib.lwspy_pollset_open(self._pollset) < 0:
                raise OSError(ffi.errno, "no epoll instance for lws' sockets")
        self._closed = True
        self.state: Any = state
        self.close_on_error = close_on_error
        self._protocols: list[Protocol] = []
        self._vhosts: dict[str, Vhost] = {}
        self._lws_thread = LwsThread()
        self._conns: dict[Any, Connection] = {}
        self._conn_ids = itertools.count(1)
        self._calls: collections.deque[tuple[Callable[..., Any], tuple[Any, ...]]] = \
            collections.deque()
        self._stop = False
        # Set (from any thread) when run()'s C loop must come back to Python:
        # stop(), a call_soon_threadsafe() call, a pending exception.
        self._attention: Any = ffi.new("int *")
        self._pending: BaseException | None = None
        self._running = threading.Lock()
        self._timers: dict[int, tuple[Any, Callable[..., Any] | None, tuple[Any, ...]]] = {}
        self._timer_ids = itertools.count(1)
        self._connecting: Connection | None = None
        self._client_buffers: dict[int, Any] = {}
        self._wake: Any = None
        self._handle = ffi.new_handle(self)
        self._cx = ffi.new("struct lwspy_ctx *")  # the lws context's user pointer
        self._cx.handle = self._handle
        if self._pollset is not None:
            self._cx.pollset = self._pollset
        if _uv_loop is not None:
            self._cx.uv_loop = _uv_loop

        info = ffi.new("struct lws_context_creation_info *")
        lib.lwspy_info_init(info)
        info.port = lib.CONTEXT_PORT_NO_LISTEN
        # Client Origin headers are sent as given (lws would prefix "http://").
        info.options = (lib.LWS_SERVER_OPTION_EXPLICIT_VHOSTS
                        | lib.LWS_SERVER_OPTION_JUST_USE_RAW_ORIGIN)
        if features["tls"]:
            info.options |= lib.LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT
        if validate_utf8:
            info.options |= lib.LWS_SERVER_OPTION_VALIDATE_UTF8
        info.user = self._cx
        if _uv_loop is not None:
            info.options |= lib.LWS_SERVER_OPTION_LIBUV
            self._foreign_loops = ffi.new("void *[1]", [_uv_loop])
            info.foreign_loops = self._foreign_loops
        # lws reads and sends at most this much per socket event (0: 4096).
        info.pt_serv_buf_size = pt_serv_buf_size
        self._io_size = pt_serv_buf_size or 4096
        with _log.capture() as lines:
            self._ctx = lib.lws_create_context(info)
        if self._ctx == NULL:
            self._release()
            raise ContextError("lws_create_context() failed", lines)
        self._closed = False
        self._event_pipe = _eventpipe.find(self._ctx)  # closed after the destroy if lws leaks it
        try:
            self._default = self.add_vhost(
                "default", protocols, port=port, host=host, mounts=mounts, tls=tls,
                client_tls=client_tls, permessage_deflate=permessage_deflate,
                allowed_origins=allowed_origins, security_headers=security_headers,
                validate_utf8=validate_utf8, max_header_size=max_header_size,
                timeout_secs=timeout_secs, keepalive_timeout=keepalive_timeout,
                pt_serv_buf_size=pt_serv_buf_size)
        except BaseException:
            self._destroy_context()
            raise

    def add_vhost(self, name: str, protocols: Iterable[Protocol], **options: Any) -> Vhost:
        """Add a vhost (its own port, protocols, mounts, TLS, limits); see :class:`Vhost`.

        Call it from the thread that runs lws, or while lws is not running.
        """
        self._check_open()
        if name in self._vhosts:
            raise ValueError(f"there is already a vhost named {name!r}")
        first_new = len(self._protocols)
        try:
            vhost = Vhost(self, name, protocols, **options)
        except BaseException:
            for p in self._protocols[first_new:]:
                p._context = None
                p._vhost = None
            del self._protocols[first_new:]
            raise
        self._vhosts[name] = vhost
        return vhost

    def _register_protocol(self, proto: Protocol, vhost: Vhost) -> int:
        index = len(self._protocols)
        self._protocols.append(proto)
        proto._context = self
        proto._vhost = vhost
        proto._index = index
        proto._live = {}
        return index

    def _lws_owner(self) -> _LwsOwner:
        return _LwsOwner(self)

    # -- small helpers ------------------------------------------------------

    def _next_conn_id(self) -> int:
        return next(self._conn_ids)

    def _on_lws_thread(self) -> bool:
        return threading.get_ident() == self._lws_thread.ident

    def _check_open(self) -> None:
        if self._closed:
            raise LwsError("the Context is closed")

    # -- public properties ---------------------------------------------------

    @property
    def port(self) -> int:
        """The port the default vhost listens on (the real one when created with port 0)."""
        return self._default.port

    @property
    def vhost(self) -> Vhost:
        """The default vhost (made from the Context's own arguments)."""
        return self._default

    @property
    def vhosts(self) -> dict[str, Vhost]:
        """Every vhost by name."""
        return dict(self._vhosts)

    @property
    def protocols(self) -> list[Protocol]:
        """Every protocol instance of every vhost."""
        return list(self._protocols)

    @property
    def closed(self) -> bool:
        return self._closed

    def connections(self) -> list[Connection]:
        """Every connection lws has now (WebSocket, HTTP, pending clients)."""
        return list(self._conns.values())

    # -- callbacks (lws thread) ---------------------------------------------

    def _dispatch(self, pi: int, wsi: Any, reason: int, user: int, in_: Any, len_: int,
                  rx_flags: int = 0) -> int:
        proto = self._protocols[pi] if pi >= 0 else None
        if reason in _NO_CONN:
            if proto is None:
                return DEFAULT
            result = self._call_handlers(proto, None, reason, in_, len_)
            if reason == _WAIT_CANCELLED:
                # lws 4.1 crashes in lws_context_destroy() after a nonzero here.
                return 0
            return result
        conn = self._conns.get(wsi)
        if conn is None:
            conn = self._adopt(wsi, proto, reason)
        elif (reason == _RECEIVE or reason == _CLIENT_RECEIVE) and proto is not None:
            return conn._receive(proto, reason, user, in_, len_, rx_flags)  # the hot path
        return conn._callback(proto, reason, user, in_, len_, rx_flags)

    def _adopt(self, wsi: Any, proto: Protocol | None, reason: int) -> Connection:
        """First callback for a wsi: make (or find the pending client) Connection."""
        conn = None
        key = addr(wsi)  # the wsi's address: also what fast_send takes
        opaque = lib.lws_get_opaque_user_data(wsi)
        connecting = self._connecting
        if connecting is not None and (opaque == connecting._txq or
                                       reason in _CLIENT_REASONS):
            conn = connecting
        if conn is not None:
            conn._wsi = wsi
            conn._key = key
        else:
            conn = Connection(self, wsi, key, proto, reason in _CLIENT_REASONS)
        # How the C trampoline finds the connection's send queue.
        lib.lws_set_opaque_user_data(wsi, conn._txq)
        self._conns[wsi] = conn
        return conn

    def _forget(self, conn: Connection) -> None:
        self._conns.pop(conn._wsi, None)

    def _call_handlers(self, proto: Protocol | None, conn: Connection | None, reason: int,
                       in_: Any, len_: int) -> int:
        """Run the protocol's handler(s) for ``reason``; map the result for lws."""
        if proto is None:
            return DEFAULT
        entry = proto._handlers.get(reason)
        raw = reason in proto._raw_wanted
        if entry is None and not raw:
            return DEFAULT
        value: Any = None
        writer: HeaderWriter | None = None
        try:
            kind = entry[1] if entry is not None else _in_kind(reason)
            if kind is not InKind.NONE:
                value = self._convert_in(kind, conn, reason, in_, len_)
                if isinstance(value, HeaderWriter):
                    writer = value
            result: Any = None
            if entry is not None:
                fn, kind, no_conn = entry
                if no_conn:
                    result = fn(proto) if kind is InKind.NONE else fn(proto, value)
                elif kind is InKind.NONE:
                    result = fn(proto, conn)
                else:
                    result = fn(proto, conn, value)
            if raw:
                # The raw callback sees every reason it wants, after the Pythonic
                # handler; the handler's result wins when it gave one.
                session = conn._callback_session() if conn is not None else None
                raw_result = proto.callback(  # type: ignore[attr-defined]
                    conn, Reason(reason), session, value)
                if result is None:
                    result = raw_result
        except Refuse as refusal:
            return self._refuse(conn, refusal)
        except Exception as exc:
            return self._handler_failed(proto, conn, reason, exc)
        except BaseException as exc:
            self._pending = exc
            self.stop()
            return 0 if conn is None else -1
        finally:
            if writer is not None:
                writer._close()
        if result is None:
            return DEFAULT
        if isinstance(result, bool) or not isinstance(result, int):
            return self._handler_failed(proto, conn, reason, TypeError(
                f"handlers return None or an int for lws, not {type(result).__name__}"))
        return result

    def _handler_interrupted(self, exc: BaseException) -> int:
        """A BaseException (KeyboardInterrupt...) in a handler: stop run() and re-raise there."""
        self._pending = exc
        self.stop()
        return -1

    def _handler_failed(self, proto: Protocol, conn: Connection | None, reason: int,
                        exc: Exception) -> int:
        where = f"{type(proto).__name__} handling {Reason(reason).name}"
        logger.error("exception in %s for %r", where, conn, exc_info=exc)
        if conn is None:
            return 0  # vhost-wide reasons: a failure must not stop lws itself
        if not self.close_on_error:
            return DEFAULT
        if conn._established and not conn._closing:
            return conn._close_now(1011, "server error" if not conn.is_client else "client error")
        return -1

    def _refuse(self, conn: Connection | None, refusal: Refuse) -> int:
        if conn is not None and refusal.status:
            body = ffi.new("char[]", refusal.body.encode()) if refusal.body else NULL
            lib.lws_return_http_status(conn._wsi, refusal.status, body)
        return -1

    def _convert_in(self, kind: InKind, conn: Connection | None, reason: int, in_: Any,
                    len_: int) -> Any:
        if kind is InKind.BYTES:
            return ffi.buffer(in_, len_)[:] if in_ != NULL else b""
        if kind is InKind.STR:
            return ffi.buffer(in_, len_)[:].decode("utf-8", "replace") if in_ != NULL else ""
        if kind is InKind.CSTR:
            return ffi.string(ffi.cast("char *", in_)).decode("utf-8", "replace") \
                if in_ != NULL else ""
        if kind is InKind.FD:
            return int(ffi.cast("intptr_t", in_))
        if kind is InKind.HEADERS and conn is not None:
            if reason == int(Reason.ADD_HEADERS):
                args = ffi.cast("struct lws_process_html_args *", in_)
                pp = ffi.cast("unsigned char **", ffi.addressof(args, "p"))
                return HeaderWriter(conn, pp, pp[0] + args.max_len)
            pp = ffi.cast("unsigned char **", in_)
            return HeaderWriter(conn, pp, pp[0] + len_)
        return None

    # -- the service loop ----------------------------------------------------

    def run(self) -> None:
        """Serve until :meth:`stop` (from a handler or any thread).

        A ``BaseException`` raised in a handler (``KeyboardInterrupt``...)
        stops the loop and is re-raised here.
        """
        self._check_open()
        if self._uv_loop is not None:
            raise LwsError("this Context runs on lws.asyncio's uv loop: the asyncio loop "
                           "serves it")
        with self._owning():
            try:
                attention = self._attention
                with _SignalWake(self):
                    while not self._stop:
                        # lws_service() rounds run in C until something needs
                        # Python here; reset first, then look, so no wake-up is
                        # missed.
                        attention[0] = 0
                        if self._calls or self._pending is not None:
                            self._after_service()
                            continue
                        if lib.lwspy_run(self._ctx, attention) < 0:
                            break
                        self._after_service()
            finally:
                self._stop = False  # a stop() before run() started still counts

    def service(self, timeout: float | None = None) -> None:
        """Run one round of lws' service loop, for a loop of your own.

        ``timeout``: ``None`` waits for the next event; ``0`` does not wait;
        a positive value waits at most that many seconds (bounded with an lws
        timer, since lws 4.1 ignores a positive poll timeout).
        """
        self._check_open()
        with self._owning():
            if self._uv_loop is not None:
                self._uv_service(timeout)
            elif timeout is not None and timeout <= 0:
                lib.lws_service(self._ctx, -1)
            elif timeout is None:
                lib.lws_service(self._ctx, 0)
            else:
                if self._wake is None:
                    self._wake = ffi.new("struct lwspy_timer *")
                lib.lwspy_wake_schedule(self._ctx, self._wake, int(timeout * 1_000_000))
                try:
                    lib.lws_service(self._ctx, 0)
                finally:
                    lib.lwspy_timer_cancel(self._ctx, self._wake)
            self._after_service()

    def _uv_service(self, timeout: float | None) -> None:
        # lws_service() would run the uv loop until it has no handles left:
        # wait for its epoll instance (or its next timer), then serve it.
        uv = self._uv_loop
        due = lib.lwspy_uv_timeout(uv)
        wait = -1 if timeout is None else max(0, int(timeout * 1000))
        if due >= 0 and (wait < 0 or due < wait):
            wait = due
        if wait:
            poller = select.poll()
            poller.register(lib.lwspy_uv_fd(uv), select.POLLIN)
            poller.poll(wait)
        lib.lwspy_uv_service(self._ctx, uv, 1)

    def _owning(self) -> _Owning:
        return _Owning(self)

    def _after_service(self) -> None:
        calls = self._calls
        while calls:
            fn, args = calls.popleft()
            try:
                fn(*args)
            except Exception as exc:
                logger.error("exception in a call_soon_threadsafe callback", exc_info=exc)
        pending = self._pending
        if pending is not None:
            self._pending = None
            raise pending

    def stop(self) -> None:
        """Make :meth:`run` return after the current round. Thread-safe."""
        self._stop = True
        self._interrupt()

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the lws thread soon. Safe from any thread."""
        self._calls.append((fn, args))
        self._interrupt()

    def _interrupt(self) -> None:
        """Bring run()'s C loop (or a waiting service()) back to Python; any thread."""
        self._attention[0] = 1
        if not self._closed:
            lib.lws_cancel_service(self._ctx)

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run ``fn(*args)`` on the lws thread after ``delay`` seconds (an lws timer)."""
        self._check_open()
        timer_id = next(self._timer_ids)
        handle = TimerHandle(self, timer_id)
        t = ffi.new("struct lwspy_timer *")
        t.ctx_handle = self._handle
        t.id = timer_id
        self._timers[timer_id] = (t, fn, args)
        us = max(0, int(delay * 1_000_000))
        if self._on_lws_thread() or self._lws_thread.ident is None:
            lib.lwspy_timer_schedule(self._ctx, t, us)
        else:
            self.call_soon_threadsafe(self._schedule_timer, timer_id, us)
        return handle

    def _schedule_timer(self, timer_id: int, us: int) -> None:
        entry = self._timers.get(timer_id)
        if entry is not None:
            lib.lwspy_timer_schedule(self._ctx, entry[0], us)

    def _cancel_timer(self, timer_id: int) -> None:
        if self._on_lws_thread() or self._lws_thread.ident is None:
            entry = self._timers.pop(timer_id, None)
            if entry is not None and not self._closed:
                lib.lwspy_timer_cancel(self._ctx, entry[0])
        else:
            self.call_soon_threadsafe(self._cancel_timer, timer_id)

    def _fire_timer(self, timer_id: int) -> None:
        entry = self._timers.pop(timer_id, None)
        if entry is None:
            return
        _, fn, args = entry
        try:
            if fn is not None:
                fn(*args)
        except Exception as exc:
            logger.error("exception in a call_later callback", exc_info=exc)
        except BaseException as exc:
            self._pending = exc
            self.stop()

    def _request_writeable_all(self, proto: Protocol) -> None:
        if self._on_lws_thread():
            lib.lws_callback_on_writable_all_protocol(self._ctx, proto._lws_entry)
        else:
            self.call_soon_threadsafe(self._request_writeable_all, proto)

    # -- clients -------------------------------------------------------------

    def connect(
        self,
        url: str,
        protocol: Protocol | str | None = None,
        *,
        subprotocol: str | None = "",
        origin: str | None = None,
        host: str | None = None,
        headers: Mapping[str, str] | None = None,
        session: Mapping[str, Any] | None = None,
        vhost: str | None = None,
        verify_hostname: bool | None = None,
        allow_self_signed: bool | None = None,
        method: str | None = None,
    ) -> Connection:
        """Start a WebSocket client connection to ``url`` (``ws://`` or ``wss://``).

        ``protocol``: the local protocol (instance or name) whose handlers run
        the connection (default: the first). ``subprotocol``: the
        ``Sec-WebSocket-Protocol`` to ask for (default: the protocol's name;
        ``None`` asks for none). ``headers``: extra handshake headers.
        ``session``: initial values for the session data; the binding then
        owns the session buffer (lws' ``userdata``) and frees it after
        ``WSI_DESTROY``.

        ``http://`` and ``https://`` URLs make a plain HTTP client connection
        instead (``method``, default GET): the protocol's client HTTP handlers
        (``on_established_client_http``, ``on_receive_client_http_read``,
        ``on_completed_client_http``...) run it; :func:`lws.fetch` wraps that.

        ``vhost``: the vhost whose client TLS settings and extensions to use
        (default: the context's own). For ``wss://``, ``verify_hostname`` and
        ``allow_self_signed`` override that vhost's :class:`lws.ClientTLS`
        (hostname verification is on unless turned off explicitly).

        Returns the connection at once; ``on_client_established`` or
        ``on_client_connection_error`` follows. Raises :class:`lws.ConnectError`
        if lws refuses to even start (its message included), which it may
        report re-entrantly through ``on_client_connection_error`` first.
        Call on the lws thread, or before/between service rounds.
        """
        self._check_open()
        if self._lws_thread.ident is not None and not self._on_lws_thread():
            raise LwsError("connect() belongs on the lws thread: use call_soon_threadsafe")
        via = self._default if vhost is None else self._vhosts.get(vhost)
        if via is None:
            raise ValueError(f"no vhost named {vhost!r}")
        proto = self._find_protocol(protocol)
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
            raise ValueError(f"not a ws://, wss://, http:// or https:// URL: {url!r}")
        secure = parts.scheme in ("wss", "https")
        is_http = parts.scheme in ("http", "https")
        if method is not None and not is_http:
            raise ValueError("method= is for http:// and https:// URLs")
        if is_http:
            method = (method or "GET").upper()
            if method not in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"):
                raise ValueError(f"unsupported HTTP method {method!r}")
            subprotocol = None
        if secure:
            require("tls")
        try:
            port = parts.port or (443 if secure else 80)
        except ValueError as exc:
            raise ValueError(f"bad port in {url!r}") from exc
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if subprotocol == "":
            subprotocol = proto.name
        for name, value in (headers or {}).items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError("headers must map str to str")

        if proto._vhost is not via:
            raise ValueError(f"protocol {proto.name!r} belongs to vhost {proto.vhost.name!r}")
        conn = Connection(self, NULL, 0, proto, True)
        conn._connect_headers = dict(headers) if headers else None
        ci = ffi.new("struct lws_client_connect_info *")
        ci.context = self._ctx
        ci.vhost = via._vhost
        ci.address = keep_addr = ffi.new("char[]", parts.hostname.encode("idna"))
        ci.port = port
        ci.ssl_connection = _tls_flags(secure, via.client_tls, verify_hostname,
                                       allow_self_signed)
        ci.path = keep_path = ffi.new("char[]", path.encode())
        hosthdr = host or parts.netloc.rsplit("@", 1)[-1]
        ci.host = keep_host = ffi.new("char[]", hosthdr.encode())
        keep_origin = ffi.new("char[]", origin.encode()) if origin else NULL
        ci.origin = keep_origin
        keep_proto = ffi.new("char[]", subprotocol.encode()) if subprotocol else NULL
        ci.protocol = keep_proto
        keep_local = ffi.new("char[]", proto.name.encode())
        ci.local_protocol_name = keep_local
        ci.ietf_version_or_minus_one = -1
        keep_method = ffi.new("char[]", method.encode()) if method else NULL
        ci.method = keep_method
        ci.opaque_user_data = conn._txq
        if session is not None:
            conn._external = self._client_session(conn, proto, session)
            ci.userdata = ffi.cast("void *", conn._external.address)
        pwsi = ffi.new("struct lws **")
        ci.pwsi = pwsi
        keep = (keep_addr, keep_path, keep_host, keep_origin, keep_proto, keep_local,
                keep_method)
        self._connecting = conn
        outer = self._lws_thread.ident
        self._lws_thread.ident = threading.get_ident()
        try:
            # lws says why a connect failed at notice/info level: collect those too.
            with _log.capture(_log.REASONS) as lines:
                wsi = lib.lws_client_connect_via_info(ci)
        finally:
            self._lws_thread.ident = outer
            self._connecting = None
            del keep
        if wsi == NULL:
            # lws may have bound (and freed) a session buffer with no DROP or
            # WSI_DESTROY callback: end everything the connection had.
            if not conn._destroyed:
                conn._destroy("the connection could not be started")
            detail = "; ".join(line for line in lines if "fail" in line.lower())
            message = conn.error or "lws could not start the connection"
            if detail and detail not in message:
                message += f" ({detail})"
            raise ConnectError(f"connecting to {url}: {message}")
        if conn._wsi == NULL:
            conn._wsi = wsi
            conn._key = addr(wsi)
            self._conns[wsi] = conn
        return conn

    def _find_protocol(self, protocol: Protocol | str | None) -> Protocol:
        if protocol is None:
            return self._protocols[0]
        for p in self._protocols:
            if p is protocol or p.name == protocol:
                return p
        raise ValueError(f"{protocol!r} is not one of this context's protocols")

    def _client_session(self, conn: Connection, proto: Protocol,
                        values: Mapping[str, Any]) -> Any:
        st = proto.session
        if st is None:
            raise ValueError(f"protocol {proto.name!r} declares no session data")
        buf = ffi.new("char[]", st.size)
        view = st.view(addr(buf), Guard(self._lws_thread, conn))
        # Freed (dropped) only after the connection's final callback.
        self._client_buffers[conn.id] = buf
        assign(view, values)  # all values checked before anything is written
        return view

    # -- closing -------------------------------------------------------------

    def close(self, timeout: float = _CLOSE_TIMEOUT) -> None:
        """Close every connection (1001 to WebSockets), then destroy the lws context.

        Waits at most ``timeout`` seconds for peers to answer the close, runs
        the final callbacks, destroys the context and releases every handle.
        Closing twice is harmless. If :meth:`run` is active on another thread
        it is stopped first.
        """
        if self._closed:
            return
        if self._lws_thread.ident is not None and not self._on_lws_thread():
            self.stop()
            if not self._running.acquire(timeout=max(timeout, 1.0)):
                raise LwsError("run() did not stop in time; close() from its thread instead")
            self._running.release()
        if self._on_lws_thread():
            # Called from a handler: finish after this round instead.
            self.call_soon_threadsafe(self.close, timeout)
            self.stop()
            return
        for conn in list(self._conns.values()):
            if conn._established and not conn._closing:
                try:
                    conn.close(1001, "going away")
                except Exception:
                    pass
        deadline = time.monotonic() + timeout
        try:
            while any(c._established for c in self._conns.values()) and \
                    time.monotonic() < deadline:
                self.service(min(0.05, max(0.0, deadline - time.monotonic())))
        except BaseException:
            self._destroy_context()
            raise
        self._destroy_context()

    def _destroy_context(self) -> None:
        if self._ctx != NULL:
            self._lws_thread.ident = threading.get_ident()
            try:
                if self._uv_loop is not None:
                    # the context, then its uv loop (lws needs the loop to close)
                    uv, self._uv_loop = self._uv_loop, None
                    if lib.lwspy_uv_free(self._ctx, uv):
                        logger.warning("lws left uv handles open: its uv loop is leaked")
                else:
                    lib.lws_context_destroy(self._ctx)
            finally:
                self._lws_thread.ident = None
                _eventpipe.close_leftover(self._event_pipe)
                self._event_pipe = -1
                lib.lwspy_pool_drop()
        self._ctx = NULL
        self._closed = True
        for conn in list(self._conns.values()):
            conn._destroy()
        self._release()

    def _release(self) -> None:
        if self._uv_loop is not None:  # lws_create_context() failed
            lib.lwspy_uv_free(NULL, self._uv_loop)
            self._uv_loop = None
        if self._pollset is not None:
            lib.lwspy_pollset_free(self._pollset)  # lws is gone: no more POLL_FD reasons
        for p in self._protocols:
            p._context = None
            p._vhost = None
            p._live = {}
        self._timers.clear()
        self._calls.clear()
        self._client_buffers.clear()
        for vhost in self._vhosts.values():
            vhost._keep = []
        self._wake = None
        self._conns.clear()

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        status = "closed" if self._closed else f"port {self.port}"
        return f"<lws.Context {status} protocols={[p.name for p in self._protocols]}>"


class _LwsOwner:
    """Lets this thread call lws for a moment: only when it runs lws or nobody does."""

    __slots__ = ("_ctx", "_outer")

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def __enter__(self) -> None:
        ctx = self._ctx
        self._outer = ctx._lws_thread.ident
        if self._outer is not None and self._outer != threading.get_ident():
            raise LwsError("lws is running on another thread: do this from a handler or "
                           "through call_soon_threadsafe")
        ctx._lws_thread.ident = threading.get_ident()

    def __exit__(self, *exc: object) -> None:
        self._ctx._lws_thread.ident = self._outer


class _Owning:
    """Marks the calling thread as the one running lws, for the guards."""

    __slots__ = ("_ctx", "_outer")

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def __enter__(self) -> None:
        ctx = self._ctx
        me = threading.get_ident()
        if ctx._lws_thread.ident == me:
            raise LwsError("run()/service() may not be called from a handler")
        if not ctx._running.acquire(blocking=False):
            raise LwsError("lws is already running on another thread")
        ctx._lws_thread.ident = me

    def __exit__(self, *exc: object) -> None:
        self._ctx._lws_thread.ident = None
        self._ctx._running.release()


def _in_kind(reason: int) -> InKind:
    try:
        return IN_KIND.get(Reason(reason), InKind.NONE)
    except ValueError:
        return InKind.NONE


def _tls_flags(secure: bool, tls: ClientTLS | None, verify_hostname: bool | None,
               allow_self_signed: bool | None) -> int:
    """lws' LCCSCF_* bits for one client connection."""
    if not secure:
        return 0
    if verify_hostname is None:
        verify_hostname = tls.verify_hostname if tls is not None else True
    if allow_self_signed is None:
        allow_self_signed = tls.allow_self_signed if tls is not None else False
    flags = int(lib.LCCSCF_USE_SSL)
    if not verify_hostname:
        flags |= lib.LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK
    if allow_self_signed:
        flags |= lib.LCCSCF_ALLOW_SELFSIGNED
    return flags
