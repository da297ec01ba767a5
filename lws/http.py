"""HTTP serving on the native stack: mounts, requests, responses.

A protocol that defines ``on_request(conn, request)`` answers HTTP requests
that reach it (protocols[0] of a vhost gets every request no mount takes; a
callback mount sends a URL prefix to a named protocol). The handler returns a
:class:`Response`, or ``None`` for 404. The binding reads the body (up to
``Protocol.max_body_size``, else 413 and the connection closes), writes the
headers, then the body one ``lws_write`` per ``HTTP_WRITEABLE`` (so it works
on HTTP/2 streams too), and completes the transaction so keep-alive goes on.
With ``on_request_body(conn, request, chunk)`` the body is handed over chunk
by chunk as it arrives (``request.body`` stays empty) and ``on_request``
runs once it is complete.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._binding import ffi, lib
from ._headers import TOKENS, read_header, read_headers, read_path, read_query
from .reasons import Reason as _R

if TYPE_CHECKING:
    from .connection import Connection
    from .protocol import Protocol

__all__ = ["Mount", "Request", "Response"]

logger = logging.getLogger("lws")

_CHUNK = 32 * 1024            # body bytes per lws_write
_HEADER_ROOM = 4096
_ILLEGAL_LEN = 0xFFFF_FFFF_FFFF_FFFF  # LWS_ILLEGAL_HTTP_CONTENT_LEN: chunked on h1
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_METHOD_TOKENS = [(m.upper(), TOKENS[m]) for m in
                  ("get", "post", "options", "put", "patch", "delete", "head")
                  if m in TOKENS]


@dataclass(frozen=True)
class Mount:
    """A URL prefix served by lws itself (``struct lws_http_mount``).

    Exactly one of ``directory`` (files, with lws' MIME types and
    ``default`` index), ``protocol`` (requests under ``url`` go to that
    protocol's handlers) or ``redirect`` (a URL to redirect to) is set.
    lws refuses paths that climb out of ``directory``.
    """

    url: str
    directory: str | os.PathLike[str] | None = None
    default: str | None = "index.html"
    protocol: str | None = None
    redirect: str | None = None
    cache_max_age: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith("/"):
            raise ValueError(f"a mount's url must start with '/', got {self.url!r}")
        if len(self.url.encode()) > 255:
            raise ValueError("a mount's url is at most 255 bytes")
        kinds = [k for k in (self.directory, self.protocol, self.redirect) if k is not None]
        if len(kinds) != 1:
            raise ValueError("a Mount needs exactly one of directory=, protocol=, redirect=")
        if self.directory is not None and not os.path.isdir(os.fspath(self.directory)):
            raise FileNotFoundError(f"mount directory {os.fspath(self.directory)!r} "
                                    "does not exist")
        if self.redirect is not None and not self.redirect.startswith(("http://", "https://")):
            raise ValueError("redirect= must be an http:// or https:// URL")
        if self.cache_max_age < 0:
            raise ValueError("cache_max_age must be >= 0")


@dataclass
class Request:
    """One HTTP request, as a handler sees it. Valid beyond the callback (a copy)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""
    http2: bool = False
    _wsi: Any = field(default=None, repr=False, compare=False)

    def header(self, name: str) -> str | None:
        """A header by name, case-insensitive.

        Headers lws knows by token are in :attr:`headers` and readable at any
        time. Any other header is read from lws, so only while the handler
        that received the request runs (lws 4.1 cannot list unknown headers).
        """
        key = name.lower().rstrip(":")
        value = self.headers.get(key)
        if value is None and self._wsi is not None:
            value = read_header(self._wsi, key)
        return value


@dataclass
class Response:
    """What a handler answers: status, headers and a body (bytes/str or an iterable).

    With ``stream`` (an iterable of bytes) the body is pulled one chunk per
    WRITEABLE. Give ``content_length`` when you know it: without it lws ends
    an HTTP/1.1 body by closing the connection (HTTP/2 just ends the stream).
    """

    status: int = 200
    body: bytes | str = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)
    stream: Iterable[bytes] | None = None
    content_length: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.status, int) or not 100 <= self.status <= 599:
            raise ValueError(f"HTTP status must be 100..599, got {self.status!r}")
        if self.stream is not None and self.body:
            raise ValueError("give body= or stream=, not both")
        for name, value in self.headers.items():
            if any(ch in f"{name}{value}" for ch in "\r\n"):
                raise ValueError("header names and values may not contain CR or LF")


class _Transaction:
    """Per-request state; dropped at the transaction's end (keep-alive starts anew)."""

    __slots__ = ("chunks", "done", "pieces", "refused", "request", "size")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.chunks: list[bytes] = []
        self.size = 0
        self.pieces: Iterator[bytes] | None = None
        self.done = False
        self.refused = False


def _read_request(conn: Connection, path: str) -> Request:
    wsi = conn._wsi
    method = "GET"
    for name, token in _METHOD_TOKENS:
        if lib.lws_hdr_total_length(wsi, token) > 0:
            method = name
            break
    else:
        h2_method = read_header(wsi, ":method")
        if h2_method:
            method = h2_method.upper()
    headers = read_headers(wsi)
    full_path = read_path(wsi) or path
    return Request(method=method, path=full_path, query=dict(read_query(wsi)),
                   headers=headers, http2=bool(lib.lwspy_is_h2(wsi)))


def _expects_body(req: Request) -> bool:
    if req.method not in _BODY_METHODS:
        return False
    length = req.headers.get("content-length")
    if length is not None:
        try:
            return int(length) > 0
        except ValueError:
            return False
    return "chunked" in req.headers.get("transfer-encoding", "") or req.http2


def serve(conn: Connection, proto: Protocol, reason: int, in_: Any, len_: int) -> int | None:
    """Run the binding's HTTP server side for one callback; None = not handled here."""
    if reason == _HTTP:
        path = ffi.buffer(in_, len_)[:].decode("utf-8", "replace") if in_ != ffi.NULL else ""
        txn = conn._http = _Transaction(_read_request(conn, path))
        if _expects_body(txn.request):
            return 0
        return _answer(conn, proto, txn)
    txn = conn._http
    if txn is None:
        return None
    if reason == _HTTP_BODY:
        if txn.refused:
            return 0
        txn.size += len_
        if txn.size > proto.max_body_size:
            txn.refused = True
            logger.info("%r: request body over %d bytes: 413", conn, proto.max_body_size)
            lib.lws_return_http_status(conn._wsi, 413, ffi.NULL)
            return -1
        chunk = ffi.buffer(in_, len_)[:]
        if proto._streams_body:
            try:
                proto.on_request_body(conn, txn.request, chunk)  # type: ignore[attr-defined]
            except Exception as exc:
                logger.error("exception in %s.on_request_body for %r", type(proto).__name__,
                             conn, exc_info=exc)
                txn.refused = True
                lib.lws_return_http_status(conn._wsi, 500, ffi.NULL)
                return -1
        else:
            txn.chunks.append(chunk)
        return 0
    if reason == _HTTP_BODY_COMPLETION:
        if txn.refused:
            return -1
        txn.request.body = b"".join(txn.chunks)
        txn.chunks = []
        return _answer(conn, proto, txn)
    if reason == _HTTP_WRITEABLE:
        if txn.pieces is None or txn.done:
            return None
        return _write_next(conn, txn)
    return None


def _answer(conn: Connection, proto: Protocol, txn: _Transaction) -> int:
    txn.request._wsi = conn._wsi  # unknown headers are readable during the handler only
    try:
        response = proto.on_request(conn, txn.request)  # type: ignore[attr-defined]
    except Exception as exc:
        logger.error("exception in %s.on_request for %r", type(proto).__name__, conn,
                     exc_info=exc)
        response = Response(500, "internal server error\n")
    finally:
        txn.request._wsi = None
    if response is None:
        response = Response(404, "not found\n")
    elif not isinstance(response, Response):
        logger.error("%s.on_request returned %r, not a Response", type(proto).__name__,
                     response)
        response = Response(500, "internal server error\n")
    return _start(conn, txn, response)


def _start(conn: Connection, txn: _Transaction, response: Response) -> int:
    wsi = conn._wsi
    if response.stream is not None:
        length = response.content_length
        pieces: Iterator[bytes] = iter(response.stream)
    else:
        body = response.body.encode("utf-8") if isinstance(response.body, str) \
            else bytes(response.body)
        length = len(body)
        pieces = iter([body[i:i + _CHUNK] for i in range(0, len(body), _CHUNK)] or [b""])
    # No body to write (HEAD, or an empty one): the transaction ends with the
    # headers, as lws' own file server does; a zero-length FINAL write after a
    # content-length confuses lws 4.3's keep-alive state.
    no_body = txn.request.method == "HEAD" or (response.stream is None and length == 0)
    room = _HEADER_ROOM + sum(len(k) + len(v) + 8 for k, v in response.headers.items())
    buf = ffi.new("unsigned char[]", lib.LWS_PRE + room)
    start = buf + lib.LWS_PRE
    end = start + room - 1
    pp = ffi.new("unsigned char **", start)
    ctype = response.content_type.encode()
    if lib.lws_add_http_common_headers(wsi, response.status, ctype,
                                       _ILLEGAL_LEN if length is None else length, pp, end):
        return -1
    for name, value in response.headers.items():
        bname = name.encode("ascii").lower().rstrip(b":") + b":"
        bvalue = value.encode("utf-8")
        if lib.lws_add_http_header_by_name(wsi, bname, bvalue, len(bvalue), pp, end):
            return -1
    if lib.lws_finalize_write_http_header(wsi, start, pp, end):
        return -1
    if no_body:
        txn.done = True
        return -1 if lib.lws_http_transaction_completed(wsi) else 0
    txn.pieces = pieces
    lib.lws_callback_on_writable(wsi)
    return 0


def _write_next(conn: Connection, txn: _Transaction) -> int:
    assert txn.pieces is not None
    try:
        piece = next(txn.pieces)
        try:
            following: bytes | None = next(txn.pieces)
        except StopIteration:
            following = None
    except StopIteration:
        piece, following = b"", None
    except Exception as exc:
        logger.error("exception in a response stream for %r", conn, exc_info=exc)
        return -1
    if following is not None:
        txn.pieces = _prepend(following, txn.pieces)
    final = following is None
    data = bytes(piece)
    buf = ffi.new("unsigned char[]", lib.LWS_PRE + len(data) + 1)
    ffi.memmove(buf + lib.LWS_PRE, data, len(data))
    flags = lib.LWS_WRITE_HTTP_FINAL if final else lib.LWS_WRITE_HTTP
    if lib.lws_write(conn._wsi, buf + lib.LWS_PRE, len(data), flags) != len(data):
        return -1
    if not final:
        lib.lws_callback_on_writable(conn._wsi)
        return 0
    txn.done = True
    return -1 if lib.lws_http_transaction_completed(conn._wsi) else 0


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


_HTTP = int(_R.HTTP)
_HTTP_BODY = int(_R.HTTP_BODY)
_HTTP_BODY_COMPLETION = int(_R.HTTP_BODY_COMPLETION)
_HTTP_WRITEABLE = int(_R.HTTP_WRITEABLE)
SERVER_REASONS = frozenset((_HTTP, _HTTP_BODY, _HTTP_BODY_COMPLETION, _HTTP_WRITEABLE))
