"""Protocols: the Python side of an ``struct lws_protocols`` entry.

A protocol is a class; the application passes *instances* to a
:class:`~lws.Context`. The instance lives as long as the context and its
attributes are the protocol-wide data shared by every session of the protocol
(C's ``lws_protocols.user``).

Handlers are methods named after the lws callback reason they handle:
``on_`` + the reason's lowercase name (``on_established``, ``on_receive``,
``on_server_writeable``, ``on_closed``, ``on_client_connection_error``, ...).
``on_message`` is the binding's own: it receives whole messages, reassembled
from lws' fragments. A C port can instead define one raw
``callback(conn, reason, session, in_)`` that sees every reason, like the C
``switch (reason)``. Reasons that no handler wants never enter Python.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import DeclarationError
from .reasons import IN_KIND, InKind, Reason, handler_name
from .session import Struct

if TYPE_CHECKING:
    from .connection import Connection
    from .context import Context
    from .vhost import Vhost

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_SEND_QUEUE_LIMIT",
    "NO_CONNECTION_REASONS",
    "Protocol",
]

DEFAULT_MAX_MESSAGE_SIZE = 1 << 20
DEFAULT_SEND_QUEUE_LIMIT = 4 << 20
DEFAULT_MAX_BODY_SIZE = 1 << 20
# Larger fragments take fewer sends and wake the peer less often: 256 KiB
# made 1 MiB round trips 1.2-1.3x faster than 64 KiB (docs/callbacks.md).
DEFAULT_TX_FRAGMENT_SIZE = 256 * 1024

R = Reason
# Reasons lws sends without a real connection (a vhost-wide or fake wsi):
# their handlers take no ``conn`` argument.
NO_CONNECTION_REASONS = frozenset({
    R.FILTER_NETWORK_CONNECTION,  # lws sends it on the listening socket's wsi
    R.PROTOCOL_INIT, R.PROTOCOL_DESTROY, R.EVENT_WAIT_CANCELLED, R.GET_THREAD_ID,
    R.ADD_POLL_FD, R.DEL_POLL_FD, R.CHANGE_MODE_POLL_FD, R.LOCK_POLL, R.UNLOCK_POLL,
    R.VHOST_CERT_AGING, R.VHOST_CERT_UPDATE, R.OPENSSL_LOAD_EXTRA_CLIENT_VERIFY_CERTS,
    R.OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS,
})

_HANDLERS = {handler_name(r): r for r in Reason}
# The binding's own handlers, with the reasons each needs.
_EXTRA_HANDLERS = {
    "on_message": (R.RECEIVE, R.CLIENT_RECEIVE),
    "on_request": (R.HTTP, R.HTTP_BODY, R.HTTP_BODY_COMPLETION, R.HTTP_WRITEABLE),
    "on_request_body": (R.HTTP_BODY,),
}
_EXTRA_ARITY = {"on_message": 2, "on_request": 2, "on_request_body": 3}
_ALL_HANDLER_NAMES = sorted([*_HANDLERS, *_EXTRA_HANDLERS])


class Protocol:
    """Base class of a protocol. Subclass it, set ``name``, add handlers.

    Class attributes (the declaration):

    ``name``
        The protocol name (``Sec-WebSocket-Protocol``); required.
    ``session``
        A :class:`lws.session.Struct` subclass (or ``None``): the typed
        per-session data. ``per_session_data_size`` is derived from it.
    ``rx_buffer_size``, ``tx_packet_size``, ``id``
        As in ``struct lws_protocols`` (0 = lws' defaults), with one
        difference: ``tx_packet_size`` left at 0 reaches lws as
        ``tx_fragment_size`` (on a vhost without permessage-deflate), so a
        queued message goes out in writes of up to 256 KiB instead of lws'
        4 KiB. It only caps what one write sends; it allocates nothing.
    ``max_message_size``
        Cap for messages reassembled for ``on_message`` (default 1 MiB);
        a longer message closes the connection with 1009.
    ``send_queue_limit``
        Bytes a connection may have queued by ``send`` (default 4 MiB); past
        it ``send`` raises :class:`lws.SendQueueFull`.
    ``tx_fragment_size``
        Messages longer than this (default 256 KiB) go out as fragments of
        this size, one per WRITEABLE, so that a ping's answer or a close
        can go out between them (0: never split).
        Never larger than what lws sends in one write (``tx_packet_size``,
        else ``rx_buffer_size``, else the context's ``pt_serv_buf_size``):
        lws would copy the rest aside and send it over the next WRITEABLEs
        anyway. With permessage-deflate, always ``tx_fragment_size``: lws
        4.3's deflate garbles messages written in small fragments.
    ``raw_reasons``
        With a raw ``callback``: the reasons it wants (default: all).

    Threading: handlers run on the thread running lws (inside
    :meth:`Context.run` or :meth:`Context.service`).
    """

    name: ClassVar[str]
    session: ClassVar[type[Struct] | None] = None
    rx_buffer_size: ClassVar[int] = 0
    tx_packet_size: ClassVar[int] = 0
    id: ClassVar[int] = 0
    max_message_size: ClassVar[int] = DEFAULT_MAX_MESSAGE_SIZE
    max_body_size: ClassVar[int] = DEFAULT_MAX_BODY_SIZE
    tx_fragment_size: ClassVar[int] = DEFAULT_TX_FRAGMENT_SIZE
    send_queue_limit: ClassVar[int] = DEFAULT_SEND_QUEUE_LIMIT
    raw_reasons: ClassVar[frozenset[Reason] | None] = None

    # Filled in by __init_subclass__.
    _wanted: ClassVar[frozenset[int]] = frozenset()
    _handlers: ClassVar[dict[int, tuple[Callable[..., Any], InKind, bool]]] = {}
    _raw_wanted: ClassVar[frozenset[int]] = frozenset()
    _reassemble: ClassVar[bool] = False
    _messages_in_c: ClassVar[bool] = False
    _serves_http: ClassVar[bool] = False
    _wants_writeable: ClassVar[bool] = False
    # Write frames of 32 KiB and up header first (lwspy_write_split); lws.asyncio's.
    _header_first: ClassVar[bool] = False
    _streams_body: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name", getattr(cls, "name", None))
        if name is not None and (not isinstance(name, str) or not name
                                 or not name.isprintable() or " " in name):
            raise DeclarationError(f"{cls.__name__}.name must be a non-empty token, got {name!r}")
        session = getattr(cls, "session", None)
        if session is not None and not (isinstance(session, type) and issubclass(session, Struct)):
            raise DeclarationError(
                f"{cls.__name__}.session must be a lws.session.Struct subclass "
                f"(an annotated class or lws.session.struct('struct ... {{ }};')), got {session!r}"
            )
        for attr in ("rx_buffer_size", "tx_packet_size", "id", "max_message_size",
                     "send_queue_limit", "max_body_size", "tx_fragment_size"):
            value = getattr(cls, attr)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise DeclarationError(f"{cls.__name__}.{attr} must be an int >= 0, got {value!r}")

        handlers: dict[int, tuple[Callable[..., Any], InKind, bool]] = {}
        wanted: set[int] = set()
        for attr in dir(cls):
            if not attr.startswith("on_"):
                continue
            fn = getattr(cls, attr)
            if attr in _EXTRA_HANDLERS:
                _check_arity(cls, attr, fn, _EXTRA_ARITY[attr])
                wanted.update(_EXTRA_HANDLERS[attr])
                continue
            reason = _HANDLERS.get(attr)
            if reason is None:
                hint = difflib.get_close_matches(attr, _ALL_HANDLER_NAMES, n=1)
                raise DeclarationError(
                    f"{cls.__name__}.{attr} is not a handler name"
                    + (f"; did you mean {hint[0]}?" if hint else "")
                    + " (handlers are on_<reason> for lws callback reasons, and on_message)"
                )
            if not callable(fn):
                raise DeclarationError(f"{cls.__name__}.{attr} must be a method")
            no_conn = reason in NO_CONNECTION_REASONS
            kind = IN_KIND.get(reason, InKind.NONE)
            _check_arity(cls, attr, fn, (0 if no_conn else 1) + (kind is not InKind.NONE))
            handlers[int(reason)] = (fn, kind, no_conn)
            wanted.add(int(reason))
        raw = getattr(cls, "callback", None)
        cls._raw_wanted = frozenset()
        if raw is not None:
            _check_arity(cls, "callback", raw, 4)
            raw_reasons = cls.raw_reasons
            cls._raw_wanted = frozenset(
                int(r) for r in (raw_reasons if raw_reasons is not None else Reason))
            wanted.update(cls._raw_wanted)
        cls._handlers = handlers
        cls._wanted = frozenset(wanted)
        cls._reassemble = hasattr(cls, "on_message")
        # Nothing wants the chunks themselves: C joins them and calls
        # on_message once per message (the fast path).
        chunks = {int(R.RECEIVE), int(R.CLIENT_RECEIVE)}
        cls._messages_in_c = cls._reassemble and not (chunks & (handlers.keys() | cls._raw_wanted))
        cls._wants_writeable = bool(
            {int(R.SERVER_WRITEABLE), int(R.CLIENT_WRITEABLE)} & wanted)
        cls._serves_http = hasattr(cls, "on_request")
        cls._streams_body = hasattr(cls, "on_request_body")
        if cls._streams_body and not cls._serves_http:
            raise DeclarationError(f"{cls.__name__}.on_request_body needs on_request too")
        if cls._serves_http and "on_http" in handlers_names(handlers):
            raise DeclarationError(f"{cls.__name__} defines both on_request and on_http: "
                                   "on_request is the binding's HTTP server, on_http the raw "
                                   "reason; pick one")

    # -- the declaration, read back ------------------------------------

    @classmethod
    def per_session_data_size(cls) -> int:
        """Bytes lws allocates per session: ``sizeof`` the session struct, or 0."""
        return cls.session.size if cls.session is not None else 0

    # -- runtime: set when a Context takes the instance -----------------

    _context: Context | None = None
    _vhost: Vhost | None = None
    _index: int = -1
    _slice: int = 0  # the fragment size of large messages (Vhost._slice)
    _own_headers: int = 0  # _header_first, on a vhost without permessage-deflate
    _live: dict[int, Connection]
    _lws_entry: Any = None  # this protocol's struct lws_protocols entry

    @property
    def context(self) -> Context:
        """The context this protocol instance belongs to."""
        if self._context is None:
            raise RuntimeError(f"protocol {self.name!r} is not part of a Context yet")
        return self._context

    @property
    def vhost(self) -> Vhost:
        """The vhost this protocol instance serves (its attributes are per-vhost state)."""
        if self._vhost is None:
            raise RuntimeError(f"protocol {self.name!r} is not part of a Context yet")
        return self._vhost

    def connections(self) -> list[Connection]:
        """The protocol's live WebSocket connections (established, not yet closed)."""
        return list(getattr(self, "_live", {}).values())

    def request_writeable_all(self) -> None:
        """Ask lws for a WRITEABLE callback on every connection of this protocol.

        ``lws_callback_on_writable_all_protocol()``; safe from any thread (from
        another thread it is forwarded to the lws thread).
        """
        self.context._request_writeable_all(self)

    def broadcast(self, data: bytes | str) -> int:
        """Queue ``data`` on every live connection; returns how many took it.

        Connections whose send queue is full or that are closing are skipped.
        """
        sent = 0
        for conn in self.connections():
            try:
                conn.send(data)
            except Exception:
                continue
            sent += 1
        return sent

    def __repr__(self) -> str:
        return f"<{type(self).__name__} protocol {getattr(self, 'name', '?')!r}>"


def handlers_names(handlers: dict[int, Any]) -> set[str]:
    return {handler_name(Reason(r)) for r in handlers}


def _check_arity(cls: type, attr: str, fn: Callable[..., Any], nargs: int) -> None:
    """Fail at class creation if a handler cannot take the arguments it will get."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    params = list(sig.parameters.values())[1:]  # drop self
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    if len(required) > nargs or len(positional) < nargs:
        raise DeclarationError(
            f"{cls.__name__}.{attr} must take {nargs} argument(s) after self, "
            f"it takes {len(positional)}"
        )
