"""lws' own log lines, sent to Python ``logging`` (logger ``lws``).

lws decides what to emit from a bit mask; :func:`set_lws_log_level` maps a
Python level onto that mask. While a context or vhost is being created the
error and warning lines are also collected, so a failure can say why.
"""

from __future__ import annotations

import logging
import threading

from ._binding import ffi, lib

__all__ = ["capture", "logger", "set_lws_log_level"]

logger = logging.getLogger("lws")

_LEVELS = (
    (lib.LLL_ERR, logging.ERROR),
    (lib.LLL_WARN, logging.WARNING),
    (lib.LLL_NOTICE, logging.INFO),
    (lib.LLL_USER, logging.INFO),
    (lib.LLL_INFO, logging.DEBUG),
    (lib.LLL_DEBUG, logging.DEBUG),
    (lib.LLL_CLIENT, logging.DEBUG),
    (lib.LLL_EXT, logging.DEBUG),
    (lib.LLL_HEADER, logging.DEBUG),
    (lib.LLL_PARSER, logging.DEBUG),
    (lib.LLL_LATENCY, logging.DEBUG),
    (lib.LLL_THREAD, logging.DEBUG),
)

_captures = threading.local()


def _python_level(lws_level: int) -> int:
    for bit, level in _LEVELS:
        if lws_level & bit:
            return level
    return logging.DEBUG


@ffi.def_extern()  # type: ignore[untyped-decorator]
def _lwspy_log(level: int, line: object) -> None:
    try:
        text = ffi.string(line).decode("utf-8", "replace").rstrip("\n")
        # lws prefixes its own timestamp and level tag: keep the message part.
        if text.startswith("[") and "] " in text:
            text = text.split("] ", 1)[1]
            if len(text) > 2 and text[1] == ":" and text[0] in "EWNIDPHXCLUT":
                text = text[2:].lstrip()
        pylevel = _python_level(level)
        cap = getattr(_captures, "active", None)
        if cap is not None and level & cap.mask:
            cap.lines.append(text)
        if pylevel >= _state["level"]:
            logger.log(pylevel, "%s", text)
    except BaseException:
        pass


_state = {"level": logging.WARNING}


def _mask(level: int) -> int:
    mask = 0
    for bit, pylevel in _LEVELS:
        if pylevel >= level:
            mask |= bit
    return mask


def _install(level: int) -> None:
    lib.lwspy_log_install(_mask(level))


def set_lws_log_level(level: int) -> None:
    """Ask lws to emit lines at Python ``level`` and above (e.g. ``logging.INFO``).

    lws filters in C, so lines below the level cost nothing. The default is
    ``logging.WARNING``. Python's own logger level still applies on top.
    """
    _state["level"] = level
    _install(level)


ERRORS = lib.LLL_ERR | lib.LLL_WARN
REASONS = ERRORS | lib.LLL_NOTICE | lib.LLL_INFO


class capture:
    """Collect what lws logs on this thread inside the block (lws level bits ``mask``).

    lws says why a client connect failed at notice/info level, so
    ``capture(REASONS)`` enables those levels in lws for the block; lines below
    the level set with :func:`set_lws_log_level` are collected but not passed
    on to ``logging``.
    """

    def __init__(self, mask: int = ERRORS) -> None:
        self.lines: list[str] = []
        self.mask = mask

    def __enter__(self) -> list[str]:
        self._saved = getattr(_captures, "active", None)
        _captures.active = self
        if self.mask != ERRORS:
            lib.lwspy_log_install(self.mask | _mask(_state["level"]))
        return self.lines

    def __exit__(self, *exc: object) -> None:
        _captures.active = self._saved
        if self.mask != ERRORS:
            _install(_state["level"])


_install(logging.WARNING)
