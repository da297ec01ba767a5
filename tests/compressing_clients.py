"""Several websockets clients echoing compressed text at once, against one server.

lws inflates a compressed read in the read buffer its service thread shares
between connections; a read of another connection can overwrite input zlib
has not finished with. Concurrent connections whose messages inflate to more
than lws' 1 KiB inflate buffer show it. Not collected by pytest (no ``test_``
prefix).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import websockets

# (message size, message count) per client: 4 KiB of text inflates in several
# 1 KiB passes; four clients keep reads of different connections interleaved.
CLIENTS = [(4096, 100), (4096, 100), (3000, 100), (4000, 100)]
ALPHABET = "abcdefghij "


def _messages(seed: int, size: int, count: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(size)) for _ in range(count)]


async def _connect(url: str) -> websockets.ClientConnection:
    ws = await websockets.connect(url, compression="deflate", max_size=None, open_timeout=5)
    if "permessage-deflate" not in ws.response.headers.get("Sec-WebSocket-Extensions", ""):
        await ws.close()
        raise AssertionError(f"{url} did not negotiate permessage-deflate")
    return ws


async def _echo_verdict(ws: websockets.ClientConnection, message: str, reply_timeout: float,
                        where: str) -> str:
    """Wait for the echo of ``message``: ``"ok"``, or what went wrong ``where``."""
    try:
        echoed = await asyncio.wait_for(ws.recv(), reply_timeout)
    except asyncio.TimeoutError:
        return f"no echo {where}"
    except websockets.ConnectionClosed as exc:
        return f"closed {where} ({exc})"
    return "ok" if echoed == message else f"altered {where}"


async def _echo_one(url: str, messages: list[str], reply_timeout: float) -> str:
    async with await _connect(url) as ws:
        for i, message in enumerate(messages):
            try:
                await ws.send(message)
            except websockets.ConnectionClosed as exc:
                return f"closed at message {i} ({exc})"
            verdict = await _echo_verdict(ws, message, reply_timeout, f"at message {i}")
            if verdict != "ok":
                return verdict
    return "ok"


async def echo_concurrently(url: str, reply_timeout: float = 10.0) -> list[str]:
    """Run the :data:`CLIENTS` at once, one message in flight each; one
    verdict per client, ``"ok"`` if every message came back intact.

    Whether reads of two connections fall into one service of the server is
    left to timing: a server in this process (slowed by the clients) sees it
    often; a C server rarely (see :func:`echo_in_lockstep`).
    """
    return list(await asyncio.gather(*(
        _echo_one(url, _messages(seed, size, count), reply_timeout)
        for seed, (size, count) in enumerate(CLIENTS))))


async def echo_in_lockstep(url: str, hold: Callable[[], None], release: Callable[[], None],
                           rounds: int = 20, reply_timeout: float = 3.0) -> list[str]:
    """The :data:`CLIENTS`' sizes, in rounds: ``hold()`` (stop the server
    process), one message on each connection, ``release()``; so every round,
    the server finds all four reads pending in one service. One verdict per
    client, ``"ok"`` if every message came back intact."""
    conns = [await _connect(url) for _ in CLIENTS]
    verdicts = ["ok"] * len(conns)
    try:
        for r in range(rounds):
            sent: list[tuple[int, str]] = []
            hold()
            try:
                for k, (size, _count) in enumerate(CLIENTS):
                    if verdicts[k] != "ok":
                        continue
                    message = _messages(r * len(CLIENTS) + k, size, 1)[0]
                    try:
                        await conns[k].send(message)
                    except websockets.ConnectionClosed as exc:
                        verdicts[k] = f"closed in round {r} ({exc})"
                        continue
                    sent.append((k, message))
                await asyncio.sleep(0.05)  # the loop writes them out meanwhile
            finally:
                release()
            for k, message in sent:
                verdicts[k] = await _echo_verdict(conns[k], message, reply_timeout,
                                                  f"in round {r}")
            if "ok" not in verdicts:
                break
    finally:
        for ws in conns:
            await ws.close()
    return verdicts
