"""HTTP serving on the native stack, against curl and http.client."""

from __future__ import annotations

import http.client
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import lws
from lws import c
from lws.testing import serving


class Txn(lws.Struct):
    hits: c.uint32_t


class Site(lws.Protocol):
    name = "http"
    session = Txn
    max_body_size = 64 * 1024

    def on_request(self, conn: lws.Connection, req: lws.Request) -> lws.Response | None:
        conn.state = (conn.state or 0) + 1
        conn.session.hits += 1
        if req.path == "/hello":
            return lws.Response(200, f"hi {req.method} q={req.query} ua={req.header('User-Agent')} "
                                     f"txn={conn.state} hits={conn.session.hits}\n",
                                headers={"x-served-by": "lws-python"})
        if req.path == "/echo":
            return lws.Response(200, req.body, content_type="application/octet-stream")
        if req.path == "/stream":
            return lws.Response(200, stream=(f"line {i}\n".encode() for i in range(100)))
        if req.path == "/sized":
            return lws.Response(200, stream=iter([b"abc", b"def"]), content_length=6)
        if req.path == "/boom":
            raise RuntimeError("handler failure")
        return None


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "--max-time", "10", "-s", *args], capture_output=True,
                          text=True, timeout=30)


@pytest.fixture
def site(tmp_path: Path) -> Any:
    www = tmp_path / "www"
    (www / "css").mkdir(parents=True)
    (www / "index.html").write_text("<h1>home</h1>")
    (www / "css" / "a.css").write_text("body{}")
    (www / "data.json").write_text("{}")
    (tmp_path / "secret.txt").write_text("top secret")
    mounts = [lws.Mount("/static", directory=www), lws.Mount("/hello", protocol="http")]
    with lws.Context([Site()], port=0, host="127.0.0.1", mounts=mounts) as ctx, serving(ctx):
        yield f"http://127.0.0.1:{ctx.port}"


def test_curl_keepalive_two_urls_fresh_session_each_transaction(site: str) -> None:
    out = curl("-v", f"{site}/hello?x=1", f"{site}/hello?y=2")
    assert out.returncode == 0, out.stderr
    assert "Re-using existing connection" in out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "hi GET q={'x': '1'} ua=curl/7.88.1 txn=1 hits=1" or \
        lines[0].startswith("hi GET q={'x': '1'} ua=curl/")
    # conn.state counts transactions; the pss is zeroed for each one.
    assert lines[0].endswith("txn=1 hits=1") and lines[1].endswith("txn=2 hits=1")
    assert "x-served-by: lws-python" in out.stderr


def test_http_client_keepalive_and_status_codes(site: str) -> None:
    host, port = site.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("GET", "/nothing")
    r = conn.getresponse()
    assert (r.status, r.read()) == (404, b"not found\n")
    conn.request("GET", "/boom")
    r = conn.getresponse()
    assert r.status == 500 and r.read() == b"internal server error\n"
    conn.request("HEAD", "/hello")
    r = conn.getresponse()
    assert r.status == 200 and r.read() == b""
    conn.request("POST", "/echo", body=b"x" * 5000)
    r = conn.getresponse()
    assert (r.status, r.read()) == (200, b"x" * 5000)
    conn.close()


def test_streamed_bodies(site: str) -> None:
    out = curl("-i", f"{site}/stream")
    # No length known: lws ends an HTTP/1.1 body by closing the connection.
    assert "connection: close" in out.stdout.lower()
    assert out.stdout.count("line ") == 100 and out.stdout.rstrip().endswith("line 99")
    out = curl("-i", f"{site}/sized")
    assert "content-length: 6" in out.stdout.lower() and out.stdout.endswith("abcdef")


def test_body_over_the_cap_gets_413_and_the_server_goes_on(site: str) -> None:
    out = subprocess.run(
        ["curl", "-s", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}",
         "--data-binary", "@-", f"{site}/echo"], input="y" * 200_000, capture_output=True,
        text=True, timeout=30)
    assert out.stdout == "413"
    assert curl(f"{site}/hello").stdout.startswith("hi GET")


def test_static_mount_index_mime_and_404(site: str) -> None:
    out = curl("-i", f"{site}/static/")
    assert out.stdout.startswith("HTTP/1.1 200") and "<h1>home</h1>" in out.stdout
    assert "content-type: text/html" in out.stdout.lower()
    out = curl("-i", f"{site}/static/css/a.css")
    assert "content-type: text/css" in out.stdout.lower()
    out = curl("-i", f"{site}/static/data.json")
    assert "content-type: application/json" in out.stdout.lower()
    assert curl("-o", "/dev/null", "-w", "%{http_code}", f"{site}/static/missing.html"
                ).stdout == "404"


TRAVERSALS = [
    "/static/../secret.txt", "/static/../../secret.txt", "/static/%2e%2e/secret.txt",
    "/static/%2E%2E/secret.txt", "/static/..%2fsecret.txt", "/static/..%2Fsecret.txt",
    "/static/css/../../secret.txt", "/static/..\\secret.txt", "/static/..%5csecret.txt",
    "/static/%00../secret.txt", "/static/secret.txt%00.html", "/static/....//secret.txt",
    "/static/%252e%252e/secret.txt", "/static//../secret.txt", "/static/./../secret.txt",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_never_escapes_the_root(site: str, path: str) -> None:
    host, port = site.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    assert b"top secret" not in data
    status = data.split(b" ", 2)[1] if data.startswith(b"HTTP/") else b"closed"
    if status == b"200":  # lws may cut the path at a NUL: then it serves the root's index
        assert data.endswith(b"<h1>home</h1>"), data[:300]
    else:
        assert status in (b"403", b"404", b"400", b"closed"), data[:200]


def test_oversized_headers_are_refused_and_others_keep_working(site: str) -> None:
    host, port = site.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        big = "x" * 20_000
        sock.sendall(f"GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n".encode())
        try:
            reply = sock.recv(4096)
        except ConnectionResetError:
            reply = b""
    assert not reply.startswith(b"HTTP/1.1 200")
    assert reply == b"" or reply.split(b" ", 2)[1] in (b"431", b"400", b"413")
    assert curl(f"{site}/hello").stdout.startswith("hi GET")


def test_slow_client_times_out_while_others_are_served() -> None:
    with lws.Context([Site()], port=0, host="127.0.0.1", timeout_secs=1) as ctx, serving(ctx):
        with socket.create_connection(("127.0.0.1", ctx.port), timeout=10) as slow:
            slow.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n")  # never finishes
            assert curl(f"http://127.0.0.1:{ctx.port}/hello").stdout.startswith("hi GET")
            start = time.monotonic()
            assert slow.recv(100) == b""  # lws hangs up on it
            closed_after = time.monotonic() - start
    assert closed_after < 9, "lws did not drop the slow client"


def test_security_headers_option() -> None:
    with lws.Context([Site()], port=0, host="127.0.0.1", security_headers=True) as ctx, \
            serving(ctx):
        out = curl("-i", f"http://127.0.0.1:{ctx.port}/hello")
    assert "x-content-type-options: nosniff" in out.stdout.lower()


def test_declaring_both_on_request_and_on_http_is_an_error() -> None:
    with pytest.raises(lws.DeclarationError, match="on_request and on_http"):
        type("Both", (lws.Protocol,), {
            "name": "b", "on_request": lambda self, conn, req: None,
            "on_http": lambda self, conn, path: 0})


def test_bad_mount_and_response_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="start with '/'"):
        lws.Mount("static", directory=tmp_path)
    with pytest.raises(ValueError, match="exactly one"):
        lws.Mount("/x")
    with pytest.raises(FileNotFoundError):
        lws.Mount("/x", directory=tmp_path / "missing")
    with pytest.raises(ValueError, match=r"100\.\.599"):
        lws.Response(99)
    with pytest.raises(ValueError, match="CR or LF"):
        lws.Response(200, headers={"x": "a\r\nb: c"})
    with pytest.raises(ValueError, match="names protocol"):
        lws.Context([Site()], mounts=[lws.Mount("/x", protocol="nope")])


def test_request_body_can_be_streamed_in_chunks() -> None:
    class Upload(lws.Protocol):
        name = "http"
        max_body_size = 4 << 20

        def __init__(self) -> None:
            self.sizes: list[int] = []

        def on_request_body(self, conn: lws.Connection, req: lws.Request, chunk: bytes) -> None:
            self.sizes.append(len(chunk))

        def on_request(self, conn: lws.Connection, req: lws.Request) -> lws.Response:
            return lws.Response(200, f"{len(self.sizes)} chunks, {sum(self.sizes)} bytes, "
                                     f"body attr {len(req.body)}")

    up = Upload()
    with lws.Context([up], port=0, host="127.0.0.1") as ctx, serving(ctx):
        out = subprocess.run(["curl", "-s", "--max-time", "10", "--data-binary", "@-",
                              f"http://127.0.0.1:{ctx.port}/up"], input=b"u" * 1_000_000,
                             capture_output=True, timeout=30)
    text = out.stdout.decode()
    assert text.endswith("1000000 bytes, body attr 0") and int(text.split()[0]) > 1


@pytest.mark.parametrize("garbage", [
    b"\x00\x01\x02 nonsense\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost x no colon\r\n\r\n", b"\r\n\r\n\r\n",
])
def test_malformed_requests_close_that_connection_only(site: str, garbage: bytes) -> None:
    host, port = site.removeprefix("http://").split(":")
    # lws answers 4xx, hangs up, or (a header line without a colon) waits for
    # more until its timeout: any of these is fine as long as others are served.
    with socket.create_connection((host, int(port)), timeout=2) as sock:
        sock.sendall(garbage)
        try:
            reply = sock.recv(4096)
        except (ConnectionResetError, TimeoutError):
            reply = b""
    assert not reply.startswith(b"HTTP/1.1 200")
    assert reply == b"" or reply.split(b" ", 2)[1][:1] in (b"4", b"5")
    assert curl(f"{site}/hello").stdout.startswith("hi GET")
