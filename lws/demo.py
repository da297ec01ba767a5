"""The chat room behind ``python -m lws demo``.

lws serves the page and its assets (``lws/demo_site/``) with its own file
server from a directory mount; the chat itself is one Python protocol,
``lws-chat``, with typed session data (the nick and a message count live in
lws' per-session buffer). Everything on the wire is JSON text.

Client to server::

    {"type": "nick", "nick": "alice"}
    {"type": "message", "text": "hello"}

Server to client::

    {"type": "welcome", "nick": "guest-3", "online": [...], "history": [...],
     "limits": {"nick_bytes": 31, "text_chars": 500}}
    {"type": "presence", "event": "join" | "leave" | "nick", "nick": "alice",
     "old": "guest-3" (nick changes only), "online": ["alice", "bob"]}
    {"type": "message", "nick": "alice", "text": "hello", "count": 1, "time": 1700000000.0}
    {"type": "error", "error": "a nick is at most 31 bytes"}

Bad input (not JSON, not an object, an unknown type, a nick that is empty,
too long, not printable or taken, an empty or too long message, a binary
message) is answered with an ``error`` message; the connection stays open.
A frame over ``Chat.max_message_size`` is lws' business: it closes with 1009.
"""

from __future__ import annotations

import itertools
import json
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, TextIO

from . import c
from ._binding import RUNTIME_VERSION
from .connection import Connection, Refuse
from .context import Context
from .errors import SessionClosed
from .http import Mount
from .protocol import Protocol
from .session import Struct

__all__ = ["SITE", "Chat", "ChatSession", "Http", "make_context", "serve"]

SITE = Path(__file__).resolve().parent / "demo_site"
"""The page and its assets, served by lws from a directory mount at ``/``."""

NICK_BYTES = 31          # char nick[32] keeps a terminating NUL
TEXT_CHARS = 500         # longest chat message, in characters
HISTORY = 20             # messages a newcomer is shown
PROTOCOL = "lws-chat"


class ChatSession(Struct, c_name="per_session_data__chat"):
    """``struct per_session_data__chat``: what lws keeps per chat session."""

    nick: Annotated[bytes, c.char[NICK_BYTES + 1]]
    messages: c.uint32_t


class Http(Protocol):
    """protocols[0]: plain HTTP. lws' file server answers everything under the mount."""

    name = "http"


class ChatError(ValueError):
    """Bad input from a client: answered with an ``error`` message."""


def _check_nick(value: Any) -> str:
    if not isinstance(value, str):
        raise ChatError("nick must be a string")
    nick = value.strip()
    if not nick:
        raise ChatError("nick must not be empty")
    if len(nick.encode("utf-8")) > NICK_BYTES:
        raise ChatError(f"a nick is at most {NICK_BYTES} bytes (UTF-8)")
    if not nick.isprintable():
        raise ChatError("a nick must be printable (no control characters)")
    return nick


def _check_text(value: Any) -> str:
    if not isinstance(value, str):
        raise ChatError("text must be a string")
    text = value.strip()
    if not text:
        raise ChatError("empty message")
    if len(text) > TEXT_CHARS:
        raise ChatError(f"a message is at most {TEXT_CHARS} characters")
    return text


class Chat(Protocol):
    """The chat room: nicks, presence, and messages broadcast to everyone."""

    name = PROTOCOL
    session = ChatSession
    max_message_size = 16 << 10     # a larger frame closes with 1009 (lws' cap)
    send_queue_limit = 1 << 20      # a client that does not read is skipped

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self._guests = itertools.count(1)

    # -- helpers -------------------------------------------------------

    def _log(self, text: str) -> None:
        if self.out is not None:
            print(text, file=self.out, flush=True)

    @staticmethod
    def _send(conn: Connection, obj: dict[str, Any]) -> None:
        try:
            conn.send(json.dumps(obj, ensure_ascii=False))
        except Exception:  # closing, or its queue is full: it misses this one
            pass

    def _broadcast(self, obj: dict[str, Any]) -> None:
        self.broadcast(json.dumps(obj, ensure_ascii=False))

    @staticmethod
    def nick_of(conn: Connection) -> str:
        """The nick in ``conn``'s session buffer (``""`` once lws has freed it)."""
        try:
            return bytes(conn.session.nick).decode("utf-8", "replace")
        except SessionClosed:
            return ""

    def online(self) -> list[str]:
        """The nicks of everyone connected, sorted case-insensitively.

        While lws tears several connections down at once (``ctx.close()``), a
        connection can still be listed after its session buffer was dropped
        (``WS_SERVER_DROP_PROTOCOL`` comes before its ``CLOSED``): it is left out.
        """
        nicks = (self.nick_of(conn) for conn in self.connections())
        return sorted((nick for nick in nicks if nick), key=str.casefold)

    def _presence(self, event: str, nick: str, **extra: str) -> None:
        self._broadcast({"type": "presence", "event": event, "nick": nick, **extra,
                         "online": self.online()})

    # -- lws callbacks -------------------------------------------------

    def on_filter_protocol_connection(self, conn: Connection) -> None:
        # Cross-site WebSocket hijacking guard: a browser always sends Origin;
        # it must name this very host. Clients that send none are let in.
        origin = conn.header("origin")
        host = conn.header("host")
        if origin is not None and host is not None:
            _, _, origin_host = origin.partition("://")
            if origin_host.rstrip("/").lower() != host.lower():
                self._log(f"refused a connection from origin {origin!r} (host {host!r})")
                raise Refuse(403)

    def on_established(self, conn: Connection) -> None:
        taken = {n.casefold() for n in self.online()}
        nick = f"guest-{next(self._guests)}"
        while nick.casefold() in taken:  # someone picked "guest-N" as their nick
            nick = f"guest-{next(self._guests)}"
        conn.session.nick = nick
        conn.session.messages = 0
        self._send(conn, {"type": "welcome", "nick": nick, "online": self.online(),
                          "history": list(self.history),
                          "limits": {"nick_bytes": NICK_BYTES, "text_chars": TEXT_CHARS}})
        self._presence("join", nick)
        self._log(f"+ {nick} joined ({len(self.online())} online)")

    def on_message(self, conn: Connection, message: Any) -> None:
        try:
            if not isinstance(message, str):
                raise ChatError("binary messages are not supported: send JSON text")
            try:
                obj = json.loads(message)
            except ValueError as exc:
                raise ChatError(f"not JSON: {exc}") from None
            if not isinstance(obj, dict):
                raise ChatError("expected a JSON object")
            kind = obj.get("type")
            if kind == "nick":
                self._set_nick(conn, obj.get("nick"))
            elif kind == "message":
                self._say(conn, obj.get("text"))
            else:
                raise ChatError(f"unknown message type {kind!r}: expected 'nick' or 'message'")
        except ChatError as exc:
            self._send(conn, {"type": "error", "error": str(exc)})

    def _set_nick(self, conn: Connection, value: Any) -> None:
        nick = _check_nick(value)
        old = self.nick_of(conn)
        if nick == old:
            return
        if nick.casefold() != old.casefold() and \
                nick.casefold() in {n.casefold() for n in self.online()}:
            raise ChatError(f"the nick {nick!r} is taken")
        conn.session.nick = nick
        self._presence("nick", nick, old=old)
        self._log(f"~ {old} is now {nick}")

    def _say(self, conn: Connection, value: Any) -> None:
        text = _check_text(value)
        session = conn.session
        session.messages += 1
        entry = {"type": "message", "nick": self.nick_of(conn), "text": text,
                 "count": session.messages, "time": round(time.time(), 3)}
        self.history.append(entry)
        self._broadcast(entry)

    def on_closed(self, conn: Connection) -> None:
        # lws delivers CLOSED with the session buffer still intact; this
        # connection has already left connections().
        nick = self.nick_of(conn)
        count = conn.session.messages
        self._presence("leave", nick)
        self._log(f"- {nick} left after {count} message{'s' if count != 1 else ''} "
                  f"({len(self.online())} online)")


def make_context(host: str | None = "127.0.0.1", port: int = 7681,
                 out: TextIO | None = None) -> tuple[Context, Chat]:
    """The demo's context: lws' file server on ``/`` and the chat protocol."""
    chat = Chat(out)
    mounts = [Mount("/", directory=SITE, default="index.html")]
    ctx = Context([Http(), chat], port=port, host=host or None, mounts=mounts,
                  security_headers=True)
    return ctx, chat


def page_url(host: str | None, port: int) -> str:
    """The URL to open: wildcard addresses are shown as localhost."""
    if not host or host in ("0.0.0.0", "::"):
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def serve(host: str | None = "127.0.0.1", port: int = 7681, out: TextIO = sys.stdout) -> int:
    """Run the chat until Ctrl-C (SIGINT) or SIGTERM, then close with 1001."""
    ctx, chat = make_context(host, port, out)
    stopping: list[str] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.append(signal.Signals(signum).name)
        ctx.stop()

    previous: dict[signal.Signals, Callable[[int, FrameType | None], Any] | int | None] = {}
    if threading.current_thread() is threading.main_thread():
        # Installed explicitly: a shell starts background jobs with SIGINT
        # ignored, and Ctrl-C must still stop the demo.
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, stop)
    try:
        print(f"lws chat demo on {page_url(host, ctx.port)} "
              f"(libwebsockets {RUNTIME_VERSION}); Ctrl-C to stop", file=out, flush=True)
        try:
            ctx.run()
        except KeyboardInterrupt:
            stopping.append("SIGINT")
        n = len(chat.connections())
        print(f"stopping ({stopping[0] if stopping else 'lws ended the loop'}): "
              f"closing {n} connection{'s' if n != 1 else ''} with 1001", file=out, flush=True)
    finally:
        try:
            ctx.close()
        finally:
            for signum, handler in previous.items():
                if handler is not None:  # None: set outside Python, cannot be restored
                    signal.signal(signum, handler)
    print("stopped", file=out, flush=True)
    return 0

