"""The pytest plugin (lws.pytest_plugin), run through pytester on the real lws.

Each test writes a small test file and runs pytest on it in-process, so the
fixtures are exercised the way a user's suite uses them, including their
failures: the recorder must turn a broken invariant into a failed test.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import lws
from lws import testing
from lws.testing import Event, LifecycleError, Recorder

pytest_plugins = ["pytester"]

R = lws.Reason
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "test_integration_example.py"

# The plugin is registered under the entry point's name when lws-cffi is
# installed; block that and load the module by name, so both a source tree and
# an installed package give one registration.
PLUGIN_ARGS = ("-p", "no:lws", "-p", "lws.pytest_plugin", "-p", "no:cacheprovider")

COMMON = '''
import threading
import pytest
import lws
from lws import c
from lws.testing import ws_url


class Count(lws.Struct):
    n: c.uint32_t


class Echo(lws.Protocol):
    name = "echo"
    session = Count

    def on_message(self, conn, message):
        conn.session.n += 1
        conn.send(message)


def lws_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("lws-")]
'''


def run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_inner=COMMON + source)
    return pytester.runpytest(*PLUGIN_ARGS, *args)


# -- lws_server / lws_client ----------------------------------------------------


def test_server_fixture_serves_and_closes_after_the_test(pytester: pytest.Pytester) -> None:
    result = run(pytester, '''
from websockets.sync.client import connect

SEEN = []

def test_serve(lws_server):
    ctx = lws_server(Echo)  # a class is instantiated
    assert isinstance(ctx, lws.Context) and ctx.port > 0 and not ctx.closed
    SEEN.append(ctx)
    with connect(ws_url(ctx), subprotocols=["echo"], open_timeout=5) as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"

def test_two_servers_and_an_instance(lws_server):
    a = lws_server(Echo())
    b = lws_server(Echo(), port=0, host="127.0.0.1", validate_utf8=False)
    assert a.port != b.port
    SEEN.extend([a, b])

def test_after():
    assert len(SEEN) == 3 and all(ctx.closed for ctx in SEEN)
    assert lws_threads() == []
''')
    result.assert_outcomes(passed=3)


def test_server_fixture_refuses_a_call_without_protocols(pytester: pytest.Pytester) -> None:
    result = run(pytester, '''
def test_empty(lws_server):
    with pytest.raises(TypeError, match="at least one protocol"):
        lws_server()
''')
    result.assert_outcomes(passed=1)


def test_client_fixture_round_trip(pytester: pytest.Pytester) -> None:
    result = run(pytester, '''
from lws.testing import MessageClient

def test_round_trip(lws_server, lws_client):
    ctx = lws_server(Echo)
    cl = lws_client(ctx, subprotocol="echo").wait_established()
    assert isinstance(cl.protocol, MessageClient)
    cl.send("text")
    cl.send(b"\\x00bin")
    assert cl.recv() == "text"
    assert cl.recv() == b"\\x00bin"
    with pytest.raises(TimeoutError):
        cl.recv(timeout=0.2)
    cl.close(4000, "done")
    cl.wait_closed()
    with pytest.raises(lws.ConnectionClosed):
        cl.recv()
    assert cl.protocol.messages == ["text", b"\\x00bin"]

def test_url_and_path(lws_server, lws_client):
    ctx = lws_server(Echo)
    cl = lws_client(ws_url(ctx, "/some/path?x=1"), subprotocol="echo")
    cl.wait_established().send("x")
    assert cl.recv() == "x"

def test_server_closes_first(lws_server, lws_client):
    class Bye(Echo):
        def on_message(self, conn, message):
            conn.close(4001, "bye")
    ctx = lws_server(Bye)
    cl = lws_client(ctx, subprotocol="echo").wait_established()
    cl.send("x")
    cl.wait_closed()
    assert cl.connection.close_code == 4001
    assert cl.connection.close_reason == "bye"

def test_own_client_protocol(lws_server, lws_client):
    class Mine(lws.Protocol):
        name = "echo"
        def __init__(self):
            self.got = []
        def on_client_established(self, conn):
            conn.send("mine")
        def on_message(self, conn, message):
            self.got.append(message)
    ctx = lws_server(Echo)
    proto = Mine()
    cl = lws_client(ctx, proto)       # subprotocol defaults to the name
    cl.wait(lambda: proto.got == ["mine"])
    with pytest.raises(TypeError, match="MessageClient"):
        cl.recv()

def test_refused(lws_client, free_port):
    cl = lws_client(f"ws://127.0.0.1:{free_port}/")
    with pytest.raises(lws.ConnectError):
        cl.wait_established()

@pytest.fixture
def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def test_after():
    assert lws_threads() == []
''')
    result.assert_outcomes(passed=6)


def test_fixtures_clean_up_when_the_test_fails(pytester: pytest.Pytester) -> None:
    result = run(pytester, '''
KEPT = []

def test_fails(lws_server, lws_client, lws_recorder):
    ctx = lws_server(Echo)
    cl = lws_client(ctx, subprotocol="echo").wait_established()
    KEPT.extend([ctx, cl.context])
    assert lws_threads()
    raise RuntimeError("the test itself fails")

def test_fails_while_a_client_is_pending(lws_client):
    cl = lws_client("ws://127.0.0.1:9/")
    KEPT.append(cl.context)
    assert False, "failing early"

def test_after():
    assert len(KEPT) == 3 and all(ctx.closed for ctx in KEPT)
    assert lws_threads() == []
''')
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*RuntimeError: the test itself fails*"])
    assert "LifecycleError" not in result.stdout.str()


# -- lws_recorder -----------------------------------------------------------------


def test_recorder_sees_both_sides_and_checks_after_the_contexts_closed(
        pytester: pytest.Pytester) -> None:
    # check() is replaced to capture what the recorder had at check time: it
    # must already hold WSI_DESTROY of every connection (the contexts closed
    # first), whichever order the test asked for the fixtures in.
    result = run(pytester, '''
AT_CHECK = []

def spy(rec):
    real = rec.check
    def check():
        AT_CHECK.append({k: [e.reason for e in v] for k, v in rec.sequences().items()})
        real()
    rec.check = check

def test_recorder_first(lws_recorder, lws_server, lws_client):
    spy(lws_recorder)
    cl = lws_client(lws_server(Echo), subprotocol="echo").wait_established()
    cl.send("x")
    assert cl.recv() == "x"

def test_recorder_last(lws_server, lws_client, lws_recorder):
    spy(lws_recorder)
    cl = lws_client(lws_server(Echo), subprotocol="echo").wait_established()
    cl.send("x")
    assert cl.recv() == "x"

def test_after():
    R = lws.Reason
    assert len(AT_CHECK) == 2
    for seqs in AT_CHECK:
        ws = [s for s in seqs.values() if R.ESTABLISHED in s or R.CLIENT_ESTABLISHED in s]
        assert len(ws) == 2, seqs
        for s in ws:
            assert s[-1] is R.WSI_DESTROY, s
''')
    result.assert_outcomes(passed=3)


def test_recorder_passes_a_clean_run_with_keepalive_http(pytester: pytest.Pytester) -> None:
    result = run(pytester, '''
import http.client

class Page(lws.Protocol):
    name = "http"
    session = Count

    def on_http(self, conn, path):
        conn.session.n += 1
        return conn.http_respond(200, f"n={conn.session.n}")

def test_keepalive(lws_server, lws_recorder):
    ctx = lws_server(Page)
    client = http.client.HTTPConnection("127.0.0.1", ctx.port, timeout=5)
    for _ in range(3):
        client.request("GET", "/")
        assert client.getresponse().read() == b"n=1"
    client.close()
''')
    result.assert_outcomes(passed=1)


def test_recorder_fails_a_handler_that_swallows_session_closed(
        pytester: pytest.Pytester) -> None:
    result = run(pytester, '''
class Stale(Echo):
    def on_established(self, conn):
        self.kept = conn.session            # the WebSocket session's view...

    def on_closed(self, conn):
        try:
            self.kept.n += 1                # ...is freed once WS_SERVER_DROP returned
        except lws.SessionClosed:
            pass                            # and the bug is hidden

def test_swallowed(lws_server, lws_client, lws_recorder):
    cl = lws_client(lws_server(Stale), subprotocol="echo").wait_established()
    cl.close()
    cl.wait_closed()
''')
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([
        "*ERROR at teardown of test_swallowed*",
        "*LifecycleError: lws lifecycle invariants broken:*",
        "*Stale.on_closed (protocol 'echo', connection *) used a freed session view at "
        "test_inner.py:* in on_closed*caught inside the handler*",
    ])
    assert "WS_SERVER_DROP_PROTOCOL" in result.stdout.str()


def test_recorder_fails_session_closed_escaping_a_handler(pytester: pytest.Pytester) -> None:
    result = run(pytester, '''
KEPT = []

class Late(Echo):
    def on_message(self, conn, message):
        KEPT.append(conn.session)
        if len(KEPT) == 2:
            # the first connection's buffer is long gone
            conn.send(str(KEPT[0].n))
        else:
            conn.send(message)

def test_escaped(lws_server, lws_client, lws_recorder):
    ctx = lws_server(Late)
    first = lws_client(ctx, subprotocol="echo").wait_established()
    first.send("a")
    assert first.recv() == "a"
    first.close()
    first.wait_closed()
    second = lws_client(ctx, subprotocol="echo").wait_established()
    second.send("b")
    second.wait_closed()          # the server closes it with 1011
    assert second.connection.close_code == 1011
''')
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([
        "*Late.on_message (protocol 'echo', connection *) used a freed session view at "
        "test_inner.py:*"
        "raised out of the handler*",
    ])


def test_recorder_reports_broken_invariants(pytester: pytest.Pytester) -> None:
    # lws keeps its invariants, so the broken sequences are written by hand.
    result = run(pytester, '''
from lws.testing import Event
R = lws.Reason

def test_after_destroy(lws_recorder):
    lws_recorder.events += [Event(1, R.ESTABLISHED), Event(1, R.WSI_DESTROY),
                            Event(1, R.RECEIVE)]

def test_error_and_closed(lws_recorder):
    lws_recorder.events += [Event(2, R.CLIENT_CONNECTION_ERROR), Event(2, R.CLIENT_CLOSED)]

def test_unbalanced(lws_recorder):
    lws_recorder.events += [
        Event(3, R.WS_SERVER_DROP_PROTOCOL, protocol="p"),
        Event(4, R.HTTP_BIND_PROTOCOL, address=1, protocol="p"),
        Event(4, R.HTTP_BIND_PROTOCOL, address=2, protocol="p"),
        Event(5, R.HTTP_BIND_PROTOCOL, address=3, protocol="p"),
        Event(5, R.WSI_DESTROY, protocol="p"),
    ]

def test_fine(lws_recorder):
    lws_recorder.events += [
        Event(6, R.CLIENT_HTTP_BIND_PROTOCOL, protocol="c"),   # no session: no DROP due
        Event(6, R.CLIENT_CLOSED, protocol="c"), Event(6, R.WSI_DESTROY, protocol="c"),
    ]
''')
    result.assert_outcomes(passed=4, errors=3)
    result.stdout.fnmatch_lines_random([
        "*connection 1: ?'RECEIVE'? after WSI_DESTROY*",  # (fnmatch: [ is a class)
        "*connection 2: both CLIENT_CONNECTION_ERROR and CLIENT_CLOSED*",
        "*connection 3: WS_SERVER_DROP_PROTOCOL to 'p' without a bind*",
        "*connection 4: HTTP_BIND_PROTOCOL while 'p' is still bound*",
        "*connection 5: ended (WSI_DESTROY) with no DROP for HTTP_BIND_PROTOCOL ('p')*",
    ])


def test_recorder_instrument_and_recorded(pytester: pytest.Pytester) -> None:
    result = run(pytester, '''
from lws.testing import pump

def test_manual(lws_recorder):
    server = lws_recorder.instrument(Echo())
    Client = lws_recorder.recorded(Echo)
    assert Client.__name__ == "EchoRecorded"

    class Cli(Client):
        name = "cli"
        def on_client_established(self, conn):
            conn.close()

    cli = Cli()
    with lws.Context([server, cli], port=0, host="127.0.0.1") as ctx:
        conn = ctx.connect(f"ws://127.0.0.1:{ctx.port}/", cli, subprotocol="echo")
        pump(ctx, lambda: conn.closed and not ctx.connections())
        with pytest.raises(ValueError, match="already belongs"):
            lws_recorder.instrument(lws.testing.MessageClient()) and None
            other = Echo()
            with lws.Context([other]):
                lws_recorder.instrument(other)
    assert lws_recorder.instrument(server) is server
    assert lws.Reason.CLIENT_ESTABLISHED in lws_recorder.reasons(conn)
''')
    result.assert_outcomes(passed=1)


def test_recorder_keeps_handler_errors_without_failing(pytester: pytest.Pytester) -> None:
    result = run(pytester, '''
class Broken(Echo):
    def on_message(self, conn, message):
        raise ValueError("boom")

def test_errors(lws_server, lws_client, lws_recorder):
    cl = lws_client(lws_server(Broken), subprotocol="echo").wait_established()
    cl.send("x")
    cl.wait_closed()
    assert cl.connection.close_code == 1011
    [(where, exc)] = lws_recorder.errors
    assert where.endswith("Broken.on_message") and str(exc) == "boom"
''')
    result.assert_outcomes(passed=1)


def test_integration_example(pytester: pytest.Pytester) -> None:
    """examples/test_integration_example.py, run as a user's suite would run it."""
    pytester.makepyfile(test_integration_example=EXAMPLE.read_text())
    result = pytester.runpytest(*PLUGIN_ARGS, "-v")
    result.assert_outcomes(passed=3)


# -- lws.testing without pytester ------------------------------------------------


def test_problems_lists_each_broken_invariant() -> None:
    rec = Recorder()
    rec.events += [Event(1, R.WSI_DESTROY), Event(1, R.WSI_DESTROY),
                   Event(1, R.WSI_DESTROY, context=1)]
    assert rec.problems() == ["connection 1: ['WSI_DESTROY'] after WSI_DESTROY"]
    with pytest.raises(LifecycleError, match="after WSI_DESTROY"):
        rec.check()
    # LifecycleError is an AssertionError: pytest shows it as a failed check.
    assert issubclass(LifecycleError, AssertionError)


def test_recorder_keys_connections_by_context() -> None:
    """Connection ids restart in each context; one recorder keeps them apart."""

    class P(lws.Protocol):
        name = "p"

        def on_client_established(self, conn: lws.Connection) -> None:
            conn.close()

    rec = Recorder()
    with testing.server(P, recorder=rec) as ctx:
        for _ in range(2):
            with testing.client(ctx, P, recorder=rec) as cl:
                cl.wait_closed()
    keys = list(rec.sequences())
    assert len({cid for _, cid in keys}) < len(keys)   # the same id in two contexts
    rec.check()


def test_serving_survives_an_immediate_stop() -> None:
    class P(lws.Protocol):
        name = "p"

    started = time.monotonic()
    for _ in range(30):
        with lws.Context([P()], port=0, host="127.0.0.1") as ctx, testing.serving(ctx):
            pass
        assert ctx.closed
    assert time.monotonic() - started < 20
    assert not [t for t in threading.enumerate() if t.name == "lws-service"]


def test_serving_reraises_what_ended_the_loop() -> None:
    class P(lws.Protocol):
        name = "p"

    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with lws.Context([P()], port=0, host="127.0.0.1") as ctx, testing.serving(ctx):
            ctx.call_soon_threadsafe(interrupt)
            testing.wait_until(lambda: not [t for t in threading.enumerate()
                                            if t.name == "lws-service"])
    assert ctx.closed


def test_run_on_lws_thread_and_wait_until() -> None:
    seen: list[Any] = []

    class Rec(lws.Protocol):
        name = "rec"

        def on_established(self, conn: lws.Connection) -> None:
            seen.append(conn)

    with testing.server(Rec) as ctx, testing.client(ctx, subprotocol="rec") as cl:
        cl.wait_established()
        testing.wait_until(lambda: bool(seen))
        assert testing.run_on_lws_thread(ctx, lambda: len(ctx.connections())) >= 1
        assert testing.run_on_lws_thread(ctx, threading.get_ident) != threading.get_ident()
        with pytest.raises(ZeroDivisionError):
            testing.run_on_lws_thread(ctx, lambda: 1 // 0)
    with pytest.raises(TimeoutError, match="never"):
        testing.wait_until(lambda: False, 0.05, message="never")


def test_ws_url() -> None:
    class P(lws.Protocol):
        name = "p"

    with testing.server(P) as ctx:
        assert testing.ws_url(ctx) == f"ws://127.0.0.1:{ctx.port}/"
        assert testing.ws_url(ctx, "x?y=1", scheme="wss").endswith(f":{ctx.port}/x?y=1")


def test_recording_keeps_the_base_raw_callback() -> None:
    """A protocol ported with a raw callback keeps it when it is recorded."""
    seen: list[lws.Reason] = []

    class Raw(lws.Protocol):
        name = "raw"
        raw_reasons = frozenset({R.ESTABLISHED, R.RECEIVE})

        def callback(self, conn: Any, reason: lws.Reason, session: Any, in_: Any) -> None:
            seen.append(reason)
            if reason is R.RECEIVE:
                conn.send(in_)

    rec = Recorder()
    recorded = testing.recording(Raw, rec, frozenset({R.WSI_DESTROY}))
    with testing.server(recorded) as ctx, testing.client(ctx, subprotocol="raw") as cl:
        cl.wait_established().send(b"x")
        assert cl.recv() == b"x"
    assert seen == [R.ESTABLISHED, R.RECEIVE]
    assert set(rec.reasons()) == {R.WSI_DESTROY}
    rec.check()
