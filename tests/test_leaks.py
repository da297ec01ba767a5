"""10,000 connect/close cycles: Python objects and RSS stay flat."""

from __future__ import annotations

import gc
import os
import time

import lws
from lws import c


class Pss(lws.Struct):
    n: c.uint32_t
    name: c.char[16]


class Server(lws.Protocol):
    name = "srv"
    session = Pss

    def on_established(self, conn: lws.Connection) -> None:
        conn.session.n = 1
        conn.state = {"hello": conn.session.name}

    def on_message(self, conn: lws.Connection, message: object) -> None:
        conn.send(b"bye")


class Client(lws.Protocol):
    name = "cli"
    session = Pss

    def on_client_established(self, conn: lws.Connection) -> None:
        conn.send(b"hi")

    def on_message(self, conn: lws.Connection, message: object) -> None:
        conn.close(1000)


def _rss_kib() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _cycles(ctx: lws.Context, client: Client, count: int) -> None:
    done = 0
    pending: list[lws.Connection] = []
    deadline = time.monotonic() + 240
    while done < count:
        assert time.monotonic() < deadline, f"only {done} of {count} cycles finished"
        while len(pending) < 16 and done + len(pending) < count:
            pending.append(ctx.connect(f"ws://127.0.0.1:{ctx.port}/", client, subprotocol="srv"))
        ctx.service(0.01)
        still = [p for p in pending if not p.closed]
        done += len(pending) - len(still)
        pending = still


def test_ten_thousand_cycles_leave_no_growth() -> None:
    client = Client()
    with lws.Context([Server(), client], port=0, host="127.0.0.1") as ctx:
        _cycles(ctx, client, 1000)  # warm up allocator, caches, interned strings
        ctx.service(0)
        gc.collect()
        objects0, rss0 = len(gc.get_objects()), _rss_kib()
        _cycles(ctx, client, 9000)
        deadline = time.monotonic() + 10
        while ctx.connections() and time.monotonic() < deadline:
            ctx.service(0.01)
        gc.collect()
        objects1, rss1 = len(gc.get_objects()), _rss_kib()
        live = len(ctx.connections())
    assert live == 0, f"{live} connections left after the cycles"
    print(f"objects {objects0} -> {objects1}, RSS {rss0} -> {rss1} KiB")
    assert objects1 - objects0 < 500, f"Python objects grew by {objects1 - objects0}"
    assert rss1 - rss0 < 8 * 1024, f"RSS grew by {rss1 - rss0} KiB"


def _open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def test_contexts_created_and_destroyed_leave_no_fd_open() -> None:
    """A server started and stopped in a loop must not run out of fds. lws
    4.2.0 to 4.3.5 leave each context's event pipe (an eventfd) open after
    lws_context_destroy(); the binding closes it (lws/_eventpipe.py)."""
    before = _open_fds()
    for _ in range(5):
        with lws.Context([Server()], port=0, host="127.0.0.1") as ctx:
            ctx.service(0)
    listing = _open_fds()  # holds one fd of its own, another number each time
    assert len(listing - before) <= 1, f"left open: {sorted(listing - before)}"
