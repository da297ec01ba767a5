"""A one-call HTTP(S) client on lws' own client: :func:`fetch`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from ._binding import ffi, lib
from ._headers import read_headers
from .connection import Connection, HeaderWriter
from .context import Context
from .errors import ConnectError, LwsError
from .protocol import Protocol
from .tls import ClientTLS

__all__ = ["HTTPResult", "fetch"]

_READ_CHUNK = 16 * 1024


@dataclass
class HTTPResult:
    """What :func:`fetch` got back."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def text(self, encoding: str = "utf-8") -> str:
        return self.body.decode(encoding, "replace")


class _Fetcher(Protocol):
    name = "lws-fetch"

    def __init__(self, body: bytes | None, headers: Mapping[str, str]) -> None:
        self.body = body
        self.extra_headers = dict(headers)
        self.result: HTTPResult | None = None
        self.chunks: list[bytes] = []
        self.error: str | None = None
        self.done = False

    def on_client_append_handshake_header(self, conn: Connection, writer: HeaderWriter) -> None:
        for name, value in self.extra_headers.items():
            writer.add(name, value)
        if self.body is not None:
            writer.add("content-length", str(len(self.body)))
            lib.lws_client_http_body_pending(conn._wsi, 1)
            lib.lws_callback_on_writable(conn._wsi)

    def on_client_http_writeable(self, conn: Connection) -> int:
        data = self.body or b""
        buf = ffi.new("unsigned char[]", lib.LWS_PRE + len(data) + 1)
        ffi.memmove(buf + lib.LWS_PRE, data, len(data))
        if lib.lws_write(conn._wsi, buf + lib.LWS_PRE, len(data),
                         lib.LWS_WRITE_HTTP_FINAL) != len(data):
            return -1
        lib.lws_client_http_body_pending(conn._wsi, 0)
        return 0

    def on_established_client_http(self, conn: Connection) -> None:
        self.result = HTTPResult(int(lib.lws_http_client_http_response(conn._wsi)),
                                 read_headers(conn._wsi))

    def on_receive_client_http(self, conn: Connection) -> int:
        # lws wants the data pulled here; it arrives in RECEIVE_CLIENT_HTTP_READ.
        buf = ffi.new("char[]", lib.LWS_PRE + _READ_CHUNK)
        px = ffi.new("char **", buf + lib.LWS_PRE)
        lenx = ffi.new("int *", _READ_CHUNK)
        return -1 if lib.lws_http_client_read(conn._wsi, px, lenx) < 0 else 0

    def on_receive_client_http_read(self, conn: Connection, data: bytes) -> None:
        self.chunks.append(data)

    def on_completed_client_http(self, conn: Connection) -> None:
        self.done = True

    def on_client_connection_error(self, conn: Connection, message: str) -> None:
        self.error = message or "connection failed"

    def on_closed_client_http(self, conn: Connection) -> None:
        if not self.done and self.error is None:
            self.error = "the server closed the connection before the response ended"


def fetch(url: str, *, method: str = "GET", body: bytes | str | None = None,
          headers: Mapping[str, str] | None = None, tls: ClientTLS | None = None,
          verify_hostname: bool | None = None, timeout: float = 30.0) -> HTTPResult:
    """Make one HTTP(S) request with lws' native client and return the response.

    Blocks the calling thread (it runs its own short-lived lws context).
    ``tls`` sets the CA to trust for ``https://`` (default: the system's);
    hostname verification is on unless ``verify_hostname=False``. Raises
    :class:`lws.ConnectError` when the request fails (refused, TLS, DNS, the
    connection dropped) and :class:`TimeoutError` after ``timeout`` seconds.
    Redirects are followed by lws.
    """
    data = body.encode("utf-8") if isinstance(body, str) else body
    fetcher = _Fetcher(data, headers or {})
    with Context([fetcher], client_tls=tls) as ctx:
        conn = ctx.connect(url, fetcher, method=method, verify_hostname=verify_hostname)
        deadline = time.monotonic() + timeout
        while not (fetcher.done or fetcher.error or (conn.closed and not ctx.connections())):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{method} {url}: no complete response in {timeout}s")
            ctx.service(min(remaining, 0.1))
    if fetcher.error is not None:
        raise ConnectError(f"{method} {url}: {fetcher.error}")
    if fetcher.result is None:
        raise LwsError(f"{method} {url}: the connection ended without a response")
    fetcher.result.body = b"".join(fetcher.chunks)
    return fetcher.result


