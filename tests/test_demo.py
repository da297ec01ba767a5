"""The chat protocol of ``python -m lws demo``, with websockets clients (no browser).

Every test runs the real CLI as a subprocess on an ephemeral port.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidMessage
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin, Subprotocol

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
DEMO = [sys.executable, "-m", "lws", "demo"]
CHAT = [Subprotocol("lws-chat")]


class Demo:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path, url: str) -> None:
        self.proc = proc
        self.log_path = log
        self.url = url
        self.ws_url = "ws" + url[len("http"):]

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 5) -> str:
        end = time.monotonic() + timeout
        while text not in self.log:
            if time.monotonic() > end:
                raise AssertionError(f"{text!r} not in the demo's output:\n{self.log}")
            time.sleep(0.02)
        return self.log

    def client(self, stack: ExitStack, **kwargs: Any) -> ClientConnection:
        ws: ClientConnection = stack.enter_context(connect(self.ws_url, subprotocols=CHAT,
                                         open_timeout=5, close_timeout=2, **kwargs))
        return ws


def _start_demo(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / f"demo-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*DEMO, *args], stdout=out, stderr=subprocess.STDOUT, env=ENV)
    return proc, log


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    proc, log = _start_demo(tmp_path, "--port", "0")
    try:
        end = time.monotonic() + 20
        while not (match := re.search(r"on (http://\S+/) ", log.read_text())):
            assert proc.poll() is None and time.monotonic() < end, log.read_text()
            time.sleep(0.02)
        yield Demo(proc, log, match.group(1))
    finally:
        _stop(proc)


def recv(ws: ClientConnection, kind: str | None = None, timeout: float = 5) -> dict[str, Any]:
    """The next message (of type ``kind``, skipping others), parsed."""
    end = time.monotonic() + timeout
    while True:
        raw = ws.recv(timeout=max(0.01, end - time.monotonic()))
        assert isinstance(raw, str)
        msg = json.loads(raw)
        assert isinstance(msg, dict)
        if kind is None or msg["type"] == kind:
            return msg


def join(ws: ClientConnection) -> dict[str, Any]:
    """Read the welcome and the joiner's own presence message; return the welcome."""
    welcome = recv(ws)
    assert welcome["type"] == "welcome"
    presence = recv(ws)
    assert presence["type"] == "presence" and presence["event"] == "join"
    assert presence["nick"] == welcome["nick"]
    return welcome


def nick(ws: ClientConnection, name: str) -> None:
    ws.send(json.dumps({"type": "nick", "nick": name}))


def say(ws: ClientConnection, text: Any) -> None:
    ws.send(json.dumps({"type": "message", "text": text}))


def quiet(ws: ClientConnection, wait: float = 0.3) -> None:
    """Nothing more arrives for ``wait`` seconds."""
    with pytest.raises(TimeoutError):
        ws.recv(timeout=wait)


# -- HTTP: lws' file server on the mount ------------------------------------


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def test_page_and_assets_come_from_the_mount(demo: Demo) -> None:
    status, headers, body = _get(demo.url)
    assert status == 200 and headers["content-type"].startswith("text/html")
    page = body.decode()
    assert "<title>lws chat</title>" in page
    # Everything is local: no scheme or protocol-relative URL in src=/href=.
    assert not re.search(r"""(src|href)=["'](https?:)?//""", page)
    assert "script-src 'self'" in headers["content-security-policy"]
    for asset, mime in [("app.js", "javascript"), ("style.css", "text/css"),
                        ("favicon.svg", "image/svg+xml")]:
        status, headers, body = _get(demo.url + asset)
        assert status == 200 and mime in headers["content-type"] and body, asset
    assert _get(demo.url + "nope.txt")[0] == 404
    assert _get(demo.url + "..%2f..%2fdemo.py")[0] in (403, 404)


# -- the chat protocol -------------------------------------------------------


def test_join_welcome_and_presence(demo: Demo) -> None:
    with ExitStack() as stack:
        a = demo.client(stack)
        welcome = join(a)
        assert welcome["online"] == [welcome["nick"]]
        assert welcome["history"] == []
        assert welcome["limits"] == {"nick_bytes": 31, "text_chars": 500}
        assert re.fullmatch(r"guest-\d+", welcome["nick"])

        b = demo.client(stack)
        b_welcome = join(b)
        assert b_welcome["nick"] != welcome["nick"]
        both = sorted([welcome["nick"], b_welcome["nick"]])
        assert b_welcome["online"] == both
        seen = recv(a)
        assert seen == {"type": "presence", "event": "join", "nick": b_welcome["nick"],
                        "online": both}
        demo.wait_log(f"+ {b_welcome['nick']} joined (2 online)")


def test_nick_change_and_broadcast_with_message_counts(demo: Demo) -> None:
    with ExitStack() as stack:
        a, b = demo.client(stack), demo.client(stack)
        old_a = join(a)["nick"]
        join(b)
        recv(a, "presence")  # b joined

        nick(a, "alice")
        for ws in (a, b):
            msg = recv(ws)
            assert msg["type"] == "presence" and msg["event"] == "nick"
            assert msg["nick"] == "alice" and msg["old"] == old_a
            assert "alice" in msg["online"] and len(msg["online"]) == 2
        nick(b, "  bob  ")  # trimmed
        for ws in (a, b):
            assert recv(ws)["online"] == ["alice", "bob"]

        say(a, "hello")
        say(a, "again")
        say(b, "hi alice")
        for ws in (a, b):
            got = [recv(ws) for _ in range(3)]
            assert [(m["type"], m["nick"], m["text"], m["count"]) for m in got] == [
                ("message", "alice", "hello", 1), ("message", "alice", "again", 2),
                ("message", "bob", "hi alice", 1)]
            assert all(abs(m["time"] - time.time()) < 60 for m in got)

        # Non-ASCII round trip, and the same nick again is a no-op.
        say(b, "héllo ✓ 你好")
        assert recv(a)["text"] == "héllo ✓ 你好"
        nick(a, "alice")
        recv(b)
        quiet(a)


def test_newcomers_see_recent_history(demo: Demo) -> None:
    with ExitStack() as stack:
        a = demo.client(stack)
        join(a)
        nick(a, "alice")
        for i in range(25):
            say(a, f"line {i}")
        for _ in range(26):
            recv(a)
        b = demo.client(stack)
        history = join(b)["history"]
        assert [m["text"] for m in history] == [f"line {i}" for i in range(5, 25)]
        assert history[-1]["count"] == 25 and history[-1]["nick"] == "alice"


def test_leave_updates_presence_and_logs_the_count(demo: Demo) -> None:
    with ExitStack() as stack:
        a = demo.client(stack)
        join(a)
        nick(a, "stays")
        recv(a)
        with connect(demo.ws_url, subprotocols=CHAT, open_timeout=5) as b:
            join(b)
            nick(b, "goes")
            say(b, "bye now")
            recv(a, "message")
        msg = recv(a, "presence")
        while msg["event"] != "leave":
            msg = recv(a, "presence")
        assert msg == {"type": "presence", "event": "leave", "nick": "goes",
                       "online": ["stays"]}
        demo.wait_log("- goes left after 1 message (1 online)")


BAD_INPUT: list[tuple[str | bytes, str]] = [
    ("{not json", "not JSON"),
    ("", "not JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('"just a string"', "expected a JSON object"),
    ("null", "expected a JSON object"),
    ('{"type": "shout", "text": "x"}', "unknown message type 'shout'"),
    ('{"text": "no type"}', "unknown message type None"),
    (b"\x00\x01binary", "binary messages are not supported"),
    ('{"type": "message"}', "text must be a string"),
    ('{"type": "message", "text": 42}', "text must be a string"),
    ('{"type": "message", "text": "   "}', "empty message"),
    (json.dumps({"type": "message", "text": "x" * 501}), "at most 500 characters"),
    ('{"type": "nick"}', "nick must be a string"),
    ('{"type": "nick", "nick": ["a"]}', "nick must be a string"),
    ('{"type": "nick", "nick": " "}', "must not be empty"),
    (json.dumps({"type": "nick", "nick": "x" * 32}), "at most 31 bytes"),
    (json.dumps({"type": "nick", "nick": "é" * 16}), "at most 31 bytes"),  # 32 bytes
    (json.dumps({"type": "nick", "nick": "bad\u0007bell"}), "must be printable"),
    (json.dumps({"type": "nick", "nick": "new\nline"}), "must be printable"),
]


def test_bad_input_is_answered_with_an_error(demo: Demo) -> None:
    with ExitStack() as stack:
        a, watcher = demo.client(stack), demo.client(stack)
        join(a)
        join(watcher)
        recv(a, "presence")
        for payload, expected in BAD_INPUT:
            a.send(payload)
            reply = recv(a)
            assert reply["type"] == "error", (payload, reply)
            assert expected in reply["error"], (payload, reply)
        quiet(watcher)  # nobody else heard about any of it
        # The connection is still fine, and limits are inclusive.
        nick(a, "é" * 15 + "x")  # 31 bytes
        assert recv(a)["nick"] == "é" * 15 + "x"
        say(a, "y" * 500)
        assert recv(a)["text"] == "y" * 500
        assert recv(watcher, "message")["count"] == 1  # errors counted no message
        assert "Traceback" not in demo.log


def test_a_taken_nick_is_refused_case_insensitively(demo: Demo) -> None:
    with ExitStack() as stack:
        a, b = demo.client(stack), demo.client(stack)
        join(a)
        b_nick = join(b)["nick"]
        recv(a, "presence")
        nick(a, "Alice")
        recv(a)
        recv(b)
        nick(b, "alice")
        assert recv(b) == {"type": "error", "error": "the nick 'alice' is taken"}
        nick(b, b_nick.upper())  # one's own nick in another case is fine
        assert recv(b)["nick"] == b_nick.upper()
        assert recv(a)["nick"] == b_nick.upper()
        nick(a, "ALICE")  # so is a change of case of one's own nick
        assert recv(a)["nick"] == "ALICE"


def test_an_oversized_frame_is_closed_with_1009(demo: Demo) -> None:
    with ExitStack() as stack:
        a = demo.client(stack)
        join(a)
        a.send(json.dumps({"type": "message", "text": "z" * (20 << 10)}))
        with pytest.raises(ConnectionClosed) as info:
            recv(a)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        b = demo.client(stack)  # the server goes on
        join(b)


def test_a_foreign_origin_is_refused(demo: Demo) -> None:
    with pytest.raises((InvalidHandshake, InvalidMessage)):
        with connect(demo.ws_url, subprotocols=CHAT, open_timeout=5,
                     origin=Origin("http://evil.example")):
            pass
    demo.wait_log("refused a connection from origin 'http://evil.example'")
    host = demo.url.split("/")[2]
    with connect(demo.ws_url, subprotocols=CHAT, open_timeout=5,
                 origin=Origin(f"http://{host}")) as ws:
        assert recv(ws)["type"] == "welcome"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_closes_every_client_with_1001(demo: Demo, signum: signal.Signals) -> None:
    with ExitStack() as stack:
        clients = [demo.client(stack) for _ in range(3)]
        for ws in clients:
            join(ws)
        nick(clients[0], "talker")
        say(clients[0], "before the end")
        for ws in clients:
            recv(ws, "message")
        started = time.monotonic()
        demo.proc.send_signal(signum)
        for ws in clients:
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    recv(ws, timeout=10)  # presence updates may come first
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1001, info.value
        assert demo.proc.wait(10) == 0
        assert time.monotonic() - started < 5
    out = demo.log
    assert f"stopping ({signum.name}): closing 3 connections with 1001" in out
    assert "talker left after 1 message" in out
    assert out.rstrip().endswith("stopped")
    assert "Traceback" not in out and "exception" not in out


def test_a_busy_port_is_one_line_of_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run([*DEMO, "--port", str(port)], capture_output=True, text=True,
                              timeout=30, env=ENV)
    assert proc.returncode == 1
    assert "error" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout


def test_bad_arguments_give_usage(tmp_path: Path) -> None:
    proc = subprocess.run([*DEMO, "--port", "70000"], capture_output=True, text=True,
                          timeout=30, env=ENV)
    assert proc.returncode == 2 and "usage" in proc.stderr and "Traceback" not in proc.stderr
    helped = subprocess.run([*DEMO, "--help"], capture_output=True, text=True, timeout=30,
                            env=ENV)
    assert helped.returncode == 0 and "--host" in helped.stdout and "1001" in helped.stdout
