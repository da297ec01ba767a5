"""Session views over lws' own buffer: C sees Python's writes; nothing outlives the free."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any

import cffi
import pytest

import lws
from lws.testing import pump

PSS_C = """
struct per_session_data__minimal {
    struct lws *wsi;
    uint32_t tail;
    uint8_t done:1;
    char name[32];
};
"""
Minimal = lws.struct(PSS_C)


@pytest.fixture(scope="module")
def c_reader(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A small C helper that reads a pss the way C callback code would."""
    ffi = cffi.FFI()
    ffi.cdef("""
        uint32_t pss_tail(void *pss);
        int pss_done(void *pss);
        const char *pss_name(void *pss);
        void *pss_wsi(void *pss);
        size_t pss_size(void);
    """)
    ffi.set_source("_pss_reader", "struct lws;\n" + PSS_C + """
        uint32_t pss_tail(void *p) { return ((struct per_session_data__minimal *)p)->tail; }
        int pss_done(void *p) { return ((struct per_session_data__minimal *)p)->done; }
        const char *pss_name(void *p) { return ((struct per_session_data__minimal *)p)->name; }
        void *pss_wsi(void *p) { return ((struct per_session_data__minimal *)p)->wsi; }
        size_t pss_size(void) { return sizeof(struct per_session_data__minimal); }
    """)
    out = tmp_path_factory.mktemp("creader")
    path = ffi.compile(tmpdir=str(out))
    import importlib.util

    spec = importlib.util.spec_from_file_location("_pss_reader", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert Path(path).exists()
    return module


class Pinger(lws.Protocol):
    name = "minimal"
    session = Minimal

    def __init__(self) -> None:
        self.views: list[Any] = []
        self.closed_views: list[Any] = []
        self.c_saw: list[Any] = []
        self.reader: Any = None

    def on_established(self, conn: lws.Connection) -> None:
        pss = conn.session
        pss.wsi = conn
        pss.tail = 0xDEADBEEF
        pss.done = 1
        pss.name = "from python"
        self.views.append(pss)
        if self.reader is not None:
            r, ffi = self.reader.lib, self.reader.ffi
            addr = ffi.cast("void *", pss.address)
            self.c_saw.append((r.pss_tail(addr), r.pss_done(addr),
                               ffi.string(r.pss_name(addr)).decode(),
                               int(ffi.cast("uintptr_t", r.pss_wsi(addr))), r.pss_size()))

    def on_closed(self, conn: lws.Connection) -> None:
        pss = conn.session
        self.closed_views.append((pss, pss.tail, pss.name))


class Client(lws.Protocol):
    name = "client"

    def on_client_established(self, conn: lws.Connection) -> None:
        conn.close(1000)


def _one_session(server: Pinger) -> lws.Connection:
    client = Client()
    with lws.Context([server, client], port=0, host="127.0.0.1") as ctx:
        conn = ctx.connect(f"ws://127.0.0.1:{ctx.port}/", client, subprotocol="minimal")
        pump(ctx, lambda: conn.closed and len(server.closed_views) == 1)
        return conn


def test_c_code_sees_python_writes(c_reader: Any) -> None:
    server = Pinger()
    server.reader = c_reader
    _one_session(server)
    assert Minimal.size == c_reader.lib.pss_size()
    tail, done, name, wsi, size = server.c_saw[0]
    assert (tail, done, name) == (0xDEADBEEF, 1, "from python")
    assert wsi != 0 and size == Minimal.size


def test_views_die_with_the_buffer_and_say_why() -> None:
    server = Pinger()
    _one_session(server)
    view = server.views[0]
    closed_view, tail, name = server.closed_views[0]
    # The close handler still read the session...
    assert (tail, name) == (0xDEADBEEF, b"from python")
    # ...and after the callbacks nothing can touch the freed buffer.
    for v in (view, closed_view):
        assert not v.alive
        with pytest.raises(lws.SessionClosed) as info:
            _ = v.tail
        assert "Connection #" in str(info.value)
        with pytest.raises(ReferenceError):
            v.tail = 1
        assert "closed" in repr(v)
    assert "WS_SERVER_DROP_PROTOCOL" in str(_exc(lambda: view.name))
    assert "callback returned" in str(_exc(lambda: closed_view.name))


def _exc(fn: Any) -> BaseException:
    try:
        fn()
    except BaseException as exc:
        return exc
    raise AssertionError("no exception")


def test_sub_views_die_too() -> None:
    class Arr(lws.Struct):
        xs: lws.c.uint16_t[4]

    got: list[Any] = []

    class P(Pinger):
        session = Arr

        def on_established(self, conn: lws.Connection) -> None:
            xs = conn.session.xs
            xs[2] = 7
            got.append(xs)

        def on_closed(self, conn: lws.Connection) -> None:
            self.closed_views.append(conn.session)

    _one_session(P())
    with pytest.raises(lws.SessionClosed):
        _ = got[0][2]


def test_session_from_another_thread_outside_a_bracket_raises() -> None:
    got: dict[str, Any] = {}

    class P(Pinger):
        def on_closed(self, conn: lws.Connection) -> None:
            # On a worker thread there is no live bracket any more.
            t = threading.Thread(target=lambda: got.setdefault("e", _exc(lambda: conn.session)))
            t.start()
            t.join()
            self.closed_views.append((conn.session, 0, b""))

    _one_session(P())
    assert isinstance(got["e"], lws.SessionClosed)


def test_worker_thread_racing_1000_closes_never_touches_freed_memory() -> None:
    """A worker keeps reading and writing views while lws frees their buffers."""
    views: queue.Queue[Any] = queue.Queue()
    outcomes = {"ok": 0, "closed": 0, "other": []}  # type: dict[str, Any]
    stop = threading.Event()

    class Racer(lws.Protocol):
        name = "minimal"
        session = Minimal

        def on_established(self, conn: lws.Connection) -> None:
            conn.session.tail = 1
            views.put(conn.session)

    class Closer(lws.Protocol):
        name = "client"

        def on_client_established(self, conn: lws.Connection) -> None:
            conn.close(1000)

    def worker() -> None:
        current = None
        while not stop.is_set():
            try:
                current = views.get_nowait()
            except queue.Empty:
                if current is None:
                    time.sleep(0)
                    continue
            try:
                current.tail = current.tail + 1
                current.name = "racer"
                outcomes["ok"] += 1
            except lws.SessionClosed:
                outcomes["closed"] += 1
                current = None
            except BaseException as exc:
                outcomes["other"].append(exc)
                return

    t = threading.Thread(target=worker)
    t.start()
    done = {"n": 0}
    client = Closer()
    try:
        with lws.Context([Racer(), client], port=0, host="127.0.0.1") as ctx:
            cycles = 1000
            pending: list[lws.Connection] = []
            deadline = time.monotonic() + 120
            while done["n"] < cycles and time.monotonic() < deadline:
                while len(pending) < 8 and done["n"] + len(pending) < cycles:
                    pending.append(ctx.connect(f"ws://127.0.0.1:{ctx.port}/", client,
                                               subprotocol="minimal"))
                ctx.service(0.01)
                still = [c for c in pending if not c.closed]
                done["n"] += len(pending) - len(still)
                pending = still
    finally:
        stop.set()
        t.join(10)
    assert done["n"] == 1000
    assert outcomes["other"] == []
    assert outcomes["closed"] > 0, "the worker never saw a view die"
