"""The per-session guard that makes session views safe against lws' free.

lws frees a session buffer only on the thread that is running lws (inside
``lws_service()`` or ``lws_context_destroy()``), and only after the final
callback for it returns. So:

* on that thread a plain ``alive`` check is enough: nothing can free the buffer
  between the check and the access, and the hot path takes no lock;
* any other thread takes ``lock`` around check-and-access; the lws thread takes
  the same lock once, in the final callback, to clear ``alive``. A reader
  either finishes before that or sees ``alive`` false and raises.

This does not rely on the GIL, so it holds on free-threaded CPython too.
"""

from __future__ import annotations

import threading

from .errors import SessionClosed

__all__ = ["Guard", "LwsThread"]


class LwsThread:
    """Which thread is running lws right now (``None`` when no thread is).

    Shared by every guard of one context.
    """

    __slots__ = ("ident",)

    def __init__(self) -> None:
        self.ident: int | None = None


class Guard:
    """Liveness of one session buffer, shared by every view made over it."""

    __slots__ = ("alive", "label", "lock", "owner", "why")

    def __init__(self, owner: LwsThread, label: object) -> None:
        self.alive = True
        self.lock = threading.Lock()
        self.owner = owner
        self.label = label
        self.why = ""

    def kill(self, why: str) -> None:
        """Mark the buffer freed; called on the lws thread before lws frees it."""
        with self.lock:
            self.alive = False
            self.why = why

    def closed(self) -> SessionClosed:
        """The exception to raise for a use after :meth:`kill`."""
        # label is formatted only here, so making a guard costs no string work.
        return SessionClosed(f"session data of {self.label} is gone: {self.why}")

    def on_lws_thread(self) -> bool:
        """True when the caller is the thread running lws (no lock needed)."""
        return threading.get_ident() == self.owner.ident
