"""Reading request headers and writing small HTTP answers (lws thread only)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._binding import ffi, lib, require
from .errors import LwsError

if TYPE_CHECKING:
    from .connection import Connection

__all__ = [
    "HEADER_TOKENS",
    "TOKENS",
    "http_respond",
    "read_header",
    "read_headers",
    "read_path",
    "read_query",
]


def _token_table() -> dict[str, int]:
    """Header name -> lws token index, read from the running lws (indexes differ by version)."""
    table: dict[str, int] = {}
    for i in range(lib.WSI_TOKEN_COUNT):
        raw = lib.lws_token_to_string(i)
        if raw == ffi.NULL:
            continue
        name = ffi.string(ffi.cast("char *", raw)).decode("latin-1").strip().rstrip(":")
        if name and name not in table:
            table[name.lower()] = i
    return table


TOKENS = _token_table()


def _header_tokens() -> dict[str, int]:
    """Only real header names (lws spells them with a trailing ':'), not methods."""
    table: dict[str, int] = {}
    for i in range(lib.WSI_TOKEN_COUNT):
        raw = lib.lws_token_to_string(i)
        if raw == ffi.NULL:
            continue
        name = ffi.string(ffi.cast("char *", raw)).decode("latin-1")
        if name.endswith(":") and len(name) > 1:
            table.setdefault(name[:-1].lower(), i)
    return table


HEADER_TOKENS = _header_tokens()
_URI_TOKENS = [t for t in (lib.WSI_TOKEN_GET_URI, lib.WSI_TOKEN_POST_URI)]
for _name in ("options", "put", "patch", "delete", "head", ":path"):
    if _name in TOKENS:
        _URI_TOKENS.append(TOKENS[_name])


def _copy_token(wsi: Any, token: int) -> str | None:
    n = lib.lws_hdr_total_length(wsi, token)
    if n <= 0:
        return None
    buf = ffi.new("char[]", n + 1)
    if lib.lws_hdr_copy(wsi, buf, n + 1, token) < 0:
        return None
    return str(ffi.string(buf).decode("utf-8", "replace"))


def read_header(wsi: Any, name: str) -> str | None:
    key = name.lower().rstrip(":")
    token = TOKENS.get(key)
    if token is not None:
        return _copy_token(wsi, token)
    cname = (key + ":").encode("ascii")
    n = lib.lwspy_hdr_custom_length(wsi, cname, len(cname))
    if n == -2:
        require("custom_headers")
    if n < 0:
        return None
    buf = ffi.new("char[]", n + 1)
    if lib.lwspy_hdr_custom_copy(wsi, buf, n + 1, cname, len(cname)) < 0:
        return None
    return str(ffi.string(buf).decode("utf-8", "replace"))


def read_headers(wsi: Any) -> dict[str, str]:
    """Every header lws knows by token that the message carried."""
    out: dict[str, str] = {}
    for name, token in HEADER_TOKENS.items():
        if lib.lws_hdr_total_length(wsi, token) > 0:
            value = _copy_token(wsi, token)
            if value is not None:
                out[name] = value
    return out


def read_path(wsi: Any) -> str:
    for token in _URI_TOKENS:
        value = _copy_token(wsi, token)
        if value is not None:
            return value
    return ""


def read_query(wsi: Any) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    token = lib.WSI_TOKEN_HTTP_URI_ARGS
    size = lib.lws_hdr_total_length(wsi, token)
    if size <= 0:
        return out
    buf = ffi.new("char[]", size + 1)
    idx = 0
    while lib.lws_hdr_copy_fragment(wsi, buf, size + 1, token, idx) >= 0:
        part = ffi.string(buf).decode("utf-8", "replace")
        key, _, value = part.partition("=")
        out.append((urllib.parse.unquote_plus(key), urllib.parse.unquote_plus(value)))
        idx += 1
    return out


def http_respond(conn: Connection, status: int, body: bytes | str, content_type: str,
                 headers: Mapping[str, str] | None) -> int:
    if not 100 <= status <= 599:
        raise ValueError(f"HTTP status must be 100..599, got {status}")
    data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    wsi = conn._wsi
    pre = lib.LWS_PRE
    room = 4096 + sum(len(k) + len(v) + 4 for k, v in (headers or {}).items())
    buf = ffi.new("unsigned char[]", pre + room + len(data))
    start = buf + pre
    end = start + room - 1
    pp = ffi.new("unsigned char **", start)
    fields = [("content-type", content_type), *(headers or {}).items()]
    if lib.lws_add_http_header_status(wsi, status, pp, end):
        raise LwsError("no room for the status line")
    for name, value in fields:
        bname = name.encode("ascii").rstrip(b":") + b":"
        bvalue = value.encode("utf-8")
        if b"\r" in bvalue or b"\n" in bvalue:
            raise ValueError("header values may not contain CR or LF")
        if lib.lws_add_http_header_by_name(wsi, bname, bvalue, len(bvalue), pp, end):
            raise LwsError(f"no room for header {name!r}")
    if lib.lws_add_http_header_content_length(wsi, len(data), pp, end):
        raise LwsError("no room for content-length")
    if lib.lws_finalize_http_header(wsi, pp, end):
        raise LwsError("could not finish the headers")
    n = pp[0] - start
    if lib.lws_write(wsi, start, n, lib.LWS_WRITE_HTTP_HEADERS) != n:
        return -1
    if data:
        ffi.memmove(start, data, len(data))
        if lib.lws_write(wsi, start, len(data), lib.LWS_WRITE_HTTP_FINAL) != len(data):
            return -1
    return 1 if lib.lws_http_transaction_completed(wsi) else 0
