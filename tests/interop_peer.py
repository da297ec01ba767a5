"""The binding's side of tests/test_interop_websockets.py, importable or as a process.

The compressed variants run the binding in a child process (a crash in lws'
permessage-deflate then fails one test instead of killing pytest):

    python tests/interop_peer.py server [--deflate]
        prints "listening on port N"; stops on SIGTERM; prints a JSON summary
    python tests/interop_peer.py client URL [--deflate]
        sends MESSAGES() plus fragments and a ping, checks what comes back,
        closes with 1000 "bye", prints a JSON summary
    python tests/interop_peer.py listen URL [--deflate]
        sends "go", records messages and pongs until the message "done",
        closes with 1000 "bye", prints a JSON summary

Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import signal
import sys
from typing import Any

import lws
from lws.testing import pump

BIG = 16 << 20   # 16 MiB


def messages() -> list[str | bytes]:
    """Text, binary, empty, 1 MiB of random bytes, 16 MiB compressible and 16 MiB of text."""
    rng = random.Random(20261128)
    return ["hello", "", "héllo ✓ 😀", b"\x00\x01\xfe\xff", b"", bytes(range(256)) * 4096,
            rng.randbytes(1 << 20), b"\x5a" * BIG, "é" * (BIG // 2)]


FRAGMENTS: list[tuple[list[Any], Any]] = [
    (["frag", "men", "ted ✓"], "fragmented ✓"),
    ([b"\x01" * 70000, b"", b"\x02" * 3], b"\x01" * 70000 + b"\x02" * 3),
]


def _digest(message: str | bytes) -> str:
    raw = message.encode() if isinstance(message, str) else message
    return f"{type(message).__name__}:{len(raw)}:{hashlib.sha1(raw).hexdigest()[:12]}"


class EchoServer(lws.Protocol):
    """Echoes; "ping me" makes it ping, "close CODE REASON" makes it close."""

    name = "echo"
    max_message_size = BIG
    send_queue_limit = 3 * BIG

    def __init__(self) -> None:
        self.closes: list[tuple[int | None, str]] = []
        self.pongs: list[bytes] = []

    def on_message(self, conn: lws.Connection, message: Any) -> None:
        if message == "ping me":
            conn.ping(b"from lws")
        elif isinstance(message, str) and message.startswith("close "):
            code, _, reason = message[6:].partition(" ")
            conn.close(int(code), reason)
        else:
            conn.send(message)

    def on_receive_pong(self, conn: lws.Connection, data: bytes) -> None:
        self.pongs.append(data)

    def on_closed(self, conn: lws.Connection) -> None:
        self.closes.append((conn.close_code, conn.close_reason))


class ScriptedClient(lws.Protocol):
    """Sends ``script`` once connected; records messages, pongs and the close."""

    name = "scripted"
    max_message_size = BIG
    send_queue_limit = 3 * BIG

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.received: list[Any] = []
        self.pongs: list[bytes] = []
        self.established = False

    def on_client_established(self, conn: lws.Connection) -> None:
        self.established = True
        for item in self.script:
            if isinstance(item, tuple) and item[0] == "fragments":
                parts = item[1]
                for i, part in enumerate(parts):
                    conn.send_fragment(part, first=i == 0, final=i == len(parts) - 1)
            elif isinstance(item, tuple) and item[0] == "ping":
                conn.ping(item[1])
            else:
                conn.send(item)

    def on_message(self, conn: lws.Connection, message: Any) -> None:
        self.received.append(message)

    def on_client_receive_pong(self, conn: lws.Connection, data: bytes) -> None:
        self.pongs.append(data)


def client_script() -> tuple[list[Any], list[Any]]:
    """(what the client sends, what an echo server sends back)."""
    script: list[Any] = [*messages()]
    expected: list[Any] = [*messages()]
    for parts, whole in FRAGMENTS:
        script.append(("fragments", parts))
        expected.append(whole)
    script += [("ping", b"from lws"), "ping me"]
    return script, expected


def run_client(url: str, deflate: bool, timeout: float = 60.0) -> dict[str, Any]:
    script, expected = client_script()
    client = ScriptedClient(script)
    kwargs: dict[str, Any] = {"permessage_deflate": True} if deflate else {}
    with lws.Context([client], **kwargs) as ctx:
        conn = ctx.connect(url, client, subprotocol=None)
        try:
            pump(ctx, lambda: conn.closed or (len(client.received) >= len(expected)
                                              and len(client.pongs) >= 1), timeout=timeout)
        finally:
            if not conn.closed:
                conn.close(1000, "bye")
                pump(ctx, lambda: conn.closed, timeout=10)
    return {
        "established": client.established,
        "received": [_digest(m) for m in client.received],
        "expected": [_digest(m) for m in expected],
        "pongs": [p.decode() for p in client.pongs],
        "close_code": conn.close_code,
        "error": conn.error,
    }


def run_listener(url: str, deflate: bool, timeout: float = 10.0) -> dict[str, Any]:
    client = ScriptedClient(["go"])
    kwargs: dict[str, Any] = {"permessage_deflate": True} if deflate else {}
    with lws.Context([client], **kwargs) as ctx:
        conn = ctx.connect(url, client, subprotocol=None)
        pump(ctx, lambda: conn.closed or "done" in client.received, timeout=timeout)
        if not conn.closed:
            conn.close(1000, "bye")
            pump(ctx, lambda: conn.closed, timeout=10)
    return {"received": client.received, "pongs": [p.decode() for p in client.pongs],
            "close_code": conn.close_code, "error": conn.error}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    srv = sub.add_parser("server")
    srv.add_argument("--deflate", action="store_true")
    cli = sub.add_parser("client")
    cli.add_argument("url")
    cli.add_argument("--deflate", action="store_true")
    lis = sub.add_parser("listen")
    lis.add_argument("url")
    lis.add_argument("--deflate", action="store_true")
    args = parser.parse_args(argv)
    if args.mode in ("client", "listen"):
        run = run_client if args.mode == "client" else run_listener
        print(json.dumps(run(args.url, args.deflate)), flush=True)
        return 0
    proto = EchoServer()
    kwargs: dict[str, Any] = {"permessage_deflate": True} if args.deflate else {}
    with lws.Context([proto], port=0, host="127.0.0.1", **kwargs) as ctx:
        signal.signal(signal.SIGTERM, lambda signum, frame: ctx.stop())
        print(f"listening on port {ctx.port}", flush=True)
        ctx.run()
    print(json.dumps({"closes": proto.closes, "pongs": [p.decode() for p in proto.pongs]}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
