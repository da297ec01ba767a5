"""The binding's side of the conformance runs: an echo server and an echo client.

    python conformance/binding_peer.py server [--host H] [--port N] [--deflate] [--api A]
    python conformance/binding_peer.py client --port N [--host H] [--deflate] [--api A]
        [--agent NAME] [--case-timeout SECONDS] [--cases FIRST-LAST]

``server`` runs the protocol of ``python -m lws echo`` (``lws.__main__.EchoServer``,
the same class, so the CLI's echo server is what is tested) and prints
``listening on port N``. ``client`` drives an Autobahn fuzzing server
(``kosoku -m fuzzingserver``): it asks ``/getCaseCount``, echoes every case
``/runCase?case=i&agent=NAME`` (each bounded by ``--case-timeout``), then
calls ``/updateReports``. Both exit 0 on SIGTERM/SIGINT or when done.

``--api asyncio`` runs the same echo through :mod:`lws.asyncio` instead
(``serve()`` / ``connect()``, ``async for message in ws: await ws.send(message)``,
in the mode the build picks); ``--api callback`` (the default) is the
callback API.

``--deflate`` needs the binding's permessage-deflate option (see
:func:`deflate_status`); without it the script exits with status 3 and says why.

Run it by path (not ``-m``): the script's directory goes first on
``sys.path``, so ``import lws`` finds the installed binding the caller's
interpreter uses, never a source tree by accident.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import signal
import sys
import time
from typing import Any

import lws
from lws.__main__ import EchoServer
from lws.testing import pump

NOT_SUPPORTED = 3

# The Context keyword the binding is expected to grow for permessage-deflate.
DEFLATE_OPTION = "permessage_deflate"


def deflate_status() -> str | None:
    """``None`` if the binding can negotiate permessage-deflate, else why not."""
    if not lws.features.get("permessage_deflate"):
        return "this libwebsockets was built without extensions (LWS_WITHOUT_EXTENSIONS)"
    params = inspect.signature(lws.Context).parameters
    if DEFLATE_OPTION not in params:
        return f"lws.Context has no {DEFLATE_OPTION}= option yet"
    return None


def _context(protocols: list[lws.Protocol], deflate: bool, **kwargs: Any) -> lws.Context:
    if deflate:
        kwargs[DEFLATE_OPTION] = True
    return lws.Context(protocols, **kwargs)


_stopping: dict[str, Any] = {"flag": False, "ctx": None}


def _on_signal(signum: int, frame: Any) -> None:
    # Only ask the loop to stop: an exception raised here could land inside an
    # lws callback, where cffi prints it and drops it.
    _stopping["flag"] = True
    ctx = _stopping["ctx"]
    if ctx is not None:
        ctx.stop()


# -- server --------------------------------------------------------------------


def serve(host: str, port: int, deflate: bool) -> int:
    with _context([EchoServer()], deflate, port=port, host=host) as ctx:
        _stopping["ctx"] = ctx
        print(f"listening on port {ctx.port}" + (" (permessage-deflate)" if deflate else ""),
              flush=True)
        if not _stopping["flag"]:
            ctx.run()
        _stopping["ctx"] = None
    return 0


# -- client ----------------------------------------------------------------------


class FuzzingClient(lws.Protocol):
    """Echoes every message of a case back, as the C baseline client does."""

    name = "fuzzing-client"
    max_message_size = EchoServer.max_message_size
    send_queue_limit = EchoServer.send_queue_limit

    def __init__(self, case_timeout: int) -> None:
        self.case_timeout = case_timeout
        self.mode = "count"       # "count", "case" or "report"
        self.count: int | None = None

    def on_client_established(self, conn: lws.Connection) -> None:
        if self.mode == "case":
            conn.set_timeout(self.case_timeout)   # lws drops the case after this
        elif self.mode == "report":
            conn.close(1000, "done")

    def on_message(self, conn: lws.Connection, message: Any) -> None:
        if self.mode == "count":
            self.count = int(message)
        elif self.mode == "case":
            conn.send(message)


def run_client(host: str, port: int, deflate: bool, agent: str, case_timeout: int,
               first: int, last: int | None) -> int:
    proto = FuzzingClient(case_timeout)
    base = f"ws://{host}:{port}"
    failures = 0
    with _context([proto], deflate) as ctx:

        def one(path: str, limit: float) -> bool:
            try:
                conn = ctx.connect(base + path, proto, subprotocol=None)
            except lws.ConnectError as exc:
                print(f"{path}: {exc}", flush=True)
                return False
            try:
                pump(ctx, lambda: conn.closed or _stopping["flag"], timeout=limit)
            except TimeoutError:
                # lws' own timeout did not end it: drop it and wait a little more.
                print(f"{path}: still open after {limit:.0f} s, dropping it", flush=True)
                try:
                    conn.set_timeout(1)
                    pump(ctx, lambda: conn.closed, timeout=5)
                except (TimeoutError, lws.LwsError):
                    return False
            return conn.error is None

        if not one("/getCaseCount", 10) or proto.count is None:
            print("could not read the case count", flush=True)
            return 1
        last = min(last or proto.count, proto.count)
        print(f"running cases {first}-{last} of {proto.count}", flush=True)
        proto.mode = "case"
        for i in range(first, last + 1):
            if _stopping["flag"]:
                return 1
            started = time.monotonic()
            if not one(f"/runCase?case={i}&agent={agent}", case_timeout + 5):
                failures += 1
            if time.monotonic() - started > case_timeout:
                print(f"case {i}: time limit of {case_timeout} s reached", flush=True)
        proto.mode = "report"
        if not one(f"/updateReports?agent={agent}", 10):
            failures += 1
    print(f"done: {failures} failure(s)", flush=True)
    return 1 if failures else 0


# -- the same through lws.asyncio ------------------------------------------------


def _asyncio_echo_options(deflate: bool) -> dict[str, Any]:
    # As the callback echo: big messages, no keepalive pings of our own;
    # LWS_ASYNCIO_MODE picks the mode (auto: what the build picks).
    return {"max_size": EchoServer.max_message_size, "ping_interval": None,
            "compression": "deflate" if deflate else None,
            "mode": os.environ.get("LWS_ASYNCIO_MODE", "auto")}


async def _echo(ws: Any) -> None:
    async for message in ws:
        await ws.send(message)


def serve_asyncio(host: str, port: int, deflate: bool) -> int:
    import lws.asyncio

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        async with lws.asyncio.serve(_echo, host, port, **_asyncio_echo_options(deflate)) \
                as server:
            print(f"listening on port {server.port}"
                  + (" (permessage-deflate)" if deflate else "")
                  + f" (asyncio, {server.mode} mode)", flush=True)
            await stop.wait()

    asyncio.run(main())
    return 0


def run_client_asyncio(host: str, port: int, deflate: bool, agent: str, case_timeout: int,
                       first: int, last: int | None) -> int:
    import lws.asyncio

    base = f"ws://{host}:{port}"
    options = _asyncio_echo_options(deflate)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        async with lws.asyncio.connect(base + "/getCaseCount", **options) as ws:
            count = int(await asyncio.wait_for(ws.recv(), 10))
        last_case = min(last or count, count)
        print(f"running cases {first}-{last_case} of {count} (asyncio)", flush=True)
        failures = 0
        for i in range(first, last_case + 1):
            if stop.is_set():
                return 1
            try:
                async with lws.asyncio.connect(
                        f"{base}/runCase?case={i}&agent={agent}", **options) as ws:
                    await asyncio.wait_for(_echo(ws), case_timeout)
            except (asyncio.TimeoutError, lws.LwsError) as exc:
                # A case may well end in a failed or dropped connection: that
                # is kosoku's to judge; the time limit is ours.
                if isinstance(exc, asyncio.TimeoutError):
                    print(f"case {i}: time limit of {case_timeout} s reached", flush=True)
                    failures += 1
        async with lws.asyncio.connect(f"{base}/updateReports?agent={agent}", **options) as ws:
            await ws.close()
        print(f"done: {failures} failure(s)", flush=True)
        return 1 if failures else 0

    return asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the binding's conformance peers")
    sub = parser.add_subparsers(dest="mode", required=True)
    srv = sub.add_parser("server", help="echo server (lws.__main__.EchoServer)")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=0)
    srv.add_argument("--deflate", action="store_true")
    srv.add_argument("--api", choices=("callback", "asyncio"), default="callback")
    cli = sub.add_parser("client", help="echo client for an Autobahn fuzzing server")
    cli.add_argument("--host", default="127.0.0.1")
    cli.add_argument("--port", type=int, required=True)
    cli.add_argument("--deflate", action="store_true")
    cli.add_argument("--agent", default="lws-cffi")
    cli.add_argument("--case-timeout", type=int, default=30)
    cli.add_argument("--cases", default=None, help="FIRST-LAST (1-based, inclusive)")
    cli.add_argument("--api", choices=("callback", "asyncio"), default="callback")
    args = parser.parse_args(argv)

    if args.deflate:
        why = deflate_status()
        if why is not None:
            print(f"not run: {why}", flush=True)
            return NOT_SUPPORTED
    if args.mode == "server":
        if args.api == "asyncio":
            return serve_asyncio(args.host, args.port, args.deflate)
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
        return serve(args.host, args.port, args.deflate)
    first, last = 1, None
    if args.cases:
        lo, _, hi = args.cases.partition("-")
        first, last = int(lo), int(hi or lo)
    if args.api == "asyncio":
        return run_client_asyncio(args.host, args.port, args.deflate, args.agent,
                                  args.case_timeout, first, last)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    return run_client(args.host, args.port, args.deflate, args.agent, args.case_timeout,
                      first, last)


if __name__ == "__main__":
    sys.exit(main())
