"""lws for Python: a cffi binding over the real libwebsockets C library.

Python defines lws protocols; the native lws stack runs them. Each session's
``per_session_data_size`` buffer, allocated by lws in C, is shown to Python as
a typed view that raises :class:`SessionClosed` once lws frees it.

Quick map (C -> Python): ``struct lws_protocols`` -> :class:`Protocol`
subclass; ``lws_create_context`` -> :class:`Context`; ``struct lws *`` ->
:class:`Connection`; ``struct per_session_data__x`` -> a
:class:`session.Struct` (``conn.session``); ``LWS_CALLBACK_RECEIVE`` ->
``lws.RECEIVE`` / ``on_receive``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

from . import c, session
from ._binding import BUILT_VERSION as _BUILT
from ._binding import RUNTIME_VERSION as lws_version
from ._binding import features, require, version_tuple
from ._log import set_lws_log_level
from .connection import Connection, HeaderWriter, Refuse
from .context import Context, TimerHandle
from .errors import (
    BuildError,
    ConnectError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    ContextError,
    DeclarationError,
    FeatureUnavailable,
    LwsError,
    SendQueueFull,
    SessionClosed,
    VersionMismatch,
)
from .fetch import HTTPResult, fetch
from .http import Mount, Request, Response
from .protocol import Protocol
from .reasons import InKind, Reason
from .session import Struct, struct
from .tls import ClientTLS, ServerTLS
from .vhost import Vhost

try:
    __version__ = _dist_version("lws-cffi")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+source"

built_against = _BUILT
"""The libwebsockets version the extension was compiled against."""

__all__ = [
    "BuildError",
    "ClientTLS",
    "ConnectError",
    "Connection",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "Context",
    "ContextError",
    "DeclarationError",
    "FeatureUnavailable",
    "HTTPResult",
    "HeaderWriter",
    "InKind",
    "LwsError",
    "Mount",
    "Protocol",
    "Reason",
    "Refuse",
    "Request",
    "Response",
    "SendQueueFull",
    "ServerTLS",
    "SessionClosed",
    "Struct",
    "TimerHandle",
    "VersionMismatch",
    "Vhost",
    "__version__",
    "built_against",
    "c",
    "features",
    "fetch",
    "lws_version",
    "require",
    "session",
    "set_lws_log_level",
    "struct",
    "version_tuple",
]

# Reasons under their lws names, both spellings: lws.RECEIVE and lws.LWS_CALLBACK_RECEIVE.
for _reason in Reason:
    globals()[_reason.name] = _reason
    globals()["LWS_CALLBACK_" + _reason.name] = _reason
    __all__ += [_reason.name, "LWS_CALLBACK_" + _reason.name]
del _reason
