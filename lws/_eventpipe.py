"""lws 4.2.0 to 4.3.5 leave their event pipe open after ``lws_context_destroy()``.

Each context makes an eventfd (lws' "event pipe", what ``lws_cancel_service()``
writes to). On those versions, closing the pipe's wsi skips ``close()`` on the
fd ("the pt destroy will close it") and then forgets it, so the destroy never
does: one fd leaks per context (upstream issues 2744 and 2829; lws'
v4.3-stable branch has the fix). A server started and stopped in a loop runs
out of fds.

So on those versions the binding notes the fd while the context lives (the
eventfd that lws' own fd table maps to a wsi: no other thread's eventfd can
match) and closes it after the destroy if it is still open. It cannot have
been reused meanwhile: it was never closed. Linux only (``/proc/self/fd``);
elsewhere nothing is done.
"""

from __future__ import annotations

import os
from typing import Any

from ._binding import RUNTIME_VERSION, _major_minor_patch, ffi, lib

_FD_DIR = "/proc/self/fd"


LEAKS = (4, 2, 0) <= _major_minor_patch(RUNTIME_VERSION) <= (4, 3, 5)


def _is_eventfd(fd: int) -> bool:
    try:
        return os.readlink(f"{_FD_DIR}/{fd}") == "anon_inode:[eventfd]"
    except OSError:
        return False


def find(ctx: Any) -> int:
    """The event pipe's fd of a live context ``ctx``, or -1 (not a leaking
    version, or not found)."""
    if not LEAKS:
        return -1
    try:
        names = os.listdir(_FD_DIR)
    except OSError:
        return -1
    for name in names:
        fd = int(name)
        # lws' own table first (no system call): right after creation the
        # pipe is all it holds, so at most one readlink per context
        if lib.wsi_from_fd(ctx, fd) != ffi.NULL and _is_eventfd(fd):
            return fd
    return -1


def close_leftover(fd: int) -> None:
    """After ``lws_context_destroy()``: close the event pipe lws left open."""
    if fd >= 0 and _is_eventfd(fd):
        os.close(fd)
