"""WebSocket frames built by hand, for tests that send what libraries refuse to send.

Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import socket
import struct


def masked_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One masked client frame (RFC 6455 5.2)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    mask = b"\x11\x22\x33\x44"
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def upgrade_request(protocol: str | None = None) -> bytes:
    """A client's WebSocket upgrade request (RFC 6455 4.1), for a raw socket."""
    extra = f"Sec-WebSocket-Protocol: {protocol}\r\n" if protocol else ""
    return ("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra}\r\n").encode()


def read_upgrade_response(sock: socket.socket) -> bytes:
    """The server's answer to :func:`upgrade_request`, up to its blank line."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        head += chunk
    return head


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """(first byte, payload) of one unmasked server frame, from a blocking socket."""
    def exactly(n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("the server closed the connection")
            out += chunk
        return out

    head = exactly(2)
    n = head[1] & 0x7F
    if n == 126:
        n = struct.unpack("!H", exactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", exactly(8))[0]
    return head[0], exactly(n)
