"""``python -m lws``: version, an echo server, an interactive client, a chat demo.

    python -m lws version
    python -m lws echo [--host H] [--port P]
    python -m lws client ws://host:port/path [--subprotocol P] [--header "N: V"] ...
    python -m lws demo [--host H] [--port P]

Argument errors print the usage and exit with status 2; errors from lws
(a port in use, a refused connection) print one line and exit with 1.
"""

from __future__ import annotations

import argparse
import codecs
import json
import os
import select
import sys
import threading
import time
import urllib.parse
from typing import Any, TextIO

from . import (
    ClientTLS,
    Connection,
    ConnectionClosed,
    Context,
    LwsError,
    Protocol,
    ServerTLS,
    __version__,
    features,
    lws_version,
)


class EchoServer(Protocol):
    """Echoes every message back (used by the CLI, conformance and benchmarks).

    No per-session work, like the C echo it is benchmarked against.
    """

    name = "echo"
    max_message_size = 16 << 20
    send_queue_limit = 64 << 20

    def on_message(self, conn: Connection, message: Any) -> None:
        conn.send(message)


def _version(_: argparse.Namespace) -> int:
    print(json.dumps({"lws-cffi": __version__, "libwebsockets": lws_version,
                      "features": features}, indent=2))
    return 0


def _echo(args: argparse.Namespace) -> int:
    if (args.cert is None) != (args.key is None):
        raise ValueError("--cert and --key go together")
    tls = ServerTLS(args.cert, args.key) if args.cert else None
    proto = EchoServer()
    if args.rx_buffer:
        # lws reads at most this much per socket event (pt_serv_buf_size) and
        # hands the protocol chunks of it (rx_buffer_size).
        proto = type("EchoServer", (EchoServer,), {"rx_buffer_size": args.rx_buffer})()
    with Context([proto], port=args.port, host=args.host, tls=tls,
                 permessage_deflate=args.deflate, pt_serv_buf_size=args.rx_buffer) as ctx:
        scheme = "wss" if tls else "ws"
        print(f"echo server on {scheme}://{args.host or '0.0.0.0'}:{ctx.port}/", flush=True)
        try:
            ctx.run()
        except KeyboardInterrupt:
            print("stopping")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import serve  # imported here: only the demo needs it

    return serve(args.host, args.port)


# -- python -m lws client ----------------------------------------------------

_CLOSE_NAMES = {1000: "OK", 1001: "going away", 1002: "protocol error",
                1003: "unsupported data", 1005: "no status", 1006: "abnormal closure",
                1007: "invalid data", 1008: "policy violation", 1009: "message too big",
                1010: "mandatory extension", 1011: "internal error"}


class _Interactive(Protocol):
    """The client protocol of ``python -m lws client``: prints what arrives."""

    name = "lws-cli"
    max_message_size = 64 << 20

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.established = threading.Event()
        self.done = threading.Event()
        self.error: str | None = None

    def on_client_established(self, conn: Connection) -> None:
        self.established.set()

    def on_message(self, conn: Connection, message: Any) -> None:
        if isinstance(message, str):
            line = "< " + message
        else:
            line = f"< (binary) {bytes(message).hex()}"
        self.out.write(line + "\n")
        self.out.flush()

    def on_client_connection_error(self, conn: Connection, message: str) -> None:
        self.error = message or "connection failed"
        self.done.set()

    def on_client_closed(self, conn: Connection) -> None:
        self.done.set()


def _stdin_lines(fd: int, done: threading.Event) -> Any:
    """Yield lines typed or piped on ``fd`` until end of input or ``done``.

    select() with a short timeout instead of a blocking read, so that a close
    by the server ends the client even while nobody types, and Ctrl-C is seen
    at once. Works the same for a terminal, a pipe or a file.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pending = ""
    while not done.is_set():
        try:
            ready, _, _ = select.select([fd], [], [], 0.1)
        except (OSError, ValueError):
            break
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            break
        pending += decoder.decode(chunk)
        *lines, pending = pending.split("\n")
        for line in lines:
            yield line.rstrip("\r")
    pending += decoder.decode(b"", final=True)
    if pending and not done.is_set():
        yield pending.rstrip("\r")


def _client(args: argparse.Namespace) -> int:
    err = sys.stderr
    proto = _Interactive(sys.stdout)
    client_tls = None
    if args.ca:
        client_tls = ClientTLS(ca=args.ca)
    options: dict[str, Any] = {"subprotocol": args.subprotocol, "origin": args.origin,
                               "headers": args.headers or None}
    if args.insecure:
        options.update(verify_hostname=False, allow_self_signed=True)
    ctx = Context([proto], client_tls=client_tls)
    runner: threading.Thread | None = None
    try:
        try:
            conn = ctx.connect(args.url, proto, **options)
        except LwsError as exc:
            print(f"Failed to connect to {args.url}: {exc}", file=err)
            return 1
        runner = threading.Thread(target=ctx.run, name="lws-client", daemon=True)
        runner.start()
        while not (proto.established.wait(0.05) or proto.done.is_set()):
            pass
        if proto.error is not None or not proto.established.is_set():
            print(f"Failed to connect to {args.url}: {proto.error}", file=err)
            return 1
        print(f"Connected to {args.url}.", file=err, flush=True)
        sent_close: tuple[int, str] | None = None
        try:
            for line in _stdin_lines(sys.stdin.fileno() if sys.stdin else -1, proto.done):
                try:
                    conn.send(line)
                except ConnectionClosed:
                    break
        except KeyboardInterrupt:
            pass
        if not proto.done.is_set():
            sent_close = (1000, "")
            conn.close(1000)
            deadline = time.monotonic() + 5
            while not proto.done.wait(0.05) and time.monotonic() < deadline:
                pass
        if sent_close is not None:
            code, reason = sent_close
        else:
            code, reason = conn.close_code or 1006, conn.close_reason
        name = _CLOSE_NAMES.get(code, "")
        detail = f" {reason}" if reason else (f" ({name})" if name else "")
        print(f"Connection closed: {code}{detail}.", file=err)
        return 0
    finally:
        ctx.stop()
        if runner is not None:
            runner.join(5)
        if runner is None or not runner.is_alive():
            ctx.close()


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or any(ch in text for ch in "\r\n"):
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def _int_in(text: str, low: int, high: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"expected {what} {low}..{high}, got {text!r}")
    return value


def _port(text: str) -> int:
    return _int_in(text, 0, 65535, "a port number")


def _size(text: str) -> int:
    return _int_in(text, 0, 16 << 20, "a byte count")


def _ws_url(text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected a ws:// or wss:// URL, got {text!r}")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad port in {text!r}") from None
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lws", description="lws for Python")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="package and libwebsockets versions, build features")
    echo = sub.add_parser("echo", help="run an echo server")
    echo.add_argument("--host", default="127.0.0.1")
    echo.add_argument("--port", type=_port, default=7681, help="0 picks a free port")
    echo.add_argument("--cert", default=None, help="TLS certificate (PEM): serve wss://")
    echo.add_argument("--key", default=None, help="TLS private key (PEM), with --cert")
    echo.add_argument("--deflate", action="store_true", help="offer permessage-deflate")
    echo.add_argument("--rx-buffer", type=_size, default=0, metavar="BYTES",
                      help="lws' read size (pt_serv_buf_size, rx_buffer_size); "
                           "default lws' own (4096)")
    demo = sub.add_parser(
        "demo", help="a chat room in the browser, on the native stack",
        description="Serve a chat room: lws serves the page from a mount, the lws-chat "
                    "protocol is Python. Open the printed URL in two browser tabs; "
                    "Ctrl-C closes every connection with 1001 and stops.")
    demo.add_argument("--host", default="127.0.0.1",
                      help="address to listen on (default 127.0.0.1; '' for all)")
    demo.add_argument("--port", type=_port, default=7681, help="0 picks a free port")
    client = sub.add_parser(
        "client", help="an interactive WebSocket client",
        description="Connect to URL, send each line read from standard input as a text "
                    "message and print what arrives ('< ' prefix); end of input "
                    "(Ctrl-D) closes with 1000.")
    client.add_argument("url", type=_ws_url, help="ws://host[:port]/path or wss://...")
    client.add_argument("--subprotocol", default=None,
                        help="the Sec-WebSocket-Protocol to ask for (default: none)")
    client.add_argument("--origin", default=None, help="an Origin header")
    client.add_argument("--header", dest="headers", type=_header, action="append",
                        metavar="'NAME: VALUE'", help="an extra handshake header (repeatable)")
    client.add_argument("--ca", default=None, help="a CA file to verify wss:// servers with")
    client.add_argument("--insecure", action="store_true",
                        help="wss://: accept self-signed certificates and other host names")
    args = parser.parse_args(argv)
    if args.command == "client":
        args.headers = dict(args.headers or [])
    handlers = {"version": _version, "echo": _echo, "demo": _demo, "client": _client}
    try:
        return handlers[args.command](args)
    except (LwsError, OSError, ValueError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
