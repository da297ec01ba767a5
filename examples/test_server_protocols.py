"""Python twin of the WebSocket protocols of lws' ``libwebsockets-test-server``.

Serves, like the C test server:

* ``http-only`` (protocols[0]): plain HTTP, a small page on ``GET /``;
* ``dumb-increment-protocol``: every 50 ms each client is sent the next
  number of its own counter, as text; the client sends ``reset\\n`` to restart
  the counter at 0, ``closeme\\n`` to be closed with 1001 "seeya";
* ``lws-mirror-protocol``: every message a client sends is mirrored to every
  client of the same mirror instance (``?mirror=name`` in the URL, default
  ""), the sender included. As in C: a shared ring of 32 messages with one
  read position ("tail") per client in its session data, rx flow control on
  the whole instance when the ring is nearly full, and a 3 s timeout for the
  slowest client while it holds the oldest unread message.

Driven by lws' own C client: ``libwebsockets-test-client 127.0.0.1 --port=N``.

    python examples/test_server_protocols.py [--host H] [--port N] [--no-utf8-check]

``--no-utf8-check`` turns lws' UTF-8 validation of text frames off: the C
client's ``--echo`` mode sends random bytes as text frames, which the C test
server (validating) refuses, and this server then mirrors byte for byte.
Prints ``listening on port N``; stops on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

import lws
from lws import c

# enum lws_write_protocol: LWS_WRITE_TEXT is 0 in every lws version (the
# binding exports no name for the raw write flags).
LWS_WRITE_TEXT = 0

DUMB_PERIOD = 0.050          # DUMB_PERIOD_US
QUEUELEN = 32                # mirror ring size
RXFLOW_MIN = 4               # pause the instance below this many free slots
RXFLOW_MAX = (2 * QUEUELEN) // 3   # resume at this many free slots
MAX_MIRROR_INSTANCES = 3
SLOWEST_TIMEOUT = 3          # seconds the slowest client may hold the ring

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>lws for Python test server</title></head>
<body><h1>lws for Python test server</h1>
<p>WebSocket protocols: <code>dumb-increment-protocol</code>, <code>lws-mirror-protocol</code>.</p>
</body></html>
"""


class HttpOnly(lws.Protocol):
    """protocols[0]: the test server's "http-only" protocol (one page)."""

    name = "http-only"

    def on_http(self, conn: lws.Connection, path: str) -> int:
        if path in ("/", "/index.html"):
            return conn.http_respond(200, PAGE, content_type="text/html; charset=utf-8")
        return conn.http_respond(404, "not found\n")


# -- dumb-increment-protocol -------------------------------------------------


class DumbSession(lws.Struct):
    """struct pss__dumb_increment"""

    number: c.int32_t


class DumbIncrement(lws.Protocol):
    name = "dumb-increment-protocol"
    session = DumbSession
    rx_buffer_size = 10

    def __init__(self, period: float = DUMB_PERIOD) -> None:
        self.period = period
        self.sent = 0        # numbers written, all clients

    def on_established(self, conn: lws.Connection) -> None:
        conn.session.number = 0
        conn.set_timer(self.period)

    def on_timer(self, conn: lws.Connection) -> None:
        # As in C: any client's timer asks every client of the protocol to write.
        self.request_writeable_all()
        conn.set_timer(self.period)

    def on_server_writeable(self, conn: lws.Connection) -> int | None:
        pss = conn.session
        text = str(pss.number).encode()
        pss.number += 1
        if conn.write(text, LWS_WRITE_TEXT) < len(text):
            return -1
        self.sent += 1
        return None

    def on_receive(self, conn: lws.Connection, data: bytes) -> int | None:
        if data.startswith(b"reset\n"):
            conn.session.number = 0
        if data.startswith(b"closeme\n"):
            conn.close(1001, "seeya")
        return None


# -- lws-mirror-protocol -----------------------------------------------------


class Ring:
    """A fixed ring of messages read by several tails (lws_ring's model).

    Positions run modulo ``size``; one slot stays empty so that a full ring
    and an empty one differ.
    """

    def __init__(self, size: int) -> None:
        self.size = size + 1
        self.slots: list[bytes | None] = [None] * self.size
        self.head = 0
        self.oldest_tail = 0

    def waiting(self, tail: int) -> int:
        return (self.head - tail) % self.size

    def free(self) -> int:
        return self.size - 1 - self.waiting(self.oldest_tail)

    def insert(self, payload: bytes) -> bool:
        if not self.free():
            return False
        self.slots[self.head] = payload
        self.head = (self.head + 1) % self.size
        return True

    def get(self, tail: int) -> bytes | None:
        return self.slots[tail] if self.waiting(tail) else None

    def consume(self, tail: int) -> int:
        return (tail + 1) % self.size

    def set_oldest_tail(self, tail: int) -> None:
        while self.oldest_tail != tail:         # free what every reader has seen
            self.slots[self.oldest_tail] = None
            self.oldest_tail = (self.oldest_tail + 1) % self.size


@dataclass
class MirrorInstance:
    name: str
    ring: Ring = field(default_factory=lambda: Ring(QUEUELEN))
    members: list[lws.Connection] = field(default_factory=list)
    rx_enabled: bool = True


class MirrorSession(lws.Struct):
    """struct per_session_data__lws_mirror (the wsi and mi live in conn.state)."""

    tail: c.uint32_t


class LwsMirror(lws.Protocol):
    name = "lws-mirror-protocol"
    session = MirrorSession
    rx_buffer_size = 4096

    def __init__(self) -> None:
        self.instances: dict[str, MirrorInstance] = {}
        self.received = 0        # messages (rx chunks) taken into a ring
        self.written = 0         # messages written to clients
        self.dropped = 0

    def on_established(self, conn: lws.Connection) -> int | None:
        name = conn.query.get("mirror", "")
        mi = self.instances.get(name)
        if mi is None:
            if len(self.instances) == MAX_MIRROR_INSTANCES:
                return -1
            mi = self.instances[name] = MirrorInstance(name)
        mi.members.append(conn)
        conn.state = mi
        conn.session.tail = mi.ring.oldest_tail
        return None

    def on_closed(self, conn: lws.Connection) -> None:
        mi: MirrorInstance | None = conn.state
        if mi is None:
            return
        conn.state = None
        if conn in mi.members:
            mi.members.remove(conn)
        if mi.members:
            # The one leaving may have held the oldest tail.
            self._update_worst_tail(mi)
        else:
            del self.instances[mi.name]

    def on_confirm_extension_okay(self, conn: lws.Connection) -> int:
        return 1  # as in C: no compression on the mirror

    def on_receive(self, conn: lws.Connection, data: bytes) -> None:
        mi: MirrorInstance = conn.state
        if not mi.ring.insert(data):
            self.dropped += 1
            if mi.rx_enabled:
                self._rx_flow(mi, False)
        else:
            self.received += 1
            if mi.rx_enabled and mi.ring.free() < RXFLOW_MIN:
                self._rx_flow(mi, False)
        self.request_writeable_all()

    def on_server_writeable(self, conn: lws.Connection) -> int | None:
        mi: MirrorInstance | None = conn.state
        if mi is None:
            return None
        pss = conn.session
        tail = pss.tail
        payload = mi.ring.get(tail)
        if payload is None:
            return None
        held_oldest = tail == mi.ring.oldest_tail
        if conn.write(payload, LWS_WRITE_TEXT) < 0:
            return -1
        self.written += 1
        pss.tail = mi.ring.consume(tail)
        if mi.ring.waiting(pss.tail):
            self.request_writeable_all()
        if held_oldest:
            conn.set_timeout(0)       # no longer the one holding the ring up
            self._update_worst_tail(mi)
        return None

    def _rx_flow(self, mi: MirrorInstance, enable: bool) -> None:
        for member in mi.members:
            if enable:
                member.resume_reading()
            else:
                member.pause_reading()
        mi.rx_enabled = enable

    def _update_worst_tail(self, mi: MirrorInstance) -> None:
        ring = mi.ring
        worst, worst_tail = -1, ring.oldest_tail
        for member in mi.members:
            tail = member.session.tail
            waiting = ring.waiting(tail)
            if waiting > worst:
                worst, worst_tail = waiting, tail
        if worst < 0:
            return
        before = ring.oldest_tail
        ring.set_oldest_tail(worst_tail)
        if ring.oldest_tail == before:
            return
        if not mi.rx_enabled and ring.free() >= RXFLOW_MAX:
            self._rx_flow(mi, True)
        if worst:
            for member in mi.members:   # the slowest must read within 3 s
                if member.session.tail == worst_tail:
                    member.set_timeout(SLOWEST_TIMEOUT)


def protocols(period: float = DUMB_PERIOD) -> list[lws.Protocol]:
    """The test server's protocols, protocols[0] first."""
    return [HttpOnly(), DumbIncrement(period), LwsMirror()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=7681)
    parser.add_argument("--no-utf8-check", action="store_true",
                        help="do not validate UTF-8 in text frames")
    args = parser.parse_args(argv)

    protos = protocols()
    with lws.Context(protos, port=args.port, host=args.host,
                     validate_utf8=not args.no_utf8_check) as ctx:

        def stop(signum: int, frame: Any) -> None:
            # Only ask the loop to stop: raising here could land inside a
            # callback, where cffi would print and drop the exception.
            ctx.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        print(f"listening on port {ctx.port}", flush=True)
        ctx.run()
        mirror = protos[2]
        assert isinstance(mirror, LwsMirror)
        print(f"dumb-increment: {protos[1].sent} numbers sent; mirror: "  # type: ignore[attr-defined]
              f"{mirror.received} received, {mirror.written} written, {mirror.dropped} dropped",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
