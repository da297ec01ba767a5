"""The one place that imports the compiled module ``lws._lws``.

It checks, at import, that the libwebsockets loaded at run time is the one the
extension was compiled against, and exposes the build's feature flags.
Everything else in the package goes through ``ffi`` and ``lib`` from here.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from .errors import BuildError, FeatureUnavailable, VersionMismatch

try:
    from ._lws import ffi as _ffi
    from ._lws import lib as _lib
except ImportError as exc:  # pragma: no cover - depends on the install
    raise BuildError(
        "the compiled part of lws-cffi (lws._lws) could not be loaded: "
        f"{exc}. Reinstall the package (pip install .) against an installed "
        "libwebsockets (Debian/Ubuntu: libwebsockets-dev)."
    ) from exc

ffi: Any = _ffi
lib: Any = _lib

# The per-message calls, as CPython functions that keep the GIL (fastcall.c);
# they take pointers as ints: addr(p).
if lib.lwspy_fastcall_install() != 0:  # pragma: no cover - out of memory at import
    raise BuildError("lws._lws could not set up its fast calls")
_module = importlib.import_module("._lws", __package__)
fast_native_service: Any = _module.fast_native_service
fast_send: Any = _module.fast_send
fast_write_now: Any = _module.fast_write_now
fast_uv_service: Any = _module.fast_uv_service
fast_bridge_consumed: Any = _module.fast_bridge_consumed
fast_bridge_deliver: Any = _module.fast_bridge_deliver
fast_set_deliver: Any = _module.fast_set_deliver


def addr(pointer: Any) -> int:
    """A cdata pointer as an int (0 for NULL): what the fast_* functions take."""
    return int(ffi.cast("uintptr_t", pointer))


BUILT_VERSION: str = ffi.string(lib.LWSPY_BUILT_VERSION).decode()
RUNTIME_VERSION: str = ffi.string(lib.lws_get_library_version()).decode()


def _major_minor_patch(version: str) -> tuple[int, ...]:
    """(4, 1, 6) from "4.1.6-", "4.3.5-unknown" or "4.3.5-v4.3.5-12-gabc"."""
    found = re.match(r"\s*(\d+)\.(\d+)(?:\.(\d+))?", version)
    if found is None:
        return (0, 0, 0)
    return tuple(int(part or 0) for part in found.groups())


if _major_minor_patch(BUILT_VERSION) != _major_minor_patch(RUNTIME_VERSION):
    raise VersionMismatch(
        f"lws-cffi was compiled against libwebsockets {BUILT_VERSION} but "
        f"libwebsockets {RUNTIME_VERSION} was loaded at run time; rebuild the "
        "package against the library you run with (or fix the library path)"
    )

# Feature flag -> (lws build option that provides it, value in this build).
_FEATURES: dict[str, tuple[str, bool]] = {
    "tls": ("LWS_WITH_SSL", bool(lib.LWSPY_HAS_TLS)),
    "http2": ("LWS_WITH_HTTP2", bool(lib.LWSPY_HAS_HTTP2)),
    "permessage_deflate": ("LWS_WITHOUT_EXTENSIONS=OFF", bool(lib.LWSPY_HAS_EXTENSIONS)),
    "ipv6": ("LWS_IPV6", bool(lib.LWSPY_HAS_IPV6)),
    "unix_sockets": ("LWS_UNIX_SOCK", bool(lib.LWSPY_HAS_UNIX_SOCK)),
    "external_poll": ("LWS_WITH_EXTERNAL_POLL", bool(lib.LWSPY_HAS_EXTERNAL_POLL)),
    "custom_headers": ("LWS_WITH_CUSTOM_HEADERS", bool(lib.LWSPY_HAS_CUSTOM_HEADERS)),
    "libuv": ("LWS_WITH_LIBUV", bool(lib.LWSPY_HAS_LIBUV)),
    "event_lib_custom": ("lws >= 4.3 (info.event_lib_custom)",
                         bool(lib.LWSPY_HAS_EVENT_LIB_CUSTOM)),
    "client": ("LWS_WITHOUT_CLIENT=OFF", bool(lib.LWSPY_HAS_CLIENT)),
    "server": ("LWS_WITHOUT_SERVER=OFF", bool(lib.LWSPY_HAS_SERVER)),
}

features: dict[str, bool] = {name: have for name, (_, have) in _FEATURES.items()}


def require(feature: str) -> None:
    """Raise :class:`FeatureUnavailable` if this lws build lacks ``feature``."""
    option, have = _FEATURES[feature]
    if not have:
        raise FeatureUnavailable(feature, option)


def version_tuple() -> tuple[int, ...]:
    """(major, minor, patch) of the running libwebsockets."""
    return _major_minor_patch(RUNTIME_VERSION)
