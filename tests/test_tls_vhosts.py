"""TLS (server, client, HTTP/2), permessage-deflate, vhosts and origin checks."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trustme
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect
from websockets.sync.server import serve as ws_serve

import lws
from lws.testing import pump, serving


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    wrong = ca.issue_cert("wrong-name.example")
    client = ca.issue_cert("client@example.test")
    files = {"ca": d / "ca.pem", "cert": d / "cert.pem", "key": d / "key.pem",
             "client_cert": d / "client.pem", "client_key": d / "client.key",
             "garbage": d / "garbage.pem", "wrong_cert": d / "wrong.pem",
             "wrong_key": d / "wrong.key"}
    wrong.private_key_pem.write_to_path(str(files["wrong_key"]))
    wrong.cert_chain_pems[0].write_to_path(str(files["wrong_cert"]))
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.private_key_pem.write_to_path(str(files["key"]))
    server.cert_chain_pems[0].write_to_path(str(files["cert"]))
    client.private_key_pem.write_to_path(str(files["client_key"]))
    client.cert_chain_pems[0].write_to_path(str(files["client_cert"]))
    files["garbage"].write_text("not a certificate\n")
    return files


class Site(lws.Protocol):
    name = "http"

    def on_request(self, conn: lws.Connection, req: lws.Request) -> lws.Response:
        body = json.dumps({"path": req.path, "http2": req.http2, "method": req.method,
                           "body": req.body.decode()})
        return lws.Response(200, body, content_type="application/json")


class Echo(lws.Protocol):
    name = "echo"

    def on_message(self, conn: lws.Connection, message: Any) -> None:
        conn.send(message)


def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-s", "--max-time", "10", *args], capture_output=True,
                          text=True, timeout=30)


def test_https_http1_and_http2_with_the_same_handlers(certs: dict[str, Path]) -> None:
    tls = lws.ServerTLS(certs["cert"], certs["key"])
    with lws.Context([Site()], port=0, host="127.0.0.1", tls=tls) as ctx, serving(ctx):
        base = f"https://127.0.0.1:{ctx.port}"
        out = _curl("-v", "--http2", "--cacert", str(certs["ca"]), f"{base}/a", f"{base}/b")
        assert "ALPN: server accepted h2" in out.stderr
        docs = [json.loads(line) for line in out.stdout.replace("}{", "}\n{").splitlines()]
        assert [(d["path"], d["http2"]) for d in docs] == [("/a", True), ("/b", True)]
        out = _curl("--http2", "--cacert", str(certs["ca"]), "-d", "posted", f"{base}/p")
        assert json.loads(out.stdout) == {"path": "/p", "http2": True, "method": "POST",
                                          "body": "posted"}
        sc = ssl.create_default_context(cafile=str(certs["ca"]))
        c = http.client.HTTPSConnection("127.0.0.1", ctx.port, context=sc, timeout=5)
        for path in ("/x", "/y"):  # keep-alive over TLS, HTTP/1.1
            c.request("GET", path)
            r = c.getresponse()
            assert r.status == 200 and json.loads(r.read())["http2"] is False
        c.close()


def test_failed_handshake_does_not_stop_the_server(certs: dict[str, Path]) -> None:
    tls = lws.ServerTLS(certs["cert"], certs["key"])
    with lws.Context([Site()], port=0, host="127.0.0.1", tls=tls) as ctx, serving(ctx):
        untrusting = ssl.create_default_context()  # does not know our CA
        with pytest.raises(ssl.SSLCertVerificationError):
            with socket.create_connection(("127.0.0.1", ctx.port), timeout=5) as raw:
                untrusting.wrap_socket(raw, server_hostname="localhost")
        with socket.create_connection(("127.0.0.1", ctx.port), timeout=5) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # plain text to a TLS port
            try:
                raw.recv(100)
            except ConnectionResetError:
                pass
        out = _curl("--cacert", str(certs["ca"]), f"https://127.0.0.1:{ctx.port}/ok")
        assert json.loads(out.stdout)["path"] == "/ok"


def test_client_certificate_verification(certs: dict[str, Path]) -> None:
    tls = lws.ServerTLS(certs["cert"], certs["key"], client_ca=certs["ca"],
                        require_client_cert=True)
    with lws.Context([Site()], port=0, host="127.0.0.1", tls=tls) as ctx, serving(ctx):
        base = f"https://127.0.0.1:{ctx.port}/c"
        without = _curl("--cacert", str(certs["ca"]), base)
        assert without.returncode != 0
        with_cert = _curl("--cacert", str(certs["ca"]), "--cert", str(certs["client_cert"]),
                          "--key", str(certs["client_key"]), base)
        assert json.loads(with_cert.stdout)["path"] == "/c"


def test_bad_tls_files_give_clear_errors(certs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="certificate file"):
        lws.ServerTLS(tmp_path / "nope.pem", certs["key"])
    with pytest.raises(ValueError, match="needs client_ca"):
        lws.ServerTLS(certs["cert"], certs["key"], require_client_cert=True)
    with pytest.raises(lws.ContextError) as info:
        lws.Context([Site()], port=0, host="127.0.0.1",
                    tls=lws.ServerTLS(certs["garbage"], certs["key"]))
    assert info.value.log_lines


class Cli(lws.Protocol):
    name = "cli"

    def __init__(self) -> None:
        self.got: list[Any] = []
        self.errors: list[str] = []

    def on_client_established(self, conn: lws.Connection) -> None:
        conn.send("over tls")

    def on_message(self, conn: lws.Connection, message: Any) -> None:
        self.got.append(message)
        conn.close()

    def on_client_connection_error(self, conn: lws.Connection, message: str) -> None:
        self.errors.append(message)


def test_wss_client_verifies_ca_and_hostname(certs: dict[str, Path]) -> None:
    tls = lws.ServerTLS(certs["cert"], certs["key"])
    server = lws.Context([Echo()], port=0, host="127.0.0.1", tls=tls)
    with server, serving(server):
        # Trusted CA, right name: works.
        cli = Cli()
        with lws.Context([cli], client_tls=lws.ClientTLS(ca=certs["ca"])) as ctx:
            conn = ctx.connect(f"wss://localhost:{server.port}/", subprotocol="echo")
            pump(ctx, lambda: conn.closed, timeout=10)
        assert cli.got == ["over tls"] and not cli.errors
        # No CA given: the system store does not trust ours; refused.
        cli = Cli()
        with lws.Context([cli]) as ctx:
            try:
                conn = ctx.connect(f"wss://localhost:{server.port}/", subprotocol="echo")
                pump(ctx, lambda: conn.closed, timeout=10)
            except lws.ConnectError:
                pass
        assert cli.got == [] and cli.errors
    # A certificate for another name: refused unless explicitly opted out.
    wrong = lws.ServerTLS(certs["wrong_cert"], certs["wrong_key"])
    server = lws.Context([Echo()], port=0, host="127.0.0.1", tls=wrong)
    with server, serving(server):
        cli = Cli()
        with lws.Context([cli], client_tls=lws.ClientTLS(ca=certs["ca"])) as ctx:
            conn = ctx.connect(f"wss://localhost:{server.port}/", subprotocol="echo")
            pump(ctx, lambda: conn.closed, timeout=10)
            assert cli.got == [] and cli.errors
            conn = ctx.connect(f"wss://localhost:{server.port}/", subprotocol="echo",
                               verify_hostname=False)
            pump(ctx, lambda: conn.closed, timeout=10)
        assert cli.got == ["over tls"]


def test_permessage_deflate_server_with_websockets_client() -> None:
    with lws.Context([Echo()], port=0, host="127.0.0.1", permessage_deflate=True) as ctx, \
            serving(ctx):
        with ws_connect(f"ws://127.0.0.1:{ctx.port}/", subprotocols=["echo"]) as ws:
            assert ws.response is not None
            assert "permessage-deflate" in ws.response.headers.get(
                "Sec-WebSocket-Extensions", "")
            text = "compress me " * 5000
            ws.send(text)
            assert ws.recv(timeout=10) == text
    with lws.Context([Echo()], port=0, host="127.0.0.1") as ctx, serving(ctx):
        with ws_connect(f"ws://127.0.0.1:{ctx.port}/", subprotocols=["echo"]) as ws:
            assert ws.response is not None
            assert "Sec-WebSocket-Extensions" not in ws.response.headers


def test_permessage_deflate_client_with_websockets_server() -> None:
    seen: list[str] = []

    def handler(ws: Any) -> None:
        seen.append(ws.request.headers.get("Sec-WebSocket-Extensions", ""))
        for message in ws:
            ws.send(message)

    with ws_serve(handler, "127.0.0.1", 0) as server:
        import threading

        t = threading.Thread(target=server.serve_forever, daemon=True)
        t.start()
        port = server.socket.getsockname()[1]
        cli = Cli()
        with lws.Context([cli], permessage_deflate=True) as ctx:
            conn = ctx.connect(f"ws://127.0.0.1:{port}/", subprotocol=None)
            pump(ctx, lambda: conn.closed, timeout=10)
        server.shutdown()
        t.join(5)
    assert cli.got == ["over tls"]
    assert seen and "permessage-deflate" in seen[0]


def test_vhosts_by_port_with_their_own_protocols_and_state(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("second site")

    class Counter(lws.Protocol):
        name = "http"

        def __init__(self, label: str) -> None:
            self.label = label
            self.requests = 0  # per-vhost protocol state

        def on_request(self, conn: lws.Connection, req: lws.Request) -> lws.Response:
            self.requests += 1
            return lws.Response(200, f"{self.label} {self.requests} {conn.protocol.vhost.name}")

    first, second = Counter("first"), Counter("second")
    with lws.Context([first], port=0, host="127.0.0.1") as ctx:
        other = ctx.add_vhost("other", [second], port=0, host="127.0.0.1",
                              mounts=[lws.Mount("/files", directory=tmp_path)])
        assert other.port != ctx.port and set(ctx.vhosts) == {"default", "other"}
        with pytest.raises(ValueError, match="already a vhost"):
            ctx.add_vhost("other", [Counter("x")], port=0)
        with serving(ctx):
            a = _curl(f"http://127.0.0.1:{ctx.port}/", f"http://127.0.0.1:{ctx.port}/")
            b = _curl(f"http://127.0.0.1:{other.port}/")
            files = _curl(f"http://127.0.0.1:{other.port}/files/")
    assert a.stdout == "first 1 defaultfirst 2 default"
    assert b.stdout == "second 1 other"
    assert files.stdout == "second site"
    assert (first.requests, second.requests) == (2, 1)


def test_allowed_origins_refuse_others_with_403() -> None:
    with lws.Context([Echo()], port=0, host="127.0.0.1",
                     allowed_origins=["http://good.example"]) as ctx, serving(ctx):
        url = f"ws://127.0.0.1:{ctx.port}/"
        with ws_connect(url, subprotocols=["echo"], origin="http://good.example") as ws:
            ws.send("ok")
            assert ws.recv(timeout=5) == "ok"
        for origin in ("http://evil.example", None):
            with pytest.raises(Exception) as info:
                ws_connect(url, subprotocols=["echo"], origin=origin, open_timeout=5)
            assert isinstance(info.value, InvalidStatus) or "HTTP" in str(info.value) or \
                "403" in str(info.value) or info.type.__name__ == "InvalidMessage"
