"""Every example runs, against a real peer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from websockets.sync.client import connect as ws_connect

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _start_server(*args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "minimal_ws_server_echo.py"), "--host", "127.0.0.1",
         "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("listening on port "), line
    return proc, int(line.split()[-1])


def test_server_echo_example_with_websockets_client() -> None:
    proc, port = _start_server("--once")
    try:
        with ws_connect(f"ws://127.0.0.1:{port}/",
                        subprotocols=["lws-minimal-server-echo"]) as ws:
            for msg in ["one", b"two", "x" * 100_000]:
                ws.send(msg)
                assert ws.recv(timeout=10) == msg
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "closed after 3 messages" in out


def test_client_echo_example_against_server_example() -> None:
    proc, port = _start_server()
    try:
        client = subprocess.run(
            [sys.executable, str(EXAMPLES / "minimal_ws_client_echo.py"), "--port", str(port),
             "--protocol", "lws-minimal-server-echo", "--greet", "ping", "--count", "50"],
            capture_output=True, text=True, timeout=60, env=ENV)
    finally:
        proc.terminate()
        proc.wait(10)
    assert client.returncode == 0, client.stdout + client.stderr
    assert "echoed 50 messages" in client.stdout


def test_cli_demo_and_version(tmp_path: Path) -> None:
    # The demo is a chat server that runs until Ctrl-C: start it, use it once, SIGINT it.
    import json
    import re
    import signal
    import time
    import urllib.request

    from websockets.exceptions import ConnectionClosed

    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        demo = subprocess.Popen([sys.executable, "-m", "lws", "demo", "--port", "0"],
                                stdout=out, stderr=subprocess.STDOUT, env=ENV)
    try:
        deadline = time.monotonic() + 20
        while not (match := re.search(r"on http://([\d.]+:\d+)/ ", log.read_text())):
            assert demo.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        address = match.group(1)
        with urllib.request.urlopen(f"http://{address}/", timeout=10) as page:
            assert page.status == 200 and b"lws chat" in page.read()
        with ws_connect(f"ws://{address}/", subprotocols=["lws-chat"]) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "welcome"
            demo.send_signal(signal.SIGINT)
            close_code = None
            try:
                for _ in range(10):  # a presence message or two, then the close
                    ws.recv(timeout=10)
            except ConnectionClosed as exc:
                close_code = exc.rcvd.code if exc.rcvd is not None else None
            assert close_code == 1001
        assert demo.wait(20) == 0
    finally:
        demo.kill()
        demo.wait(10)
    assert log.read_text().rstrip().endswith("stopped")
    version = subprocess.run([sys.executable, "-m", "lws", "version"], capture_output=True,
                             text=True, timeout=60, env=ENV)
    assert version.returncode == 0 and '"libwebsockets"' in version.stdout
    bad = subprocess.run([sys.executable, "-m", "lws", "nonsense"], capture_output=True,
                         text=True, timeout=60, env=ENV)
    assert bad.returncode == 2 and "usage" in bad.stderr and "Traceback" not in bad.stderr
