"""``python -m lws``: version, an echo server, and a small demo.

    python -m lws version
    python -m lws echo [--host H] [--port P]
    python -m lws demo [--port P]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import Connection, Context, Protocol, Struct, __version__, c, features, lws_version


class _EchoSession(Struct):
    messages: c.uint32_t


class EchoServer(Protocol):
    """Echoes every message back (used by the CLI, conformance and benchmarks)."""

    name = "echo"
    session = _EchoSession
    max_message_size = 16 << 20
    send_queue_limit = 64 << 20

    def on_message(self, conn: Connection, message: Any) -> None:
        conn.session.messages += 1
        conn.send(message)


class _DemoClient(Protocol):
    name = "demo-client"

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.echoed: list[str] = []

    def on_client_established(self, conn: Connection) -> None:
        print(f"client: connected as {conn!r}")
        for line in self.lines:
            conn.send(line)

    def on_message(self, conn: Connection, message: Any) -> None:
        print(f"client: echoed back: {message!r}")
        self.echoed.append(message)
        if len(self.echoed) == len(self.lines):
            conn.close(1000, "demo done")

    def on_client_connection_error(self, conn: Connection, message: str) -> None:
        print(f"client: connection error: {message}")
        self.context.stop()

    def on_client_closed(self, conn: Connection) -> None:
        self.context.stop()


def _version(_: argparse.Namespace) -> int:
    print(json.dumps({"lws-cffi": __version__, "libwebsockets": lws_version,
                      "features": features}, indent=2))
    return 0


def _echo(args: argparse.Namespace) -> int:
    with Context([EchoServer()], port=args.port, host=args.host) as ctx:
        print(f"echo server on ws://{args.host or '0.0.0.0'}:{ctx.port}/", flush=True)
        try:
            ctx.run()
        except KeyboardInterrupt:
            print("stopping")
    return 0


def _demo(args: argparse.Namespace) -> int:
    lines = ["hello from Python", "through the native lws stack", "and back"]
    client = _DemoClient(lines)
    print(f"lws-cffi {__version__} on libwebsockets {lws_version}")
    with Context([EchoServer(), client], port=args.port, host="127.0.0.1") as ctx:
        print(f"server: echo protocol on ws://127.0.0.1:{ctx.port}/")
        ctx.connect(f"ws://127.0.0.1:{ctx.port}/", client, subprotocol="echo")
        ctx.run()
    ok = client.echoed == lines
    print("demo: all messages came back" if ok else "demo: FAILED")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lws", description="lws for Python")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="package and libwebsockets versions, build features")
    echo = sub.add_parser("echo", help="run an echo server")
    echo.add_argument("--host", default="127.0.0.1")
    echo.add_argument("--port", type=int, default=7681)
    demo = sub.add_parser("demo", help="an echo server and client in one process")
    demo.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    handlers = {"version": _version, "echo": _echo, "demo": _demo}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
