"""The servers under test: how each is started, pinned to a core, and found ready.

    python bench/servers.py serve NAME [--host H] [--port 0]    # run one (Python ones)
    python bench/servers.py list

Every server echoes each WebSocket message back, with compression off, and
prints one line naming its port when it listens. Importable (by file path or
with bench/ on sys.path): :func:`start` launches one as a child process pinned
with ``taskset`` and returns a :class:`Server` (pid, port, what it runs on).

Servers:

``c-lws``        conformance/echo.c, the C lws echo (one lws_write per WRITEABLE)
``lws``          the binding's callback API: ``python -m lws echo`` (EchoServer)
``lws-asyncio``  the binding's asyncio API: ``lws.asyncio.serve`` echo on uvloop
``picows``       picows, on uvloop
``websockets``   websockets (asyncio implementation), on uvloop
``aiohttp``      aiohttp's web server, on uvloop

Comparable limits everywhere: messages up to 16 MiB, no compression, no
keepalive pings, receive queues at the libraries' defaults (16 messages
where there is one). picows works per frame, not per message: it echoes each
frame with its own opcode and FIN bit, so fragmented messages stay intact.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

MAX_SIZE = 16 << 20
PYTHON_SERVERS = ("lws", "lws-asyncio", "picows", "websockets", "aiohttp")
ALL_SERVERS = ("c-lws", *PYTHON_SERVERS)


# -- the Python servers (run in the child process) ---------------------------

def _ready(port: int, **info: Any) -> None:
    print(f"BENCH-READY port {port} {json.dumps(info)}", flush=True)


def _uvloop_run(main: Any) -> None:
    import uvloop

    uvloop.run(main())


def serve_lws_asyncio(host: str, port: int) -> None:
    import lws
    import lws.asyncio

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        # as the peers run: no keepalive pings
        # LWS_ASYNCIO_MODE: the mode to measure (auto: what the build picks)
        mode = os.environ.get("LWS_ASYNCIO_MODE", "auto")
        async with lws.asyncio.serve(echo, host, port, max_size=MAX_SIZE,
                                     ping_interval=None, mode=mode) as server:
            _ready(server.port, library="lws-cffi", version=lws.__version__,
                   lws=lws.lws_version, mode=server.mode, loop="uvloop")
            await server.serve_forever()

    _uvloop_run(main)


def serve_picows(host: str, port: int) -> None:
    import picows
    from picows import WSListener, WSMsgType, WSTransport, ws_create_server

    class Echo(WSListener):
        def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
            kind = frame.msg_type
            if kind == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()
            elif kind in (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION):
                transport.send(kind, frame.get_payload_as_memoryview(), frame.fin)

    async def main() -> None:
        server = await ws_create_server(lambda _request: Echo(), host, port,
                                        max_frame_size=MAX_SIZE, enable_auto_ping=False)
        _ready(server.sockets[0].getsockname()[1], library="picows",
               version=getattr(picows, "__version__", "?"), loop="uvloop")
        async with server:
            await server.serve_forever()

    _uvloop_run(main)


def serve_websockets(host: str, port: int) -> None:
    import websockets
    from websockets.asyncio.server import serve

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with serve(echo, host, port, compression=None, max_size=MAX_SIZE,
                         ping_interval=None) as server:
            sock = next(iter(server.sockets))
            _ready(sock.getsockname()[1], library="websockets",
                   version=getattr(websockets, "__version__", "?"), loop="uvloop")
            await server.serve_forever()

    _uvloop_run(main)


def serve_aiohttp(host: str, port: int) -> None:
    import asyncio

    import aiohttp
    from aiohttp import web

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=MAX_SIZE, heartbeat=None)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        _ready(sock.getsockname()[1], library="aiohttp", version=aiohttp.__version__,
               loop="uvloop")
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    _uvloop_run(main)


_SERVE = {"lws-asyncio": serve_lws_asyncio, "picows": serve_picows,
          "websockets": serve_websockets, "aiohttp": serve_aiohttp}


# -- launching (run in the harness) -------------------------------------------

@dataclass
class Runtime:
    """Where the binding comes from: a Python, its environment, the matching C echo."""

    label: str                      # "4.1.6" / "4.3.5"
    python: str
    echo_bin: str
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/"
    info: dict[str, Any] = field(default_factory=dict)   # versions this Python sees


@dataclass
class Server:
    name: str
    runtime: Runtime
    proc: subprocess.Popen[str]
    port: int
    info: dict[str, Any]
    log: Any = None
    temp_log: str | None = None     # a log file of our own, removed at stop()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def key(self) -> str:
        """A label unique in a run: the name, plus the lws version where it matters."""
        if self.name in ("c-lws", "lws", "lws-asyncio"):
            return f"{self.name} {self.runtime.label}"
        return self.name

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def cpu_ticks(self) -> int:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    def stop(self) -> None:
        stop_process(self.proc)
        if self.log is not None:
            self.log.close()
            self.log = None
        if self.temp_log is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.temp_log)
            self.temp_log = None


def stop_process(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; always reaps the child."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        except ProcessLookupError:
            pass


def raise_nofile() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit (idle-connection runs need ~10,000 fds)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


_PORT_RE = re.compile(r"(?:BENCH-READY port |listening on port |ws://[^:/]+:)(\d+)")


def command(name: str, rt: Runtime, host: str = "127.0.0.1") -> list[str]:
    if name == "c-lws":
        return [rt.echo_bin, "--host", host, "--port", "0"]
    if name == "lws":
        return [rt.python, "-m", "lws", "echo", "--host", host, "--port", "0"]
    if name in _SERVE:
        return [rt.python, os.path.abspath(__file__), "serve", name, "--host", host,
                "--port", "0"]
    raise ValueError(f"unknown server {name!r}; known: {', '.join(ALL_SERVERS)}")


def start(name: str, rt: Runtime, core: int = 0, host: str = "127.0.0.1",
          log_path: str | None = None, timeout: float = 20.0) -> Server:
    """Start server ``name`` pinned to ``core``; return once it names its port.

    Its standard output and error go to ``log_path`` (a temporary file if
    none), which is read for the line naming the port.
    """
    cmd = command(name, rt, host)
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", str(core), *cmd]
    env = dict(os.environ)
    env.update(rt.env)
    env["PYTHONUNBUFFERED"] = "1"
    temp_log = None
    if log_path is None:
        fd, log_path = tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")
        os.close(fd)
        temp_log = log_path
    log = open(log_path, "a+")
    offset = log.tell()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=rt.cwd, preexec_fn=raise_nofile)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with open(log_path) as f:
                f.seek(offset)
                text = f.read()
            for line in text.splitlines(keepends=True):
                found = _PORT_RE.search(line)
                if found and line.endswith("\n"):
                    brace = line.find("{")
                    info: dict[str, Any] = json.loads(line[brace:]) if brace >= 0 else {}
                    return Server(name, rt, proc, int(found.group(1)), info, log, temp_log)
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} before listening:"
                                   f" {text.strip()[-500:]}")
            time.sleep(0.02)
        raise RuntimeError(f"{name} did not report a port within {timeout} s (log {log_path})")
    except BaseException:
        stop_process(proc)
        log.close()
        if temp_log is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp_log)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="benchmark servers")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run one Python server in this process")
    s.add_argument("name", choices=sorted(_SERVE))
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=0)
    sub.add_parser("list", help="the server names")
    args = parser.parse_args(argv)
    if args.command == "list":
        print("\n".join(ALL_SERVERS))
        return 0
    raise_nofile()
    try:
        _SERVE[args.name](args.host, args.port)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
