"""Connections: one per lws ``struct lws *`` (wsi), from its creation to ``WSI_DESTROY``.

Also where the binding follows lws' session-buffer lifetime (see
docs/lifetimes.md): a view made in ``*_BIND_PROTOCOL`` or later in that
binding lives until the matching ``*_DROP_PROTOCOL`` returns; a view handed to
a callback outside such a bracket lives until that callback returns.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._binding import addr, fast_send, fast_set_deliver, ffi, lib
from ._guard import Guard
from .errors import ConnectionClosed, LwsError, SendQueueFull, SessionClosed
from .http import SERVER_REASONS as HTTP_SERVER_REASONS
from .http import serve as http_serve
from .reasons import BIND_REASONS, DROP_REASONS, NOT_SESSION, Reason

if TYPE_CHECKING:
    from .context import Context
    from .protocol import Protocol
    from .session import Struct

__all__ = ["Connection", "HeaderWriter", "Refuse"]

logger = logging.getLogger("lws")

LWS_PRE: int = lib.LWS_PRE
DEFAULT: int = lib.LWSPY_DEFAULT
NULL = ffi.NULL
R = Reason

_WRITE_TEXT = lib.LWS_WRITE_TEXT
_WRITE_BINARY = lib.LWS_WRITE_BINARY
_WRITE_CONT = lib.LWS_WRITE_CONTINUATION
_WRITE_NO_FIN = lib.LWS_WRITE_NO_FIN
_WRITE_PING = lib.LWS_WRITE_PING
_RX_FIRST = lib.LWSPY_RX_FIRST
_RX_FINAL = lib.LWSPY_RX_FINAL
_RX_BINARY = lib.LWSPY_RX_BINARY

_RECEIVE = int(R.RECEIVE)
_CLIENT_RECEIVE = int(R.CLIENT_RECEIVE)
_SERVER_WRITEABLE = int(R.SERVER_WRITEABLE)
_CLIENT_WRITEABLE = int(R.CLIENT_WRITEABLE)
_ESTABLISHED = int(R.ESTABLISHED)
_CLIENT_ESTABLISHED = int(R.CLIENT_ESTABLISHED)
_PEER_CLOSE = int(R.WS_PEER_INITIATED_CLOSE)
_WSI_DESTROY = int(R.WSI_DESTROY)
_CONN_ERROR = int(R.CLIENT_CONNECTION_ERROR)
_APPEND_HS = int(R.CLIENT_APPEND_HANDSHAKE_HEADER)
_BIND = frozenset(int(r) for r in BIND_REASONS)
_DROP = frozenset(int(r) for r in DROP_REASONS)
_CLOSED = frozenset(int(r) for r in (R.CLOSED, R.CLIENT_CLOSED, R.CLOSED_HTTP,
                                     R.CLOSED_CLIENT_HTTP, R.RAW_CLOSE))
_WRITEABLE = frozenset((_SERVER_WRITEABLE, _CLIENT_WRITEABLE))
_NOT_SESSION = frozenset(int(r) for r in NOT_SESSION)
_FILTER_PROTOCOL = int(R.FILTER_PROTOCOL_CONNECTION)
_HTTP_SERVER = HTTP_SERVER_REASONS
_SCRATCH = 64 * 1024  # reusable send buffer; larger messages get their own
_get_ident = threading.get_ident


def _deliver(conn: Connection, user: int, message: Any) -> int:
    # A whole message, joined in C, for a protocol with on_message and no raw
    # RECEIVE: the per-message hot path, called by C (lwspy_fast_deliver in
    # fastcall.c, not through cffi's callback wrapper) with the message built
    # there: bytes, str, or None for text that is not UTF-8.
    try:
        if message is None:
            return conn._close_now(1007, "invalid UTF-8")
        conn._cb_user = user
        try:
            r = conn.protocol.on_message(conn, message)  # type: ignore[union-attr]
        except Exception as exc:
            return conn._ctx._handler_failed(
                conn.protocol, conn, _CLIENT_RECEIVE if conn.is_client else _RECEIVE, exc)  # type: ignore[arg-type]
        except BaseException as exc:
            return conn._ctx._handler_interrupted(exc)
        finally:
            conn._cb_user = 0
            if conn._temp_views is not None:
                conn._kill_temp_views()
        return 0 if r is None else int(r)
    except BaseException as exc:
        try:
            logger.critical("lws binding: internal error in callback", exc_info=exc)
        finally:
            return -1  # noqa: B012


fast_set_deliver(_deliver)


class Refuse(Exception):
    """Raise in ``on_filter_protocol_connection`` (or another filter) to refuse.

    ``status`` is the HTTP status sent before lws closes the connection
    (e.g. 401, 403); ``0`` closes without a status line.
    """

    def __init__(self, status: int = 403, body: str = "") -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body


class HeaderWriter:
    """``in`` of ``ADD_HEADERS`` / ``CLIENT_APPEND_HANDSHAKE_HEADER``: appends headers.

    Valid only during the callback that received it.
    """

    __slots__ = ("_alive", "_conn", "_end", "_pp")

    def __init__(self, conn: Connection, pp: Any, end: Any) -> None:
        self._conn = conn
        self._pp = pp      # lws' write pointer (unsigned char **), advanced in place
        self._end = end
        self._alive = True

    def add(self, name: str, value: str | bytes) -> None:
        """Append ``name: value``; raises :class:`LwsError` if lws has no room."""
        if not self._alive:
            raise LwsError("a HeaderWriter is usable only during its callback")
        bname = name.encode("ascii").rstrip(b":") + b":"
        bvalue = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        if b"\r" in bvalue or b"\n" in bvalue or b"\r" in bname or b"\n" in bname:
            raise ValueError("header names and values may not contain CR or LF")
        if lib.lws_add_http_header_by_name(self._conn._wsi, bname, bvalue, len(bvalue),
                                           self._pp, self._end):
            raise LwsError(f"no room left for header {name!r}")

    def _close(self) -> None:
        self._alive = False


class Connection:
    """One lws connection (a wsi). Made by the binding, never by the user.

    Scopes of "user" data: ``conn.state`` is a plain Python slot that lives
    from the wsi's creation to ``WSI_DESTROY`` (so it survives HTTP keep-alive
    transactions); ``conn.session`` is the typed view of lws' per-session
    buffer, whose lifetime is one protocol binding (one HTTP transaction, or
    the whole WebSocket session).

    Threading: ``send``, ``send_fragment``, ``ping``, ``close``,
    ``pause_reading``/``resume_reading`` are safe from any thread; everything
    else belongs on the thread running lws (inside a handler).
    """

    __slots__ = (
        "__weakref__",
        "_bracket_user",
        "_bridged",
        "_cb_user",
        "_closed",
        "_closing",
        "_connect_headers",
        "_ctx",
        "_destroyed",
        "_drain_cb",
        "_established",
        "_external",
        "_fast",
        "_handle",
        "_http",
        "_key",
        "_limit",
        "_lws_thread",
        "_rx_binary",
        "_rx_flags",
        "_rx_parts",
        "_rx_size",
        "_temp_views",
        "_txbuf",
        "_txbuf_big",
        "_txq",
        "_txq_addr",
        "_view",
        "_why",
        "_wr_scheduled",
        "_wsi",
        "close_code",
        "close_reason",
        "error",
        "id",
        "is_client",
        "protocol",
        "state",
    )

    def __init__(self, ctx: Context, wsi: Any, key: int, protocol: Protocol | None,
                 is_client: bool) -> None:
        self._ctx = ctx
        self._wsi = wsi
        self._key = key
        self.id = ctx._next_conn_id()
        self.protocol: Protocol | None = protocol
        self.is_client = is_client
        self.state: Any = None
        self._view: Struct | None = None       # view over the bound buffer
        self._bracket_user = 0                 # the bound buffer's address
        self._temp_views: list[Struct] | None = None
        self._cb_user = 0                      # `user` of the running callback (0: none)
        self._lws_thread = ctx._lws_thread
        # The send queue lives in C (drained there, one lws_write per
        # WRITEABLE); this object owns its memory. lws finds it through the
        # wsi's opaque user data.
        self._txq: Any = ffi.new("struct lwspy_txq *")
        lib.lwspy_txq_init(self._txq)
        self._txq_addr = addr(self._txq)  # for the fast_* calls
        self._txq.client = 1 if is_client else 0
        # Whole messages come to _deliver with this object's address
        # (borrowed: this object owns the queue that holds it).
        self._txq.conn = id(self)
        self._rx_flags = 0
        self._closing = False
        self._closed = False
        self._destroyed = False
        self._established = False
        # established, not closing, not destroyed: send() may take its fast path
        self._fast = False
        self._limit = 0  # the protocol's send_queue_limit, read once
        # lws.asyncio's thread mode: C asks the service thread for WRITEABLE
        # (lwspy_bridge_attach), no Python hop per send.
        self._bridged = False
        # Python-side joining (protocols C does not join for), made on first use.
        self._rx_parts: list[bytes] | None = None
        self._rx_size = 0
        self._rx_binary = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.error: str | None = None
        self._external: Any = None             # client session buffer the binding owns
        self._connect_headers: Mapping[str, str] | None = None
        self._txbuf: Any = None
        self._txbuf_big: Any = None
        self._why = ""
        self._http: Any = None  # the HTTP transaction being served (lws.http)
        self._drain_cb: Any = None  # called on the lws thread when the send queue empties
        self._wr_scheduled = False  # a WRITEABLE request is on its way to the lws thread

    # -- identity -------------------------------------------------------

    def __lws_address__(self) -> int:
        """The wsi's address, for C pointer fields (``pss.wsi = conn``)."""
        return self._key

    def __repr__(self) -> str:
        side = "client" if self.is_client else "server"
        name = self.protocol.name if self.protocol is not None else "-"
        status = " closed" if self._closed else ""
        return f"<Connection #{self.id} {side} {name!r}{status}>"

    @property
    def context(self) -> Context:
        return self._ctx

    @property
    def established(self) -> bool:
        """True from ``ESTABLISHED``/``CLIENT_ESTABLISHED`` until the connection closes."""
        return self._established and not self._closed

    @property
    def closed(self) -> bool:
        """True once lws reported the connection closed (or failed)."""
        return self._closed

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting in this connection's send queue."""
        return int(self._txq.queued)

    # -- session data ---------------------------------------------------

    @property
    def session(self) -> Any:
        """The typed view of lws' per-session buffer, or ``None`` if the protocol has none.

        Raises :class:`lws.SessionClosed` when no buffer is live (between
        transactions, after the close callbacks, or after ``WSI_DESTROY``).
        """
        view = self._view
        user = self._cb_user
        if view is not None and user == self._bracket_user:
            return view  # the common case: a handler inside the bracket
        proto = self.protocol
        st = proto.session if proto is not None else None
        if st is None:
            return None
        if self._external is not None:
            return self._external  # the binding's own buffer: one view throughout
        if not user or threading.get_ident() != self._lws_thread.ident:
            if view is None:
                why = self._why or "none bound"
                raise SessionClosed(f"{self!r} has no live session buffer: {why}")
            return view
        # A buffer seen outside a BIND..DROP bracket: it lives for this callback.
        temp = st.view(user, Guard(self._lws_thread, self))
        if self._temp_views is None:
            self._temp_views = [temp]
        else:
            self._temp_views.append(temp)
        return temp

    def _callback_session(self) -> Any:
        """``session`` for the raw callback: ``None`` where no buffer is live."""
        try:
            return self.session
        except SessionClosed:
            return None

    def _open_bracket(self, user: int) -> None:
        if self._view is not None:
            # A bind with no DROP for the previous buffer: lws already freed it.
            self._kill_view("the protocol was re-bound")
        if not user:
            return
        st = self.protocol.session if self.protocol is not None else None
        self._bracket_user = user
        if st is not None:
            self._view = st.view(user, Guard(self._lws_thread, self))

    def _kill_view(self, why: str) -> None:
        view = self._view
        self._view = None
        self._bracket_user = 0
        self._why = why
        if view is not None:
            view._guard.kill(why)

    # -- the callback path (lws thread only) ------------------------------

    def _callback(self, proto: Protocol | None, reason: int, user: int, in_: Any,
                  len_: int, rx_flags: int = 0) -> int:
        if reason in _BIND:
            if proto is not None:
                self.protocol = proto
                # The user's WRITEABLE handler gets a turn when the queue empties.
                self._txq.give_turn = 1 if proto._wants_writeable else 0
                self._txq.slice = proto._slice
                self._txq.own_headers = 0 if self._txq.client else proto._own_headers
            if self._external is None:
                self._open_bracket(user)
            self._http = None
        self._cb_user = 0 if reason in _NOT_SESSION else user
        try:
            if reason == _RECEIVE or reason == _CLIENT_RECEIVE:
                self._rx_flags = rx_flags
                return self._on_receive(proto, reason, in_, len_)
            if proto is not None and proto._serves_http and reason in _HTTP_SERVER:
                served = http_serve(self, proto, reason, in_, len_)
                if served is not None:
                    return served
            if reason == _FILTER_PROTOCOL and proto is not None and \
                    proto.vhost.allowed_origins is not None:
                origin = self.header("origin")
                if origin not in proto.vhost.allowed_origins:
                    logger.info("%r: origin %r not allowed: 403", self, origin)
                    return self._ctx._refuse(self, Refuse(403))
            if reason in _WRITEABLE:
                return self._on_writeable(proto, reason)
            if reason == _ESTABLISHED or reason == _CLIENT_ESTABLISHED:
                self._established = True
                if proto is not None and not self._closing:
                    self._fast = True
                    self._limit = proto.send_queue_limit
                # lws may have reset the wsi's opaque data since its creation
                # (4.1 does on the ws upgrade): point it at the send queue now.
                lib.lws_set_opaque_user_data(self._wsi, self._txq)
                if proto is not None:
                    proto._live[self._key] = self
                if self._txq.count:
                    self._request_writeable()
            elif reason == _PEER_CLOSE:
                self._note_peer_close(in_, len_)
            elif reason in _CLOSED or reason == _CONN_ERROR:
                self._note_closed(proto, reason, in_)
            elif reason == _APPEND_HS and self._connect_headers:
                self._append_connect_headers(in_, len_)
            return self._ctx._call_handlers(proto, self, reason, in_, len_)
        finally:
            self._cb_user = 0
            if self._temp_views is not None:
                self._kill_temp_views()
            if reason in _DROP:
                self._http = None
                if self.protocol is not None:  # its session is over: not "live" any more
                    self.protocol._live.pop(self._key, None)
                if self._external is None:
                    self._kill_view(f"{Reason(reason).name} (lws frees the buffer now)")
            elif reason == _WSI_DESTROY:
                self._destroy()

    def _receive(self, proto: Protocol, reason: int, user: int, in_: Any, len_: int,
                 rx_flags: int) -> int:
        """RECEIVE / CLIENT_RECEIVE for a protocol that wants the chunks (raw path)."""
        self._cb_user = user
        self._rx_flags = rx_flags
        try:
            return self._on_receive(proto, reason, in_, len_)
        finally:
            self._cb_user = 0
            if self._temp_views is not None:
                self._kill_temp_views()

    def _kill_temp_views(self) -> None:
        for view in self._temp_views or ():
            view._guard.kill("its callback returned (buffer outside a protocol binding)")
        self._temp_views = None

    def _on_receive(self, proto: Protocol | None, reason: int, in_: Any, len_: int) -> int:
        ret = DEFAULT
        if proto is None:
            return ret
        if reason in proto._handlers or reason in proto._raw_wanted:
            ret = self._ctx._call_handlers(proto, self, reason, in_, len_)
        if not proto._reassemble or self._closing:
            return ret
        flags = self._rx_flags
        chunk = ffi.unpack(in_, len_) if len_ else b""
        final = flags & _RX_FINAL
        parts = self._rx_parts
        if parts is None and final:
            binary = flags & _RX_BINARY
            message = chunk
        else:
            if parts is None:
                self._rx_binary = bool(flags & _RX_BINARY)
                parts = self._rx_parts = []
            self._rx_size += len_
            if self._rx_size > proto.max_message_size:
                return self._close_now(1009, "message too big")
            parts.append(chunk)
            if not final:
                return ret
            message = b"".join(parts)
            binary = self._rx_binary
            self._rx_parts = None
            self._rx_size = 0
        if len(message) > proto.max_message_size:
            return self._close_now(1009, "message too big")
        if not binary:
            try:
                text: bytes | str = message.decode("utf-8")
            except UnicodeDecodeError:
                return self._close_now(1007, "invalid UTF-8")
        else:
            text = message
        try:
            r = proto.on_message(self, text)  # type: ignore[attr-defined]
        except Exception as exc:
            return self._ctx._handler_failed(proto, self, reason, exc)
        except BaseException as exc:
            return self._ctx._handler_interrupted(exc)
        if r is None:
            return ret
        return int(r)

    def _on_writeable(self, proto: Protocol | None, reason: int) -> int:
        # Only reached with the send queue empty: C writes what is queued.
        if self._drain_cb is not None:
            self._drain_cb()
        return self._ctx._call_handlers(proto, self, reason, NULL, 0)

    def _write(self, payload: bytes, flags: int) -> int:
        n = len(payload)
        if n <= _SCRATCH:
            buf = self._txbuf
            if buf is None:
                buf = self._txbuf = ffi.new("unsigned char[]", LWS_PRE + _SCRATCH)
        else:
            # Kept until the next write: lws' deflate may still read it.
            buf = self._txbuf_big = ffi.new("unsigned char[]", LWS_PRE + n)
        ffi.memmove(buf + LWS_PRE, payload, n)
        written = int(lib.lws_write(self._wsi, buf + LWS_PRE, n, flags))
        if written < n:
            logger.debug("%r: lws_write wrote %d of %d bytes; closing", self, written, n)
            return -1
        return written

    def _close_now(self, code: int, reason: str) -> int:
        """Close from inside a callback: set the close frame, return -1 to lws."""
        self._closing = True
        self._fast = False
        raw = reason.encode("utf-8")[:123]
        lib.lws_close_reason(self._wsi, code, raw, len(raw))
        return -1

    def _note_peer_close(self, in_: Any, len_: int) -> None:
        if len_ >= 2:
            raw = ffi.buffer(in_, len_)[:]
            self.close_code = (raw[0] << 8) | raw[1]
            self.close_reason = raw[2:].decode("utf-8", "replace")
        else:
            self.close_code = 1005

    def _note_closed(self, proto: Protocol | None, reason: int, in_: Any) -> None:
        self._closed = True
        self._closing = True
        self._fast = False
        if reason == _CONN_ERROR:
            self.error = ffi.string(ffi.cast("char *", in_)).decode("utf-8", "replace") \
                if in_ != NULL else "connection failed"
        for p in (proto, self.protocol):
            if p is not None:
                p._live.pop(self._key, None)

    def _destroy(self, why: str = "the connection was destroyed (WSI_DESTROY)") -> None:
        self._closed = True
        self._destroyed = True
        self._fast = False
        self._kill_view(why)
        if self._external is not None:
            view, self._external = self._external, None
            view._guard.kill(why)
            self._ctx._client_buffers.pop(self.id, None)  # frees it
        if self.protocol is not None:
            self.protocol._live.pop(self._key, None)
        lib.lwspy_txq_kill(self._txq)  # also forgets this object's address
        self._txbuf = self._txbuf_big = None
        self._ctx._forget(self)

    def _append_connect_headers(self, in_: Any, len_: int) -> None:
        pp = ffi.cast("unsigned char **", in_)
        end = pp[0] + len_
        writer = HeaderWriter(self, pp, end)
        try:
            for name, value in (self._connect_headers or {}).items():
                writer.add(name, value)
        finally:
            writer._close()

    # -- sending ----------------------------------------------------------

    def send(self, data: bytes | bytearray | memoryview | str) -> int:
        """Queue one whole message: ``str`` goes as text, bytes-like as binary.

        Safe from any thread. The queue is drained one ``lws_write`` per
        WRITEABLE callback, as lws requires. Returns the bytes now queued on
        the connection (for your own backpressure). Raises
        :class:`lws.SendQueueFull` past ``Protocol.send_queue_limit`` and
        :class:`lws.ConnectionClosed` once the connection is closing.
        """
        kind = type(data)
        if kind is bytes:
            payload: bytes = data  # type: ignore[assignment]
            flags = _WRITE_BINARY
        elif kind is str:
            payload = data.encode("utf-8")  # type: ignore[union-attr]
            flags = _WRITE_TEXT
        elif isinstance(data, (bytes, bytearray, memoryview)):
            payload = bytes(data)
            flags = _WRITE_BINARY
        elif isinstance(data, str):
            payload = data.encode("utf-8")
            flags = _WRITE_TEXT
        else:
            raise TypeError(f"send() takes str or a bytes-like object, not {type(data).__name__}")
        # The common case, on the lws thread in a handler, in one C call that
        # queues and asks for WRITEABLE; everything else goes to _enqueue.
        if self._fast:
            here = _get_ident() == self._lws_thread.ident
            if here or self._bridged:  # off the lws thread, C asks the bridge instead
                # (_key is the wsi's address)
                queued: int = fast_send(self._txq_addr, self._key if here else 0, payload,
                                        flags, self._limit)
                if queued >= 0:
                    return queued
        return self._enqueue(payload, flags)

    def send_fragment(self, data: bytes | str, *, first: bool, final: bool,
                      binary: bool | None = None) -> None:
        """Queue one fragment of a message (``first``/``final`` say where it sits).

        The first fragment sets the message type: ``binary``, or when it is
        ``None``, str = text and bytes = binary.
        """
        payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        if binary is None:
            binary = not isinstance(data, str)
        if first:
            flags = _WRITE_BINARY if binary else _WRITE_TEXT
        else:
            flags = _WRITE_CONT
        if not final:
            flags |= _WRITE_NO_FIN
        self._queue(payload, flags)

    def ping(self, data: bytes = b"") -> None:
        """Queue a ping (payload at most 125 bytes)."""
        if len(data) > 125:
            raise ValueError("a ping payload is at most 125 bytes")
        self._queue(bytes(data), _WRITE_PING)

    def _queue(self, payload: bytes, flags: int) -> int:
        # send()'s fast path (inlined there, where a call per message counts)
        if self._fast:
            here = _get_ident() == self._lws_thread.ident
            if here or self._bridged:
                queued: int = fast_send(self._txq_addr, self._key if here else 0, payload,
                                        flags, self._limit)
                if queued >= 0:
                    return queued
        return self._enqueue(payload, flags)

    def _enqueue(self, payload: bytes, flags: int) -> int:
        if self._closing or self._closed:
            raise ConnectionClosed(f"{self!r} is closing", self.close_code, self.close_reason)
        n = len(payload)
        proto = self.protocol
        limit = proto.send_queue_limit if proto is not None else 0
        # On the lws thread, one C call queues and asks for WRITEABLE.
        here = self._fast and _get_ident() == self._lws_thread.ident
        queued = lib.lwspy_send(self._txq, self._wsi if here else NULL, payload, n, flags, limit)
        if queued < 0:
            if queued == -1:
                raise SendQueueFull(
                    f"{self!r}: {self._txq.queued} bytes queued, {n} more would pass the "
                    f"limit of {limit} (Protocol.send_queue_limit)"
                )
            if queued == -2:
                raise ConnectionClosed(f"{self!r} is closing", self.close_code,
                                       self.close_reason)
            raise MemoryError(f"no memory to queue {n} bytes")
        if self._established and not here and not self._bridged:
            self._request_writeable()
        return int(queued)

    def _request_writeable(self) -> None:
        if self._ctx._on_lws_thread():
            self._wr_scheduled = False  # before the request: a later send schedules anew
            if not self._destroyed:
                lib.lws_callback_on_writable(self._wsi)
        elif not self._wr_scheduled:
            # One hop to the lws thread covers every send queued before it runs.
            self._wr_scheduled = True
            self._ctx.call_soon_threadsafe(self._request_writeable)

    def write(self, data: bytes, flags: int | None = None) -> int:
        """``lws_write`` now, for ports of C code: only inside a WRITEABLE handler.

        ``flags`` defaults to binary (``LWS_WRITE_BINARY``); LWS_PRE headroom
        is handled here. Returns what lws_write returned.
        """
        if not self._ctx._on_lws_thread():
            raise LwsError("write() belongs in a WRITEABLE handler; use send() elsewhere")
        return self._write(bytes(data), _WRITE_BINARY if flags is None else flags)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close after what is already queued, with ``code`` and ``reason``.

        Safe from any thread; closing twice is harmless.
        """
        if not (code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011)
                or 3000 <= code <= 4999):
            raise ValueError(f"{code} is not a close code an endpoint may send")
        if len(reason.encode("utf-8")) > 123:
            raise ValueError("a close reason is at most 123 bytes of UTF-8")
        if self._closing or self._closed:
            return
        self._closing = True
        self._fast = False
        raw = reason.encode("utf-8")
        done = lib.lwspy_txq_close(self._txq, code, raw, len(raw))
        if done == 0:
            self._request_writeable()
        elif done == -3:
            self._closing = False
            raise MemoryError("no memory to queue the close")

    # -- the frame being received (inside on_receive / on_client_receive) ----

    @property
    def is_first_fragment(self) -> bool:
        """``lws_is_first_fragment()``: this chunk starts a message."""
        return bool(self._rx_flags & _RX_FIRST)

    @property
    def is_final_fragment(self) -> bool:
        """``lws_is_final_fragment()``: this chunk ends a message."""
        return bool(self._rx_flags & _RX_FINAL)

    @property
    def is_binary(self) -> bool:
        """``lws_frame_is_binary()``: the message being received is binary."""
        return bool(self._rx_flags & _RX_BINARY)

    @property
    def remaining_payload(self) -> int:
        """``lws_remaining_packet_payload()``: bytes of this frame still to come."""
        return int(lib.lws_remaining_packet_payload(self._wsi))

    # -- rx flow control, timers --------------------------------------------

    def pause_reading(self) -> None:
        """Stop lws reading from this connection (``lws_rx_flow_control(wsi, 0)``)."""
        self._on_lws(lambda: lib.lws_rx_flow_control(self._wsi, 0))

    def resume_reading(self) -> None:
        """Resume reading (``lws_rx_flow_control(wsi, 1)``)."""
        self._on_lws(lambda: lib.lws_rx_flow_control(self._wsi, 1))

    def set_timer(self, seconds: float) -> None:
        """Deliver ``TIMER`` (``on_timer``) after ``seconds``; a negative value cancels.

        ``lws_set_timer_usecs``. The protocol must handle ``TIMER``.
        """
        proto = self.protocol
        if proto is None or int(R.TIMER) not in proto._wanted:
            raise LwsError("set_timer() needs the protocol to define on_timer (or a raw callback)")
        usecs = -1 if seconds < 0 else int(seconds * 1_000_000)
        self._on_lws(lambda: lib.lws_set_timer_usecs(self._wsi, usecs))

    def set_timeout(self, seconds: int) -> None:
        """Let lws close the connection if it is still open after ``seconds`` (0 cancels).

        ``lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, seconds)``.
        """
        self._on_lws(lambda: lib.lws_set_timeout(self._wsi, lib.PENDING_TIMEOUT_USER_OK, seconds))

    def _on_lws(self, fn: Any) -> None:
        if self._destroyed:
            raise ConnectionClosed(f"{self!r} is closed", self.close_code, self.close_reason)
        if self._ctx._on_lws_thread():
            fn()
        else:
            self._ctx.call_soon_threadsafe(lambda: None if self._destroyed else fn())

    # -- request information (during the handshake / HTTP callbacks) ---------

    def _check_lws(self) -> None:
        if self._destroyed:
            raise ConnectionClosed(f"{self!r} is closed", self.close_code, self.close_reason)
        if not self._ctx._on_lws_thread():
            raise LwsError("request headers are readable only from a handler")

    def header(self, name: str) -> str | None:
        """A request header by name (case-insensitive), or ``None`` if absent.

        Headers lws knows by token are always readable during the handshake
        or HTTP callbacks; others need an lws built with custom headers.
        """
        self._check_lws()
        from ._headers import read_header

        return read_header(self._wsi, name)

    @property
    def path(self) -> str:
        """The request's URI path (without the query)."""
        self._check_lws()
        from ._headers import read_path

        return read_path(self._wsi)

    @property
    def query(self) -> dict[str, str]:
        """The request's query arguments (the last one wins for a repeated name)."""
        self._check_lws()
        from ._headers import read_query

        return dict(read_query(self._wsi))

    @property
    def peer_address(self) -> str:
        """The peer's IP address as lws reports it."""
        self._check_lws()
        buf = ffi.new("char[]", 128)
        out = lib.lws_get_peer_simple(self._wsi, buf, 128)
        return ffi.string(out).decode() if out != NULL else ""

    def http_respond(self, status: int, body: bytes | str = b"", *,
                     content_type: str = "text/plain; charset=utf-8",
                     headers: Mapping[str, str] | None = None) -> int:
        """Answer an HTTP request at once (small bodies); return the result to lws.

        For use in the raw HTTP reasons (``on_http``): writes status, headers
        and body, then completes the transaction so keep-alive works. Return
        its result from the handler.
        """
        self._check_lws()
        from ._headers import http_respond

        return http_respond(self, status, body, content_type, headers)
