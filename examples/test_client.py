"""Python twin of lws' ``libwebsockets-test-client``: its two WebSocket protocols.

Connects to a server (lws' ``libwebsockets-test-server``, or
``examples/test_server_protocols.py``) with two connections:

* ``dumb-increment-protocol``: prints every number the server sends
  (``rx <len> '<number>'``);
* ``lws-mirror-protocol``: draws random circles: sends ``c #RRGGBB x y r;``
  messages, one per WRITEABLE, for a random lifetime of messages, then closes;
  the server mirrors them to every client of the mirror (this one included).

Like the C client, a connection that ends is opened again after 2 s. Extras
for tests: ``--echo`` sends ``--blocks`` blocks of random text on the mirror
and checks that exactly that comes back; ``--reset-after N`` / ``--closeme-after N``
send the dumb-increment commands; ``--pace S`` spaces the circles; ``--duration S``
stops after S seconds.

    python examples/test_client.py 127.0.0.1 [--port N] [--once] [--justmirror]
           [--nomirror] [--echo] [--lifetime N] [--duration S]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import lws

LWS_WRITE_TEXT = 0          # enum lws_write_protocol (no public name in the binding)
RECONNECT_EVERY = 2.0       # ratelimit_connects(..., 2)
BLOCK_SIZE = 3 * 4096
CIRCLE = re.compile(r"c #[0-9A-F]{6} \d+ \d+ \d+;")


@dataclass
class Summary:
    """What the client saw (also what ``--json`` prints)."""

    dumb_numbers: list[int] = field(default_factory=list)
    dumb_connects: int = 0
    dumb_closes: list[tuple[int | None, str]] = field(default_factory=list)
    mirror_connects: int = 0
    mirror_sent: list[str] = field(default_factory=list)
    mirror_received: list[str] = field(default_factory=list)
    echo_sent_bytes: int = 0
    echo_received_bytes: int = 0
    echo_errors: int = 0
    echo_complete: bool = False
    errors: list[str] = field(default_factory=list)


class DumbIncrementClient(lws.Protocol):
    name = "dumb-increment-protocol"
    rx_buffer_size = 20

    def __init__(self, summary: Summary, reset_after: int = 0, closeme_after: int = 0,
                 quiet: bool = False) -> None:
        self.summary = summary
        self.reset_after = reset_after
        self.closeme_after = closeme_after
        self.quiet = quiet
        self.received = 0

    def on_client_established(self, conn: lws.Connection) -> None:
        self.summary.dumb_connects += 1
        self.received = 0

    def on_client_receive(self, conn: lws.Connection, data: bytes) -> None:
        text = data.decode("ascii", "replace")
        if not self.quiet:
            print(f"rx {len(data)} '{text}'", flush=True)
        try:
            self.summary.dumb_numbers.append(int(text))
        except ValueError:
            self.summary.errors.append(f"dumb-increment sent {text!r}")
        self.received += 1
        if self.received == self.reset_after:
            conn.send("reset\n")
        if self.received == self.closeme_after:
            conn.send("closeme\n")

    def on_client_closed(self, conn: lws.Connection) -> None:
        self.summary.dumb_closes.append((conn.close_code, conn.close_reason))

    def on_client_connection_error(self, conn: lws.Connection, message: str) -> None:
        self.summary.errors.append(f"dumb: connection error: {message}")


class MirrorClient(lws.Protocol):
    name = "lws-mirror-protocol"
    rx_buffer_size = 4096

    def __init__(self, summary: Summary, lifetime: int | None = None, echo_blocks: int = 0,
                 no_traffic: bool = False, seed: int | None = None, pace: float = 0.0) -> None:
        self.summary = summary
        self.pace = pace
        self.lifetime_setting = lifetime
        self.echo_blocks = echo_blocks
        self.no_traffic = no_traffic
        self.rng = random.Random(seed)
        self.lifetime = 0
        self.done = False
        self._tx = random.Random()
        self._rx = random.Random()
        self._tx_blocks = 0

    def on_client_established(self, conn: lws.Connection) -> None:
        self.summary.mirror_connects += 1
        if self.echo_blocks:
            seed = self.rng.getrandbits(32)
            self._tx.seed(seed)
            self._rx.seed(seed)
            self._tx_blocks = 0
        else:
            self.lifetime = self.lifetime_setting or 16384 + self.rng.randrange(65536)
            print(f"opened mirror connection with {self.lifetime} lifetime", flush=True)
        if not self.no_traffic:
            self.request_writeable_all()   # the C client's lws_callback_on_writable(wsi)

    def on_client_writeable(self, conn: lws.Connection) -> int | None:
        if self.no_traffic or self.done:
            return None
        if self.echo_blocks:
            if self._tx_blocks == self.echo_blocks:
                return None
            block = _text_block(self._tx)
            if conn.write(block, LWS_WRITE_TEXT) < len(block):
                return -1
            self._tx_blocks += 1
            self.summary.echo_sent_bytes += len(block)
            if self._tx_blocks < self.echo_blocks:
                self.request_writeable_all()
            return None
        if self.lifetime <= 0:
            return None                     # closing: nothing more to send
        r = self.rng
        circle = (f"c #{r.getrandbits(24):06X} {r.getrandbits(9)} {r.getrandbits(8)} "
                  f"{r.getrandbits(5) + 1};")
        data = circle.encode()
        if conn.write(data, LWS_WRITE_TEXT) < len(data):
            return -1
        self.summary.mirror_sent.append(circle)
        self.lifetime -= 1
        if self.lifetime <= 0:
            print("closing mirror session", flush=True)
            conn.close(1000, "lifetime over")
        elif self.pace:
            self.context.call_later(self.pace, self.request_writeable_all)
        else:
            self.request_writeable_all()
        return None

    def on_client_receive(self, conn: lws.Connection, data: bytes) -> None:
        if not self.echo_blocks:
            self.summary.mirror_received.append(data.decode("utf-8", "replace"))
            return
        expected = _text_bytes(self._rx, len(data))
        if data != expected:
            self.summary.echo_errors += 1
            print(f"mismatch after {self.summary.echo_received_bytes} bytes", flush=True)
            conn.close(1000, "mismatch")
            self.done = True
            return
        self.summary.echo_received_bytes += len(data)
        if self.summary.echo_received_bytes == self.echo_blocks * BLOCK_SIZE:
            print(f"Everything received: errs {self.summary.echo_errors}", flush=True)
            self.summary.echo_complete = True
            self.done = True
            conn.close(1000, "done")

    def on_client_closed(self, conn: lws.Connection) -> None:
        print(f"mirror: closed ({conn.close_code}), sent {len(self.summary.mirror_sent)}, "
              f"received {len(self.summary.mirror_received)}", flush=True)

    def on_client_connection_error(self, conn: lws.Connection, message: str) -> None:
        self.summary.errors.append(f"mirror: connection error: {message}")


_ALPHABET = bytes(range(0x20, 0x7f))


def _text_bytes(rng: random.Random, n: int) -> bytes:
    return bytes(_ALPHABET[rng.getrandbits(7) % len(_ALPHABET)] for _ in range(n))


def _text_block(rng: random.Random) -> bytes:
    return _text_bytes(rng, BLOCK_SIZE)


def run(host: str, port: int, *, duration: float | None = None, once: bool = False,
        justmirror: bool = False, nomirror: bool = False, lifetime: int | None = None,
        echo_blocks: int = 0, reset_after: int = 0, closeme_after: int = 0,
        path: str = "/", quiet: bool = False, seed: int | None = None,
        pace: float = 0.0) -> Summary:
    """Run the client until ``duration`` passes, or (``once``/echo) the mirror closes."""
    summary = Summary()
    dumb = DumbIncrementClient(summary, reset_after, closeme_after, quiet)
    mirror = MirrorClient(summary, lifetime, echo_blocks, nomirror, seed, pace)
    want_dumb = not (justmirror or echo_blocks)
    url = f"ws://{host}:{port}{path}"
    deadline = None if duration is None else time.monotonic() + duration
    with lws.Context([dumb, mirror]) as ctx:
        conns: dict[str, lws.Connection | None] = {"dumb": None, "mirror": None}
        last: dict[str, float] = {"dumb": -RECONNECT_EVERY, "mirror": -RECONNECT_EVERY}
        mirror_opened = False
        while deadline is None or time.monotonic() < deadline:
            now = time.monotonic()
            for key, proto, wanted in (("dumb", dumb, want_dumb), ("mirror", mirror, True)):
                conn = conns[key]
                if not wanted or (conn is not None and not conn.closed):
                    continue
                if key == "mirror" and mirror_opened and (once or echo_blocks):
                    return summary          # the C client's force_exit on CLIENT_CLOSED
                if now - last[key] < RECONNECT_EVERY:
                    continue
                last[key] = now
                print(f"{key}: connecting", flush=True)
                try:
                    conns[key] = ctx.connect(url, proto)
                except lws.ConnectError as exc:
                    summary.errors.append(f"{key}: {exc}")
                    conns[key] = None
                if key == "mirror":
                    mirror_opened = True
            ctx.service(0.05)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="server host (or ws://host:port/path)")
    parser.add_argument("--port", type=int, default=7681)
    parser.add_argument("--once", action="store_true", help="exit when the mirror closes")
    parser.add_argument("--justmirror", action="store_true", help="no dumb-increment connection")
    parser.add_argument("--nomirror", action="store_true", help="no mirror traffic")
    parser.add_argument("--echo", action="store_true", help="send random text blocks, check them")
    parser.add_argument("--blocks", type=int, default=1024, help="blocks for --echo")
    parser.add_argument("--lifetime", type=int, default=None, help="circles per mirror session")
    parser.add_argument("--pace", type=float, default=0.0,
                        help="seconds between circles (default: one per WRITEABLE)")
    parser.add_argument("--reset-after", type=int, default=0)
    parser.add_argument("--closeme-after", type=int, default=0)
    parser.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    parser.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    args = parser.parse_args(argv)
    host, port, path = args.address, args.port, "/"
    found = re.match(r"wss?://([^/:]+)(?::(\d+))?(/.*)?$", args.address)
    if found:
        host, port, path = found.group(1), int(found.group(2) or port), found.group(3) or "/"
    try:
        summary = run(host, port, duration=args.duration, once=args.once,
                      justmirror=args.justmirror, nomirror=args.nomirror,
                      lifetime=args.lifetime, echo_blocks=args.blocks if args.echo else 0,
                      reset_after=args.reset_after, closeme_after=args.closeme_after,
                      path=path, quiet=args.json, pace=args.pace)
    except KeyboardInterrupt:
        return 0
    if args.json:
        data: dict[str, Any] = asdict(summary)
        print(json.dumps(data))
    if args.echo:
        return 0 if summary.echo_complete and not summary.echo_errors else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
