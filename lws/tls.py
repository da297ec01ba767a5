"""TLS settings for vhosts (servers) and for client connections.

The files are checked before lws sees them, so a wrong path is a
:class:`FileNotFoundError` naming the file, not a vague lws failure. A file
that exists but is not a usable certificate or key makes vhost creation fail
with :class:`lws.ContextError` carrying lws' (OpenSSL's) own lines.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["ClientTLS", "ServerTLS"]


def _readable(path: str | os.PathLike[str] | None, what: str) -> str | None:
    if path is None:
        return None
    text = os.fspath(path)
    if not os.path.isfile(text):
        raise FileNotFoundError(f"{what} {text!r} does not exist or is not a file")
    if not os.access(text, os.R_OK):
        raise PermissionError(f"{what} {text!r} is not readable")
    return text


@dataclass(frozen=True)
class ServerTLS:
    """A vhost's certificate and key (PEM files), and optional client-certificate checks.

    ``client_ca``: CA file that client certificates must chain to; with
    ``require_client_cert=True`` a client without a valid certificate is
    refused during the handshake. ``alpn`` defaults to lws' own list
    (``h2,http/1.1`` where the build has HTTP/2).
    """

    cert: str | os.PathLike[str]
    key: str | os.PathLike[str]
    client_ca: str | os.PathLike[str] | None = None
    require_client_cert: bool = False
    alpn: str | None = None

    def __post_init__(self) -> None:
        _readable(self.cert, "certificate file")
        _readable(self.key, "private key file")
        _readable(self.client_ca, "client CA file")
        if self.require_client_cert and self.client_ca is None:
            raise ValueError("require_client_cert=True needs client_ca")


@dataclass(frozen=True)
class ClientTLS:
    """How this context's clients verify servers on ``wss://``.

    ``ca``: a CA file to trust (default: the system's store). Hostname
    verification is on by default; ``verify_hostname=False`` and
    ``allow_self_signed=True`` are explicit opt-outs, per connection or here.
    ``cert``/``key``: a client certificate to present.
    """

    ca: str | os.PathLike[str] | None = None
    cert: str | os.PathLike[str] | None = None
    key: str | os.PathLike[str] | None = None
    verify_hostname: bool = True
    allow_self_signed: bool = False

    def __post_init__(self) -> None:
        _readable(self.ca, "CA file")
        _readable(self.cert, "client certificate file")
        _readable(self.key, "client key file")
        if (self.cert is None) != (self.key is None):
            raise ValueError("a client certificate needs both cert and key")
