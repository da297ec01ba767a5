"""Exceptions raised by the binding.

Every error the binding raises derives from :class:`LwsError`, except
:class:`SessionClosed`, which is a :class:`ReferenceError` because it means
"the memory this object stood for is gone", exactly like a dead weakref.
"""

from __future__ import annotations

__all__ = [
    "BuildError",
    "ConnectError",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "ContextError",
    "DeclarationError",
    "FeatureUnavailable",
    "LwsError",
    "SendQueueFull",
    "SessionClosed",
    "VersionMismatch",
]


class LwsError(Exception):
    """Base class of the binding's errors."""


class BuildError(LwsError):
    """The compiled extension is missing or was built wrongly."""


class VersionMismatch(BuildError):
    """The libwebsockets loaded at run time is not the one the extension was built against."""


class FeatureUnavailable(LwsError):
    """The libwebsockets build in use lacks a feature.

    ``option`` names the lws build (cmake) option that provides it.
    """

    def __init__(self, feature: str, option: str) -> None:
        super().__init__(
            f"{feature} is not available: this libwebsockets was built without {option}"
        )
        self.feature = feature
        self.option = option


class ContextError(LwsError):
    """Creating an lws context or vhost failed.

    ``log_lines`` holds what lws logged (error and warning levels) while it
    tried, which usually says why.
    """

    def __init__(self, message: str, log_lines: list[str] | None = None) -> None:
        self.log_lines = list(log_lines or [])
        if self.log_lines:
            message = message + ": " + " | ".join(self.log_lines)
        super().__init__(message)


class ConnectError(LwsError):
    """A client connection could not be made (refused, bad handshake, unresolvable host)."""


class ConnectionClosed(LwsError):
    """The connection is closed; ``code`` and ``reason`` are the close frame's, if any."""

    def __init__(self, message: str, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class ConnectionClosedOK(ConnectionClosed):
    """The connection closed normally (1000, 1001, or no status)."""


class ConnectionClosedError(ConnectionClosed):
    """The connection closed with an error code, or dropped without a close frame."""


class SendQueueFull(LwsError):
    """``send`` would take the connection's send queue past its bound."""


class SessionClosed(ReferenceError):
    """The per-session buffer behind a view was freed by lws.

    Raised by every use of a session view, or of anything taken from it, after
    its lifetime ended. The message names the connection and why it ended.
    """


class DeclarationError(TypeError):
    """A session-data declaration (C struct or annotated class) is malformed."""
