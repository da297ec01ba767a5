"""Python twin of lws' minimal-examples/ws-server/minimal-ws-server-echo.

A WebSocket server on port 7681 (or --port) that echoes every message back,
keeping fragment boundaries and the text/binary type, one ``lws_write`` per
WRITEABLE, and pausing rx while too much is queued (rx flow control), as the
C example does with its ring buffer.

    python examples/minimal_ws_server_echo.py [--port N] [--host H] [--once]
"""

from __future__ import annotations

import argparse
import logging

import lws
from lws import c

# How much may wait to be echoed before we stop reading (C: the ring's size).
HIGH_WATER = 8 * 64 * 1024


class Session(lws.Struct):
    """struct per_session_data__minimal_server_echo (the counters part)."""

    rx_messages: c.uint32_t
    tx_fragments: c.uint32_t
    flow_controlled: c.bool


class Echo(lws.Protocol):
    name = "lws-minimal-server-echo"
    session = Session
    rx_buffer_size = 1024
    send_queue_limit = 16 << 20

    def __init__(self, exit_after_one: bool = False) -> None:
        self.exit_after_one = exit_after_one

    def on_established(self, conn: lws.Connection) -> None:
        logging.info("%r established", conn)

    def on_receive(self, conn: lws.Connection, data: bytes) -> None:
        pss = conn.session
        first, final = conn.is_first_fragment, conn.is_final_fragment
        if final:
            pss.rx_messages += 1
        conn.send_fragment(data, first=first, final=final, binary=conn.is_binary)
        if conn.queued_bytes > HIGH_WATER and not pss.flow_controlled:
            pss.flow_controlled = True
            conn.pause_reading()

    def on_server_writeable(self, conn: lws.Connection) -> None:
        # Called once the send queue has drained: safe to read again.
        pss = conn.session
        if pss.flow_controlled:
            pss.flow_controlled = False
            conn.resume_reading()

    def on_closed(self, conn: lws.Connection) -> None:
        logging.info("%r closed after %d messages", conn, conn.session.rx_messages)
        if self.exit_after_one:
            self.context.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=7681)
    parser.add_argument("--once", action="store_true", help="exit after one connection closes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with lws.Context([Echo(args.once)], port=args.port, host=args.host) as ctx:
        print(f"listening on port {ctx.port}", flush=True)
        try:
            ctx.run()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
