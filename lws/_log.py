"""lws' own log lines, sent to Python ``logging`` (logger ``lws``).

lws decides what to emit from a bit mask; :func:`set_lws_log_level` maps a
Python level onto that mask. While a context or vhost is being created the
error and warning lines are also collected, so a failure can say why.
"""

from __future__ import annotations

import logging
import threading

from ._binding import ffi, lib

__all__ = ["logger", "set_lws_log_level", "capture"]

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
        sink = getattr(_captures, "lines", None)
        if sink is not None and pylevel >= logging.WARNING:
            sink.append(text)
        logger.log(pylevel, "%s", text)
    except BaseException:  # noqa: BLE001 - nothing may cross into C
        pass


def set_lws_log_level(level: int) -> None:
    """Ask lws to emit lines at Python ``level`` and above (e.g. ``logging.INFO``).

    lws filters in C, so lines below the level cost nothing. The default is
    ``logging.WARNING``. Python's own logger level still applies on top.
    """
    mask = 0
    for bit, pylevel in _LEVELS:
        if pylevel >= level:
            mask |= bit
    lib.lwspy_log_install(mask)


class capture:
    """Collect the error/warning lines lws logs on this thread inside the block."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __enter__(self) -> list[str]:
        self._saved = getattr(_captures, "lines", None)
        _captures.lines = self.lines
        return self.lines

    def __exit__(self, *exc: object) -> None:
        _captures.lines = self._saved


set_lws_log_level(logging.WARNING)
