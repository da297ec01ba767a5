"""The HTTP examples run, driven by curl and by lws' own client."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trustme

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


@contextmanager
def running(script: str, *args: str) -> Iterator[str]:
    """Start an example on ephemeral ports; yield the first line it prints."""
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / script), "--host", "127.0.0.1",
                             "--port", "0", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=ENV)
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(10)


def curl(*args: str) -> str:
    return subprocess.run(["curl", "-s", "--max-time", "10", *args], capture_output=True,
                          text=True, timeout=30).stdout


def test_minimal_http_server() -> None:
    with running("minimal_http_server.py") as url:
        assert "Served by libwebsockets" in curl(url)
        assert "font-family" in curl(url + "example.css")
        assert curl("-o", "/dev/null", "-w", "%{http_code}", url + "missing") == "404"


def test_minimal_http_server_dynamic() -> None:
    with running("minimal_http_server_dynamic.py") as url:
        page = curl(url + "?x=1")
        assert "Dynamic content" in page and "GET /dyn, query {'x': '1'}" in page
        assert "Served by libwebsockets" in curl(url.replace("/dyn", "/"))


def test_minimal_http_server_tls_and_http2(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    files = [tmp_path / n for n in ("ca.pem", "c.pem", "k.pem")]
    ca.cert_pem.write_to_path(str(files[0]))
    cert.cert_chain_pems[0].write_to_path(str(files[1]))
    cert.private_key_pem.write_to_path(str(files[2]))
    with running("minimal_http_server_tls.py", "--cert", str(files[1]), "--key",
                 str(files[2])) as url:
        out = subprocess.run(["curl", "-s", "-v", "--http2", "--max-time", "10", "--cacert",
                              str(files[0]), url], capture_output=True, text=True, timeout=30)
        assert "Served by libwebsockets" in out.stdout
        assert "< HTTP/2 200" in out.stderr


def test_minimal_http_server_multivhost() -> None:
    with running("minimal_http_server_multivhost.py", "--port2", "0") as line:
        first, second = line.split()
        assert curl(first) == "first site: request 1 on vhost default\n"
        assert curl(second) == "second site: request 1 on vhost localhost2\n"
        assert "Served by libwebsockets" in curl(second + "files/")


def test_minimal_http_client_against_the_server_example() -> None:
    with running("minimal_http_server_dynamic.py") as url:
        out = subprocess.run([sys.executable, str(EXAMPLES / "minimal_http_client.py"), url],
                             capture_output=True, text=True, timeout=60, env=ENV)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("200\n") and "Dynamic content" in out.stdout
        bad = subprocess.run([sys.executable, str(EXAMPLES / "minimal_http_client.py"),
                              "http://127.0.0.1:1/"], capture_output=True, text=True,
                             timeout=60, env=ENV)
        assert bad.returncode == 1 and bad.stderr.startswith("error:")
