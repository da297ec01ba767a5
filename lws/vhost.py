"""Vhosts: a listening socket (or none) with its own protocols, mounts, TLS and limits.

A :class:`~lws.Context` always has the vhost made from its own arguments
(named ``"default"``); :meth:`Context.add_vhost` adds more, by name and port.
Protocol instances belong to one vhost, so their attributes are the
per-vhost protocol state (what C keeps with ``lws_protocol_vh_priv_zalloc``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from . import _log
from ._binding import features, ffi, lib, require
from .errors import ContextError
from .http import Mount
from .protocol import Protocol
from .tls import ClientTLS, ServerTLS

if TYPE_CHECKING:
    from .context import Context

__all__ = [
    "DEFAULT_KEEPALIVE_TIMEOUT",
    "DEFAULT_MAX_HEADER_SIZE",
    "DEFAULT_TIMEOUT_SECS",
    "Vhost",
]

# Safe defaults for what a slow or hostile client can hold.
DEFAULT_MAX_HEADER_SIZE = 8192     # bytes of request headers (lws: max_http_header_data)
DEFAULT_TIMEOUT_SECS = 20          # seconds a connection may sit in a pending state
DEFAULT_KEEPALIVE_TIMEOUT = 5      # seconds an idle keep-alive connection is kept


class Vhost:
    """One lws vhost. Made by :class:`~lws.Context`, not directly.

    ``port``: ``None`` for no listening socket, 0 for an ephemeral one
    (read the real one back from :attr:`port`). ``host``: address or
    interface to listen on (``None``: all). ``mounts``: :class:`lws.Mount`
    list. ``tls``: :class:`lws.ServerTLS`. ``permessage_deflate``: offer and
    accept RFC 7692 compression on WebSockets (server side, and for clients
    connecting through this vhost). ``allowed_origins``: if given, a
    WebSocket upgrade whose ``Origin`` is not listed is refused with 403.
    ``security_headers``: lws' best-practice security headers on HTTP
    answers. ``max_header_size``, ``timeout_secs``, ``keepalive_timeout``:
    limits for slow or oversized requests.
    """

    def __init__(
        self,
        ctx: Context,
        name: str,
        protocols: Iterable[Protocol],
        *,
        port: int | None = None,
        host: str | None = None,
        mounts: Sequence[Mount] = (),
        tls: ServerTLS | None = None,
        client_tls: ClientTLS | None = None,
        permessage_deflate: bool = False,
        allowed_origins: Iterable[str] | None = None,
        security_headers: bool = False,
        validate_utf8: bool = True,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
        timeout_secs: int = DEFAULT_TIMEOUT_SECS,
        keepalive_timeout: int = DEFAULT_KEEPALIVE_TIMEOUT,
        pt_serv_buf_size: int = 0,
        server_string: str | None = None,
    ) -> None:
        self.context = ctx
        self.name = name
        self._vhost: Any = ffi.NULL
        self._keep: list[Any] = []
        protos = list(protocols)
        self.protocols = protos
        _check_arguments(name, protos, port, host, mounts, tls, client_tls,
                         max_header_size, timeout_secs, keepalive_timeout)
        if permessage_deflate:
            require("permessage_deflate")
        if tls is not None or client_tls is not None:
            require("tls")
        self.allowed_origins = frozenset(allowed_origins) if allowed_origins is not None \
            else None
        self.tls = tls
        self.client_tls = client_tls
        self.permessage_deflate = permessage_deflate
        self.mounts = list(mounts)
        self._check_mount_protocols()

        self._proto_array = self._protocol_array(protos)
        info = ffi.new("struct lws_context_creation_info *")
        lib.lwspy_info_init(info)
        info.port = lib.CONTEXT_PORT_NO_LISTEN if port is None else port
        info.protocols = self._proto_array
        info.vhost_name = self._cstr(name)
        info.options = lib.LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND
        if features["tls"]:
            # lws sets up a vhost's server and client TLS only with this option.
            info.options |= lib.LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT
        if validate_utf8:
            info.options |= lib.LWS_SERVER_OPTION_VALIDATE_UTF8
        if security_headers:
            info.options |= lib.LWS_SERVER_OPTION_HTTP_HEADERS_SECURITY_BEST_PRACTICES_ENFORCE
        if host is not None:
            info.iface = self._cstr(host)
            if _is_ipv4(host):
                info.options |= lib.LWS_SERVER_OPTION_DISABLE_IPV6
        info.timeout_secs = timeout_secs
        info.timeout_secs_ah_idle = timeout_secs  # a client holding unfinished headers
        info.keepalive_timeout = keepalive_timeout
        info.max_http_header_data = max_header_size
        info.pt_serv_buf_size = pt_serv_buf_size
        if server_string is not None:
            info.server_string = self._cstr(server_string)
        if self.mounts:
            info.mounts = self._mount_list(self.mounts)
        if permessage_deflate:
            ext = ffi.new("struct lws_extension[2]")
            lib.lwspy_pmd_extension(ext)
            self._keep.append(ext)
            info.extensions = ext
        if tls is not None:
            info.ssl_cert_filepath = self._cstr(str(tls.cert))
            info.ssl_private_key_filepath = self._cstr(str(tls.key))
            if tls.client_ca is not None:
                info.ssl_ca_filepath = self._cstr(str(tls.client_ca))
            if tls.require_client_cert:
                info.options |= lib.LWS_SERVER_OPTION_REQUIRE_VALID_OPENSSL_CLIENT_CERT
            if tls.alpn is not None:
                info.alpn = self._cstr(tls.alpn)
        if client_tls is not None:
            if client_tls.ca is not None:
                info.client_ssl_ca_filepath = self._cstr(str(client_tls.ca))
            if client_tls.cert is not None and client_tls.key is not None:
                info.client_ssl_cert_filepath = self._cstr(str(client_tls.cert))
                info.client_ssl_private_key_filepath = self._cstr(str(client_tls.key))

        with ctx._lws_owner(), _log.capture() as lines:
            self._vhost = lib.lws_create_vhost(ctx._ctx, info)
        if self._vhost == ffi.NULL:
            where = "" if port is None else f" on {host or '*'}:{port}"
            raise ContextError(f"creating vhost {name!r}{where} failed", lines)
        self._port = 0 if port is None else int(lib.lws_get_vhost_listen_port(self._vhost))

    # -- building the C structures ------------------------------------------

    def _cstr(self, text: str) -> Any:
        buf = ffi.new("char[]", text.encode())
        self._keep.append(buf)
        return buf

    def _tx_packet(self, p: Protocol) -> int:
        """What lws may send per write for ``p`` (its ``tx_packet_size``).

        lws caps each send at this and copies the rest aside. Unset, the
        binding raises it to ``tx_fragment_size``: a queued message then goes
        out in 256 KiB writes, not 4 KiB ones (a poll round trip each). Not
        with permessage-deflate, whose large writes lws gets wrong.
        """
        if p.tx_packet_size or self.permessage_deflate:
            return p.tx_packet_size
        return p.tx_fragment_size

    def _slice(self, p: Protocol, tx_packet: int) -> int:
        """The fragment size for ``p``'s large messages (0: never split).

        No larger than what lws sends per write (it would copy the rest aside
        each time), except with permessage-deflate: lws 4.3's deflate garbles
        messages written as fragments of a few KiB (Autobahn 13.3.6 on), so
        there they stay at ``tx_fragment_size``.
        """
        if not p.tx_fragment_size or self.permessage_deflate:
            return p.tx_fragment_size
        io = tx_packet or p.rx_buffer_size or self.context._io_size
        return min(p.tx_fragment_size, io)

    def _protocol_array(self, protos: list[Protocol]) -> Any:
        """protocols[] for lws, terminated by a zeroed entry (4.1 has no LIST_TERM)."""
        ctx = self.context
        arr = ffi.new("struct lws_protocols[]", len(protos) + 1)
        extra = ffi.new("struct lwspy_proto[]", len(protos))
        trampoline = lib.lwspy_trampoline_ptr()
        for i, p in enumerate(protos):
            index = ctx._register_protocol(p, self)
            arr[i].name = self._cstr(p.name)
            arr[i].callback = trampoline
            arr[i].per_session_data_size = p.per_session_data_size()
            arr[i].rx_buffer_size = p.rx_buffer_size
            arr[i].tx_packet_size = self._tx_packet(p)
            p._slice = self._slice(p, arr[i].tx_packet_size)
            p._own_headers = 1 if p._header_first and not self.permessage_deflate else 0
            arr[i].id = p.id
            extra[i].index = index
            extra[i].messages = 1 if type(p)._messages_in_c else 0
            extra[i].max_message = p.max_message_size
            for r in type(p)._wanted | self._extra_reasons():
                if r < 128:
                    extra[i].want[r] = 1
            arr[i].user = ffi.addressof(extra, i)
            p._lws_entry = ffi.addressof(arr, i)
        self._keep += [arr, extra]
        return arr

    def _extra_reasons(self) -> frozenset[int]:
        from .reasons import Reason

        extra: set[int] = set()
        if self.allowed_origins is not None:
            extra.add(int(Reason.FILTER_PROTOCOL_CONNECTION))
        return frozenset(extra)

    def _mount_list(self, mounts: list[Mount]) -> Any:
        arr = ffi.new("struct lws_http_mount[]", len(mounts))
        for i, m in enumerate(mounts):
            arr[i].mountpoint = self._cstr(m.url)
            arr[i].mountpoint_len = len(m.url.encode())
            arr[i].cache_max_age = m.cache_max_age
            if m.directory is not None:
                arr[i].origin_protocol = lib.LWSMPRO_FILE
                arr[i].origin = self._cstr(str(m.directory))
                if m.default:
                    setattr(arr[i], "def", self._cstr(m.default))  # `def` is a keyword
            elif m.protocol is not None:
                arr[i].origin_protocol = lib.LWSMPRO_CALLBACK
                arr[i].origin = self._cstr(m.protocol)
                arr[i].protocol = self._cstr(m.protocol)
            elif m.redirect is not None:
                https = m.redirect.startswith("https://")
                arr[i].origin_protocol = lib.LWSMPRO_REDIR_HTTPS if https \
                    else lib.LWSMPRO_REDIR_HTTP
                arr[i].origin = self._cstr(m.redirect.split("://", 1)[1])
            if i + 1 < len(mounts):
                arr[i].mount_next = ffi.addressof(arr, i + 1)
        self._keep.append(arr)
        return arr

    def _check_mount_protocols(self) -> None:
        names = {p.name for p in self.protocols}
        for m in self.mounts:
            if m.protocol is not None and m.protocol not in names:
                raise ValueError(f"mount {m.url!r} names protocol {m.protocol!r}, which this "
                                 "vhost does not have")

    # -- public ----------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port this vhost listens on (the real one when created with port 0)."""
        return self._port

    def __repr__(self) -> str:
        return f"<lws.Vhost {self.name!r} port {self._port}>"


def _check_arguments(name: str, protos: list[Protocol], port: int | None, host: str | None,
                     mounts: Sequence[Mount], tls: ServerTLS | None,
                     client_tls: ClientTLS | None, max_header_size: int, timeout_secs: int,
                     keepalive_timeout: int) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError("a vhost needs a non-empty name")
    if not protos:
        raise ValueError("a vhost needs at least one protocol")
    names = set()
    for p in protos:
        if not isinstance(p, Protocol):
            raise TypeError(f"protocols must be Protocol instances, got {p!r}")
        if not hasattr(type(p), "name"):
            raise TypeError(f"{type(p).__name__} has no name")
        if p._context is not None:
            raise ValueError(f"{p!r} already belongs to a Context (one vhost per instance)")
        if p.name in names:
            raise ValueError(f"two protocols are named {p.name!r}")
        names.add(p.name)
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                             or not 0 <= port <= 65535):
        raise ValueError(f"port must be None or 0..65535, got {port!r}")
    if host is not None and not isinstance(host, str):
        raise TypeError("host must be a str")
    for m in mounts:
        if not isinstance(m, Mount):
            raise TypeError(f"mounts must be lws.Mount objects, got {m!r}")
    if tls is not None and not isinstance(tls, ServerTLS):
        raise TypeError("tls must be an lws.ServerTLS")
    if client_tls is not None and not isinstance(client_tls, ClientTLS):
        raise TypeError("client_tls must be an lws.ClientTLS")
    if not 256 <= max_header_size <= 65535:
        raise ValueError("max_header_size must be 256..65535 bytes")
    if timeout_secs < 1 or keepalive_timeout < 1:
        raise ValueError("timeout_secs and keepalive_timeout must be at least 1 second")


def _is_ipv4(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv4Address)
    except ValueError:
        return False
