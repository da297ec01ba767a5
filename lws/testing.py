"""Helpers for tests that run the real lws: a callback recorder and loop drivers.

Used by the project's own tests; written to be reused by applications' tests
(the pytest plugin builds on it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .connection import Connection
from .context import Context
from .errors import SessionClosed
from .protocol import Protocol
from .reasons import BIND_REASONS, DROP_REASONS, Reason

__all__ = ["Event", "LifecycleError", "Recorder", "pump", "serving"]


class LifecycleError(AssertionError):
    """A recorded callback sequence broke one of lws' invariants."""


@dataclass
class Event:
    """One callback as the recorder saw it."""

    conn_id: int | None
    reason: Reason
    address: int | None = None          # the session buffer's address, if any
    snapshot: dict[str, Any] | None = None  # the session's fields at callback time
    value: Any = None                   # the converted ``in``
    extra: dict[str, Any] = field(default_factory=dict)


class Recorder:
    """Collects :class:`Event` objects; checks lws' lifecycle invariants.

    Mix it into a protocol with :func:`recording` or call :meth:`record`
    from a raw ``callback``.
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.lock = threading.Lock()

    def record(self, conn: Connection | None, reason: Reason, session: Any, value: Any) -> Event:
        address = snapshot = None
        if session is not None:
            address = session.address
            snapshot = session.to_dict()
        ev = Event(conn.id if conn is not None else None, reason, address, snapshot, value)
        with self.lock:
            self.events.append(ev)
        return ev

    def reasons(self, conn_id: int | None = None) -> list[Reason]:
        """The reasons recorded (for one connection, if given), in order."""
        with self.lock:
            return [e.reason for e in self.events if conn_id is None or e.conn_id == conn_id]

    def conn_ids(self) -> list[int]:
        with self.lock:
            seen: dict[int, None] = {}
            for e in self.events:
                if e.conn_id is not None:
                    seen.setdefault(e.conn_id, None)
            return list(seen)

    def check(self) -> None:
        """Assert lws' invariants on every recorded connection.

        * nothing after ``WSI_DESTROY``;
        * a client ends with ``CLIENT_CONNECTION_ERROR`` or ``CLIENT_CLOSED``, never both;
        * BIND and DROP alternate (no DROP without a BIND before it).
        """
        for cid in self.conn_ids():
            seq = self.reasons(cid)
            if Reason.WSI_DESTROY in seq and seq[-1] is not Reason.WSI_DESTROY:
                after = seq[seq.index(Reason.WSI_DESTROY) + 1:]
                raise LifecycleError(f"connection {cid}: {after} after WSI_DESTROY")
            if Reason.CLIENT_CONNECTION_ERROR in seq and Reason.CLIENT_CLOSED in seq:
                raise LifecycleError(f"connection {cid}: both CONNECTION_ERROR and CLOSED")
            bound = False
            for r in seq:
                if r in BIND_REASONS:
                    bound = True
                elif r in DROP_REASONS:
                    if not bound:
                        raise LifecycleError(f"connection {cid}: {r.name} without a bind")
                    bound = False


def recording(base: type[Protocol], recorder: Recorder,
              reasons: frozenset[Reason] | None = None) -> type[Protocol]:
    """A subclass of ``base`` whose raw callback records every reason.

    The base's Pythonic handlers still run first and their results count;
    the raw callback then records the reason.
    """

    def callback(self: Protocol, conn: Connection | None, reason: Reason, session: Any,
                 value: Any) -> None:
        try:
            recorder.record(conn, reason, session, value)
        except SessionClosed:
            recorder.record(conn, reason, None, value)

    ns: dict[str, Any] = {"callback": callback, "raw_reasons": reasons}
    return type(base.__name__ + "Recorded", (base,), ns)


def pump(ctx: Context, until: Callable[[], bool], timeout: float = 5.0,
         step: float = 0.02) -> None:
    """Service ``ctx`` on this thread until ``until()`` is true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        ctx.service(step)


@contextmanager
def serving(ctx: Context) -> Iterator[Context]:
    """Run ``ctx`` on a background thread for the block; stop and close it after."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            ctx.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="lws-service", daemon=True)
    thread.start()
    try:
        yield ctx
    finally:
        ctx.stop()
        thread.join(10)
        if thread.is_alive():
            raise TimeoutError("lws service thread did not stop")
        ctx.close()
    if errors:
        raise errors[0]
