"""Helpers for tests that run the real lws: a lifecycle recorder, loop drivers, clients.

Used by the project's own tests and by the pytest plugin (:mod:`lws.pytest_plugin`);
everything here also works without pytest.

* :class:`Recorder` and :func:`recording` record every callback lws delivers to
  a protocol and check lws' lifecycle invariants (:meth:`Recorder.check`),
  including "no session view used after lws freed its buffer".
* :func:`pump` drives a context on the calling thread; :func:`serving` and
  :func:`server` run one on a background thread.
* :func:`client` connects a client protocol (by default a :class:`MessageClient`)
  from a context of its own on a background thread, and returns a
  :class:`Client` with waiting helpers.
"""

from __future__ import annotations

import functools
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .connection import Connection, Refuse
from .context import Context
from .errors import ConnectError, ConnectionClosed, SessionClosed
from .protocol import Protocol
from .reasons import BIND_REASONS, DROP_REASONS, Reason

__all__ = [
    "BackgroundLoop",
    "Client",
    "ClientFactory",
    "Event",
    "LifecycleError",
    "MessageClient",
    "Recorder",
    "ServerFactory",
    "UseAfterFree",
    "client",
    "pump",
    "recording",
    "run_on_lws_thread",
    "server",
    "serving",
    "wait_until",
    "ws_url",
]

_P = TypeVar("_P", bound=Protocol)
_T = TypeVar("_T")


class LifecycleError(AssertionError):
    """A recorded callback sequence broke one of lws' invariants."""


@dataclass
class Event:
    """One callback as the recorder saw it.

    ``conn_id`` is the connection's id, unique within one context;
    ``context`` numbers the contexts one recorder saw (0, 1, ...), so
    ``(context, conn_id)`` names one connection. ``protocol`` is the name of
    the protocol that received the callback.
    """

    conn_id: int | None
    reason: Reason
    address: int | None = None          # the session buffer's address, if any
    snapshot: dict[str, Any] | None = None  # the session's fields at callback time
    value: Any = None                   # the converted ``in``
    extra: dict[str, Any] = field(default_factory=dict)
    context: int = 0
    protocol: str | None = None


@dataclass
class UseAfterFree:
    """A :class:`~lws.SessionClosed` raised while a recorded handler ran.

    Recorded when the exception is *created*, so it counts whether the
    handler let it escape (``escaped``) or caught and swallowed it.
    """

    protocol: str                       # the protocol's name
    handler: str                        # the handler's qualified name ("Chat.on_closed")
    conn_id: int | None
    message: str
    where: str                          # "file:line in function" of the access
    escaped: bool = False
    exception: SessionClosed | None = field(default=None, repr=False)

    def __str__(self) -> str:
        how = "raised out of the handler" if self.escaped else "caught inside the handler"
        return (f"{self.handler} (protocol {self.protocol!r}, connection {self.conn_id}) used "
                f"a freed session view at {self.where}: {self.message} [{how}]")


class Recorder:
    """Collects :class:`Event` objects; checks lws' lifecycle invariants.

    Mix it into a protocol with :func:`recording`, :meth:`recorded` or
    :meth:`instrument`, or call :meth:`record` from a raw ``callback``.
    Thread-safe: callbacks of several contexts may record into one recorder.
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.violations: list[UseAfterFree] = []
        self.errors: list[tuple[str, Exception]] = []  # (handler, what escaped it)
        self.lock = threading.Lock()
        self._contexts: list[Context] = []

    # -- recording -----------------------------------------------------------

    def _context_number(self, ctx: Context) -> int:
        for i, known in enumerate(self._contexts):
            if known is ctx:
                return i
        self._contexts.append(ctx)
        return len(self._contexts) - 1

    def record(self, conn: Connection | None, reason: Reason, session: Any, value: Any,
               *, protocol: str | None = None) -> Event:
        """Append one event (the session's address and fields are copied now)."""
        address = snapshot = None
        if session is not None:
            try:
                address = session.address
                snapshot = session.to_dict()
            except SessionClosed:
                address = snapshot = None
        with self.lock:
            number = self._context_number(conn.context) if conn is not None else 0
            ev = Event(conn.id if conn is not None else None, reason, address, snapshot, value,
                       context=number, protocol=protocol)
            self.events.append(ev)
        return ev

    def recorded(self, base: type[_P], reasons: frozenset[Reason] | None = None) -> type[_P]:
        """``recording(base, self, reasons)``: a recording subclass of ``base``."""
        return recording(base, self, reasons)

    def instrument(self, protocol: _P) -> _P:
        """Make an existing protocol instance record into this recorder; returns it.

        Swaps the instance's class for a :func:`recording` subclass, so it must
        happen before the instance is given to a :class:`~lws.Context`.
        """
        if getattr(type(protocol), "_lws_recorder", None) is self:
            return protocol
        if protocol._context is not None:
            raise ValueError(f"{protocol!r} already belongs to a Context: instrument it before")
        protocol.__class__ = recording(type(protocol), self)
        return protocol

    # -- reading -------------------------------------------------------------

    def reasons(self, conn: int | Connection | None = None) -> list[Reason]:
        """The reasons recorded, in order: all, or those of one connection.

        ``conn`` is a :class:`~lws.Connection` or a connection id (an id
        matches that id in every context the recorder saw).
        """
        with self.lock:
            if conn is None:
                return [e.reason for e in self.events]
            if isinstance(conn, Connection):
                number = self._context_number(conn.context)
                return [e.reason for e in self.events
                        if e.conn_id == conn.id and e.context == number]
            return [e.reason for e in self.events if e.conn_id == conn]

    def conn_ids(self) -> list[int]:
        """The connection ids seen, in order of first appearance."""
        with self.lock:
            seen: dict[int, None] = {}
            for e in self.events:
                if e.conn_id is not None:
                    seen.setdefault(e.conn_id, None)
            return list(seen)

    def sequences(self) -> dict[tuple[int, int], list[Event]]:
        """Events per connection, keyed by ``(context number, connection id)``."""
        with self.lock:
            out: dict[tuple[int, int], list[Event]] = {}
            for e in self.events:
                if e.conn_id is not None:
                    out.setdefault((e.context, e.conn_id), []).append(e)
            return out

    # -- checking ------------------------------------------------------------

    def problems(self) -> list[str]:
        """Every broken invariant, as readable lines (empty when all hold).

        Per connection (``(context, id)``):

        * nothing after ``WSI_DESTROY``, which comes at most once;
        * a client ends with ``CLIENT_CONNECTION_ERROR`` or ``CLIENT_CLOSED``,
          never both;
        * ``*_BIND_PROTOCOL`` and ``*_DROP_PROTOCOL`` alternate for each
          protocol (no DROP without a BIND, no second BIND before the DROP),
          and once ``WSI_DESTROY`` came every BIND of a session buffer had its
          DROP (lws sends no DROP at close for a protocol without session data);

        and no recorded handler used a session view after its buffer was
        freed (see :class:`UseAfterFree`).
        """
        found: list[str] = []
        for (ctx_no, cid), events in self.sequences().items():
            name = f"connection {cid}" + (f" of context {ctx_no}" if ctx_no else "")
            seq = [e.reason for e in events]
            destroys = [i for i, r in enumerate(seq) if r is Reason.WSI_DESTROY]
            if destroys and destroys[0] != len(seq) - 1:
                after = [r.name for r in seq[destroys[0] + 1:]]
                found.append(f"{name}: {after} after WSI_DESTROY")
            if Reason.CLIENT_CONNECTION_ERROR in seq and Reason.CLIENT_CLOSED in seq:
                found.append(f"{name}: both CLIENT_CONNECTION_ERROR and CLIENT_CLOSED")
            bound: dict[str | None, Event] = {}
            for e in events:
                if e.reason in BIND_REASONS:
                    if e.protocol in bound:
                        found.append(f"{name}: {e.reason.name} while {e.protocol!r} is still "
                                     f"bound ({bound[e.protocol].reason.name} had no DROP)")
                    bound[e.protocol] = e
                elif e.reason in DROP_REASONS:
                    if e.protocol not in bound:
                        found.append(f"{name}: {e.reason.name} to {e.protocol!r} without a bind")
                    bound.pop(e.protocol, None)
            # On close lws sends the DROP only when there is a session buffer.
            left = [b for b in bound.values() if b.address is not None]
            if destroys and left:
                names = ", ".join(f"{b.reason.name} ({b.protocol!r})" for b in left)
                found.append(f"{name}: ended (WSI_DESTROY) with no DROP for {names}")
        with self.lock:
            found += [str(v) for v in self.violations]
        return found

    def check(self) -> None:
        """Raise :class:`LifecycleError` listing every broken invariant (see :meth:`problems`)."""
        found = self.problems()
        if found:
            raise LifecycleError("lws lifecycle invariants broken:\n  " + "\n  ".join(found))


# ---------------------------------------------------------------------------
# Seeing a use-after-free that user code swallowed
# ---------------------------------------------------------------------------
#
# A handler that catches SessionClosed hides the bug from every wrapper. So the
# recording subclass marks "a recorded handler is running on this thread"
# (a thread-local stack of scopes), and SessionClosed's constructor, patched
# once, reports each instance created inside such a scope to its recorder.
# Outside a recorded handler (worker threads, the binding's own checks, a test
# asserting pytest.raises(SessionClosed)) the hook does nothing.

@dataclass
class _Scope:
    recorder: Recorder
    protocol: str
    handler: str
    conn_id: int | None


_scopes = threading.local()
_hook_lock = threading.Lock()
_hook_installed = False
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _stack() -> list[_Scope]:
    stack: list[_Scope] | None = getattr(_scopes, "stack", None)
    if stack is None:
        stack = _scopes.stack = []
    return stack


def _access_site() -> str:
    """The innermost frame outside this package: where user code touched the view."""
    for frame in reversed(traceback.extract_stack()):
        if not os.path.abspath(frame.filename).startswith(_PACKAGE_DIR + os.sep):
            return f"{os.path.basename(frame.filename)}:{frame.lineno} in {frame.name}"
    return "?"


def _note_session_closed(exc: SessionClosed) -> None:
    stack = getattr(_scopes, "stack", None)
    if not stack:
        return
    scope = stack[-1]
    violation = UseAfterFree(scope.protocol, scope.handler, scope.conn_id, str(exc),
                             _access_site(), exception=exc)
    with scope.recorder.lock:
        scope.recorder.violations.append(violation)


def _install_session_closed_hook() -> None:
    global _hook_installed
    with _hook_lock:
        if _hook_installed:
            return
        base_init = SessionClosed.__init__

        def __init__(self: SessionClosed, *args: Any) -> None:
            base_init(self, *args)
            _note_session_closed(self)

        setattr(SessionClosed, "__init__", __init__)  # noqa: B010
        _hook_installed = True


def _scoped(recorder: Recorder, fn: Callable[..., Any], handler: str) -> Callable[..., Any]:
    """Wrap one handler: mark the scope; note exceptions that escape it."""

    handler = getattr(fn, "__qualname__", handler)

    @functools.wraps(fn)
    def wrapper(self: Protocol, *args: Any) -> Any:
        conn = args[0] if args and isinstance(args[0], Connection) else None
        stack = _stack()
        stack.append(_Scope(recorder, self.name, handler, conn.id if conn is not None else None))
        try:
            return fn(self, *args)
        except SessionClosed as exc:
            with recorder.lock:
                for v in recorder.violations:
                    if v.exception is exc:
                        v.escaped = True
            raise
        except Refuse:
            raise
        except Exception as exc:
            with recorder.lock:
                recorder.errors.append((handler, exc))
            raise
        finally:
            stack.pop()

    return wrapper


def recording(base: type[_P], recorder: Recorder,
              reasons: frozenset[Reason] | None = None) -> type[_P]:
    """A subclass of ``base`` that records every reason into ``recorder``.

    The base's Pythonic handlers still run first and their results count;
    then a raw callback records the reason (and calls the base's own raw
    ``callback``, if it has one, for the reasons it wanted). Each of the
    base's handlers runs in a scope the recorder watches: a
    :class:`~lws.SessionClosed` created inside one is a :class:`UseAfterFree`,
    caught or not; an exception escaping one is added to ``recorder.errors``.
    ``reasons`` limits what is recorded (default: every reason).
    """
    _install_session_closed_hook()
    base_callback: Callable[..., Any] | None = getattr(base, "callback", None)
    base_raw = base._raw_wanted
    wrapped_callback = _scoped(recorder, base_callback, "callback") \
        if base_callback is not None else None

    recorded = None if reasons is None else frozenset(int(r) for r in reasons)
    # The raw callback must still receive what the base's own callback wanted.
    wanted = None if reasons is None else \
        frozenset(reasons) | frozenset(Reason(r) for r in base_raw)

    def callback(self: Protocol, conn: Connection | None, reason: Reason, session: Any,
                 value: Any) -> Any:
        result = None
        if wrapped_callback is not None and int(reason) in base_raw:
            result = wrapped_callback(self, conn, reason, session, value)
        if recorded is None or int(reason) in recorded:
            recorder.record(conn, reason, session, value, protocol=self.name)
        return result

    ns: dict[str, Any] = {
        "__slots__": (),
        "__module__": base.__module__,
        "__qualname__": base.__qualname__ + "Recorded",
        "callback": callback,
        "raw_reasons": wanted,
        "_lws_recorder": recorder,
    }
    for attr in dir(base):
        if attr.startswith("on_"):
            fn = getattr(base, attr)
            if callable(fn):
                ns[attr] = _scoped(recorder, fn, attr)
    return type(base.__name__ + "Recorded", (base,), ns)


# ---------------------------------------------------------------------------
# Driving loops
# ---------------------------------------------------------------------------

def pump(ctx: Context, until: Callable[[], bool], timeout: float = 5.0,
         step: float = 0.02) -> None:
    """Service ``ctx`` on this thread until ``until()`` is true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        ctx.service(step)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0, *,
               interval: float = 0.01, message: str | None = None) -> None:
    """Poll ``condition()`` from this thread until it is true; ``TimeoutError`` after ``timeout``.

    For a context served on another thread (:func:`serving`); with a context
    you drive yourself use :func:`pump`.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(message or f"condition not met within {timeout}s")
        time.sleep(interval)


class BackgroundLoop:
    """``ctx.run()`` on a daemon thread, with a bounded, repeatable :meth:`stop`.

    ``error`` holds an exception that ended :meth:`Context.run` (a
    ``BaseException`` raised in a handler), if any.
    """

    def __init__(self, ctx: Context, name: str = "lws-service") -> None:
        self.context = ctx
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self.context.run()
        except BaseException as exc:
            self.error = exc

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop and join its thread; ``TimeoutError`` if it will not stop.

        ``stop()`` is repeated until the thread ends: one that arrives before
        :meth:`Context.run` started would otherwise be lost.
        """
        if self._thread.ident is None:
            return
        deadline = time.monotonic() + timeout
        while self._thread.is_alive():
            self.context.stop()
            self._thread.join(0.05)
            if time.monotonic() > deadline:
                raise TimeoutError(f"the lws service thread did not stop within {timeout}s")


@contextmanager
def serving(ctx: Context) -> Iterator[Context]:
    """Run ``ctx`` on a background thread for the block; stop and close it after.

    An exception that ended the loop (a ``BaseException`` from a handler) is
    re-raised when the block ends.
    """
    loop = BackgroundLoop(ctx)
    loop.start()
    try:
        yield ctx
    finally:
        try:
            loop.stop()
        finally:
            if not loop.running:
                ctx.close()
    if loop.error is not None:
        raise loop.error


def run_on_lws_thread(ctx: Context, fn: Callable[..., _T], *args: Any,
                      timeout: float = 5.0) -> _T:
    """Call ``fn(*args)`` on the thread running ``ctx`` and return its result.

    For reading what only the lws thread may read (request headers, a
    connection's session between callbacks) from a test thread while the
    context is served with :func:`serving`. Exceptions propagate.
    """
    done = threading.Event()
    box: list[Any] = []

    def call() -> None:
        try:
            box.append((True, fn(*args)))
        except BaseException as exc:
            box.append((False, exc))
        finally:
            done.set()

    ctx.call_soon_threadsafe(call)
    if not done.wait(timeout):
        raise TimeoutError(f"the lws thread did not run {fn!r} within {timeout}s")
    ok, value = box[0]
    if not ok:
        raise value
    result: _T = value
    return result


def ws_url(ctx: Context, path: str = "/", *, host: str = "127.0.0.1",
           scheme: str = "ws") -> str:
    """``ws://127.0.0.1:<port><path>`` for a listening context."""
    if not path.startswith("/"):
        path = "/" + path
    return f"{scheme}://{host}:{ctx.port}{path}"


@contextmanager
def server(*protocols: Protocol | type[Protocol], host: str = "127.0.0.1", port: int = 0,
           recorder: Recorder | None = None, **options: Any) -> Iterator[Context]:
    """A listening context (ephemeral port by default) served on a background thread.

    ``protocols`` are instances, or classes made with no arguments.
    ``recorder`` instruments each one (:meth:`Recorder.instrument`).
    ``options`` go to :class:`~lws.Context`. Stopped and closed after the block.
    """
    instances = [_instance(p, recorder) for p in protocols]
    ctx = Context(instances, port=port, host=host, **options)
    try:
        with serving(ctx):
            yield ctx
    finally:
        if not ctx.closed:
            ctx.close()


def _instance(p: Protocol | type[Protocol], recorder: Recorder | None) -> Protocol:
    inst = p() if isinstance(p, type) else p
    return recorder.instrument(inst) if recorder is not None else inst


# ---------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------

_CLOSED = object()


class MessageClient(Protocol):
    """A client protocol that collects what arrives, for :meth:`Client.recv`.

    Subclass it to add behaviour; call ``super()`` in the handlers you override.
    """

    name = "lws-testing-client"

    def __init__(self) -> None:
        self.messages: list[str | bytes] = []
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.established = threading.Event()
        self.finished = threading.Event()

    def on_client_established(self, conn: Connection) -> None:
        self.established.set()

    def on_message(self, conn: Connection, message: str | bytes) -> None:
        self.messages.append(message)
        self.inbox.put(message)

    def on_client_closed(self, conn: Connection) -> None:
        self.finished.set()
        self.inbox.put(_CLOSED)

    def on_client_connection_error(self, conn: Connection, message: str) -> None:
        self.finished.set()
        self.inbox.put(_CLOSED)


class Client:
    """A client connection whose context runs on a background thread (see :func:`client`).

    ``protocol`` is the client protocol instance, ``connection`` the
    :class:`~lws.Connection`, ``context`` its own client-only context.
    """

    def __init__(self, loop: BackgroundLoop, protocol: Protocol, connection: Connection) -> None:
        self._loop = loop
        self.context = loop.context
        self.protocol = protocol
        self.connection = connection

    def wait(self, condition: Callable[[], bool], timeout: float = 5.0,
             message: str | None = None) -> None:
        """Wait until ``condition()`` (evaluated on this thread) is true.

        Raises ``TimeoutError`` after ``timeout``, or at once what ended the
        client's loop if it died.
        """
        def ready() -> bool:
            if self._loop.error is not None:
                raise self._loop.error
            return condition()

        wait_until(ready, timeout, message=message)

    def wait_established(self, timeout: float = 5.0) -> Client:
        """Wait for the WebSocket handshake; :class:`~lws.ConnectError` if it failed."""
        conn = self.connection
        self.wait(lambda: conn.closed or conn in self.protocol.connections(), timeout,
                  "the WebSocket handshake did not complete in time")
        if conn.closed and conn not in self.protocol.connections():
            raise ConnectError(conn.error or "the connection closed before it was established")
        return self

    def wait_closed(self, timeout: float = 5.0) -> Client:
        """Wait until lws reports the connection closed (or failed)."""
        self.wait(lambda: self.connection.closed, timeout, "the connection did not close in time")
        return self

    def send(self, data: str | bytes) -> None:
        """``connection.send(data)`` (thread-safe)."""
        self.connection.send(data)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """``connection.close(code, reason)`` (thread-safe)."""
        self.connection.close(code, reason)

    def recv(self, timeout: float = 5.0) -> str | bytes:
        """The next message, with a :class:`MessageClient` protocol.

        Raises ``TimeoutError`` if none arrives in time and
        :class:`~lws.ConnectionClosed` once the connection closed and every
        message was read.
        """
        proto = self.protocol
        if not isinstance(proto, MessageClient):
            raise TypeError("recv() needs a lws.testing.MessageClient protocol (or a subclass)")
        try:
            item = proto.inbox.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no message within {timeout}s") from None
        if item is _CLOSED:
            proto.inbox.put(_CLOSED)
            conn = self.connection
            raise ConnectionClosed(conn.error or f"{conn!r} is closed", conn.close_code,
                                   conn.close_reason)
        message: str | bytes = item
        return message

    def __repr__(self) -> str:
        return f"<lws.testing.Client {self.connection!r}>"


_DEFAULT: Any = object()


@contextmanager
def client(target: str | Context, protocol: Protocol | type[Protocol] | None = None, *,
           path: str = "/", subprotocol: str | None = _DEFAULT,
           recorder: Recorder | None = None, **connect_options: Any) -> Iterator[Client]:
    """Connect ``protocol`` to ``target`` from a client context on a background thread.

    ``target`` is a ``ws://``/``wss://`` URL, or a listening :class:`~lws.Context`
    (then ``ws://127.0.0.1:<its port><path>``). ``protocol``: an instance or a
    class (made with no arguments); default a fresh :class:`MessageClient`.
    ``subprotocol``: as in :meth:`Context.connect` (default: the protocol's
    name; ``None``, the default for :class:`MessageClient`, asks for none).
    Other keywords go to :meth:`Context.connect`. ``recorder`` instruments the
    protocol. Raises :class:`~lws.ConnectError` when lws cannot start the
    connection; the handshake itself is not awaited (use
    :meth:`Client.wait_established`). The context is closed after the block.
    """
    url = ws_url(target, path) if isinstance(target, Context) else target
    proto = _instance(protocol if protocol is not None else MessageClient, recorder)
    if subprotocol is _DEFAULT:
        subprotocol = None if isinstance(proto, MessageClient) and \
            type(proto).name == MessageClient.name else ""
    ctx = Context([proto])
    try:
        conn = ctx.connect(url, proto, subprotocol=subprotocol, **connect_options)
        loop = BackgroundLoop(ctx, name="lws-client")
        loop.start()
        try:
            yield Client(loop, proto, conn)
        finally:
            loop.stop()
        if loop.error is not None:
            raise loop.error
    finally:
        if not ctx.closed:
            ctx.close()


ServerFactory = Callable[..., Context]
"""The type of the ``lws_server`` fixture: ``lws_server(*protocols, **options) -> Context``."""

ClientFactory = Callable[..., Client]
"""The type of the ``lws_client`` fixture: ``lws_client(target, protocol=None, **options)``."""
