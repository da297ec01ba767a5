"""Python twin of lws' minimal-examples/ws-client/minimal-ws-client-echo.

A WebSocket client that connects to a server (default ws://127.0.0.1:7681/,
protocol ``lws-minimal-client-echo``) and sends every message it receives
straight back, keeping fragment boundaries and the text/binary type, one
``lws_write`` per WRITEABLE. ``--greet TEXT`` sends one message first (handy
against an echo server, which then bounces it back and forth ``--count``
times); ``--count N`` closes after N received messages.

    python examples/minimal_ws_client_echo.py [--server H] [--port P]
           [--protocol NAME] [--greet TEXT] [--count N]
"""

from __future__ import annotations

import argparse
import logging

import lws
from lws import c


class Session(lws.Struct):
    rx_messages: c.uint32_t


class ClientEcho(lws.Protocol):
    name = "lws-minimal-client-echo"
    session = Session
    send_queue_limit = 16 << 20

    def __init__(self, greet: str | None, count: int) -> None:
        self.greet = greet
        self.count = count
        self.result: str | None = None

    def on_client_established(self, conn: lws.Connection) -> None:
        logging.info("%r established", conn)
        if self.greet is not None:
            conn.send(self.greet)

    def on_client_receive(self, conn: lws.Connection, data: bytes) -> None:
        final = conn.is_final_fragment
        if final:
            conn.session.rx_messages += 1
        if self.count and conn.session.rx_messages >= self.count:
            self.result = f"echoed {conn.session.rx_messages} messages"
            conn.close(1000, "done")
            return
        conn.send_fragment(data, first=conn.is_first_fragment, final=final,
                           binary=conn.is_binary)

    def on_client_connection_error(self, conn: lws.Connection, message: str) -> None:
        self.result = f"connection error: {message}"
        self.context.stop()

    def on_client_closed(self, conn: lws.Connection) -> None:
        logging.info("%r closed (%s)", conn, conn.close_code)
        self.context.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7681)
    parser.add_argument("--protocol", default=ClientEcho.name,
                        help="subprotocol to ask the server for")
    parser.add_argument("--greet", default=None)
    parser.add_argument("--count", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    proto = ClientEcho(args.greet, args.count)
    with lws.Context([proto]) as ctx:
        ctx.connect(f"ws://{args.server}:{args.port}/", proto, subprotocol=args.protocol)
        try:
            ctx.run()
        except KeyboardInterrupt:
            pass
    print(proto.result or "closed")
    return 0 if proto.result and not proto.result.startswith("connection error") else 1


if __name__ == "__main__":
    raise SystemExit(main())
