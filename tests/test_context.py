"""Context: creation errors, the service loop, threads, timers, build features."""

from __future__ import annotations

import gc
import socket
import threading
import time
import weakref
from typing import Any

import pytest

import lws
from lws.testing import pump


class Nop(lws.Protocol):
    name = "nop"


def test_versions_and_features_are_exposed() -> None:
    assert lws.__version__
    assert lws.lws_version.startswith(".".join(map(str, lws.version_tuple()[:2])))
    assert lws.version_tuple()[:2] == tuple(int(x) for x in lws.built_against.split(".")[:2])
    assert set(lws.features) >= {"tls", "http2", "permessage_deflate", "ipv6",
                                 "external_poll", "event_lib_custom"}
    assert all(isinstance(v, bool) for v in lws.features.values())


def test_feature_flags_match_the_build() -> None:
    """Debian's 4.1.6 lacks external poll; the vendored 4.3.5 is built with it."""
    if lws.version_tuple()[:2] == (4, 1):
        assert lws.features["external_poll"] is False
        assert lws.features["event_lib_custom"] is False
        with pytest.raises(lws.FeatureUnavailable) as info:
            lws.require("external_poll")
        assert info.value.option == "LWS_WITH_EXTERNAL_POLL"
        assert "LWS_WITH_EXTERNAL_POLL" in str(info.value)
    else:
        assert lws.features["external_poll"] is True
        assert lws.features["event_lib_custom"] is True
        lws.require("external_poll")
    for always in ("tls", "http2", "permessage_deflate", "ipv6", "client", "server"):
        lws.require(always)  # both builds pin these on


def test_binding_an_address_in_use_fails_at_once_with_lws_lines() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(lws.ContextError) as info:
            lws.Context([Nop()], port=port, host="127.0.0.1")
    assert str(port) in str(info.value)
    assert info.value.log_lines, "the error must carry lws' own lines"


def test_bad_arguments_raise_precise_errors() -> None:
    with pytest.raises(ValueError, match="at least one protocol"):
        lws.Context([])
    with pytest.raises(TypeError, match="Protocol instances"):
        lws.Context([Nop])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="port"):
        lws.Context([Nop()], port=70000)
    with pytest.raises(ValueError, match="two protocols are named"):
        lws.Context([Nop(), Nop()])
    p = Nop()
    with lws.Context([p]) as ctx:
        with pytest.raises(ValueError, match="already belongs"):
            lws.Context([p])
        with pytest.raises(ValueError, match="ws://, wss://"):
            ctx.connect("ftp://127.0.0.1/")
        with pytest.raises(ValueError, match="method= is for http"):
            ctx.connect("ws://127.0.0.1/", method="POST")
        with pytest.raises(ValueError, match="not one of"):
            ctx.connect("ws://127.0.0.1/", "nope")


def test_declaration_errors() -> None:
    with pytest.raises(lws.DeclarationError, match="did you mean on_receive"):
        type("Typo", (lws.Protocol,), {"name": "t", "on_recieve": lambda self, c, d: None})
    with pytest.raises(lws.DeclarationError, match="must take 2 argument"):
        type("Arity", (lws.Protocol,), {"name": "t", "on_receive": lambda self, c: None})
    with pytest.raises(lws.DeclarationError, match="name"):
        type("BadName", (lws.Protocol,), {"name": "has space"})
    with pytest.raises(lws.DeclarationError, match="Struct subclass"):
        type("BadSession", (lws.Protocol,), {"name": "t", "session": dict})
    with pytest.raises(lws.DeclarationError, match="rx_buffer_size"):
        type("BadSize", (lws.Protocol,), {"name": "t", "rx_buffer_size": -1})


def test_per_session_data_size_is_derived() -> None:
    Pss = lws.struct("struct per_session_data__x { uint32_t a; char name[32]; };")

    class P(lws.Protocol):
        name = "p"
        session = Pss

    assert P.per_session_data_size() == Pss.size == 36


def test_service_with_a_timeout_returns() -> None:
    with lws.Context([Nop()]) as ctx:
        start = time.monotonic()
        ctx.service(0.2)
        ctx.service(0)
        assert time.monotonic() - start < 5  # bounded, not a speed check


def test_stop_and_call_soon_threadsafe_from_another_thread() -> None:
    calls: list[int] = []
    with lws.Context([Nop()]) as ctx:
        def other() -> None:
            time.sleep(0.05)
            ctx.call_soon_threadsafe(calls.append, threading.get_ident())
            time.sleep(0.05)
            ctx.stop()

        t = threading.Thread(target=other)
        t.start()
        ctx.run()
        t.join()
    assert calls and calls[0] != threading.get_ident()


def test_call_later_fires_and_cancel_works() -> None:
    fired: list[str] = []
    with lws.Context([Nop()]) as ctx:
        ctx.call_later(0.01, fired.append, "a")
        h = ctx.call_later(0.02, fired.append, "cancelled")
        h.cancel()
        ctx.call_later(0.05, fired.append, "b")
        pump(ctx, lambda: len(fired) >= 2)
        ctx.service(0.1)
    assert fired == ["a", "b"]


def test_connection_timer_and_timeout() -> None:
    events: list[str] = []

    class Timed(lws.Protocol):
        name = "timed"

        def on_established(self, conn: lws.Connection) -> None:
            conn.set_timer(0.01)

        def on_timer(self, conn: lws.Connection) -> None:
            events.append("timer")
            conn.set_timeout(1)

        def on_closed(self, conn: lws.Connection) -> None:
            events.append("closed")

    class Cli(lws.Protocol):
        name = "cli"

    with lws.Context([Timed(), Cli()], port=0, host="127.0.0.1") as ctx:
        conn = ctx.connect(f"ws://127.0.0.1:{ctx.port}/", "cli", subprotocol="timed")
        pump(ctx, lambda: "closed" in events, timeout=10)
        pump(ctx, lambda: conn.closed)
    assert events == ["timer", "closed"]


def test_set_timer_needs_a_timer_handler() -> None:
    errors: list[Exception] = []

    class NoTimer(lws.Protocol):
        name = "nt"

        def on_established(self, conn: lws.Connection) -> None:
            try:
                conn.set_timer(1)
            except lws.LwsError as exc:
                errors.append(exc)
            conn.close()

    class Cli(lws.Protocol):
        name = "cli"

    with lws.Context([NoTimer(), Cli()], port=0, host="127.0.0.1") as ctx:
        conn = ctx.connect(f"ws://127.0.0.1:{ctx.port}/", "cli", subprotocol="nt")
        pump(ctx, lambda: conn.closed)
    assert errors and "on_timer" in str(errors[0])


def test_context_state_and_protocol_instance_data() -> None:
    class Room(lws.Protocol):
        name = "room"

        def __init__(self) -> None:
            self.joined = 0

        def on_established(self, conn: lws.Connection) -> None:
            self.joined += 1
            self.context.state["seen"] += 1
            conn.close()

    class Cli(lws.Protocol):
        name = "cli"

    room = Room()
    with lws.Context([room, Cli()], port=0, host="127.0.0.1", state={"seen": 0}) as ctx:
        conns = [ctx.connect(f"ws://127.0.0.1:{ctx.port}/", "cli", subprotocol="room")
                 for _ in range(3)]
        pump(ctx, lambda: all(c.closed for c in conns))
        assert ctx.state == {"seen": 3}
    assert room.joined == 3
    with pytest.raises(RuntimeError):
        _ = room.context  # released with the context


def test_closed_context_refuses_work_and_releases_handles() -> None:
    ctx = lws.Context([Nop()])
    ctx.close()
    ctx.close()
    assert ctx.closed
    with pytest.raises(lws.LwsError, match="closed"):
        ctx.run()
    with pytest.raises(lws.LwsError, match="closed"):
        ctx.connect("ws://127.0.0.1/")
    ref = weakref.ref(ctx)
    del ctx
    gc.collect()
    assert ref() is None, "a closed context must not be kept alive by its own handles"


def test_run_twice_on_two_threads_is_refused() -> None:
    errors: list[Any] = []
    with lws.Context([Nop()]) as ctx:
        t = threading.Thread(target=ctx.run)
        t.start()
        time.sleep(0.1)
        try:
            ctx.run()
        except lws.LwsError as exc:
            errors.append(exc)
        ctx.stop()
        t.join(5)
    assert errors and "another thread" in str(errors[0])
