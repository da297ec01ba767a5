"""Python twin of lws' minimal-examples/http-server/minimal-http-server-dynamic.

Files from ./mount-origin at /, and dynamic answers under /dyn produced by a
Python handler (``on_request``) through a callback mount. The body is
streamed one chunk per HTTP WRITEABLE, so it works over HTTP/2 as well.

    python examples/minimal_http_server_dynamic.py [--port N] [--host H]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path

import lws


class Http(lws.Protocol):
    name = "http"


class Dynamic(lws.Protocol):
    name = "dyn"

    def on_request(self, conn: lws.Connection, request: lws.Request) -> lws.Response:
        def body() -> Iterator[bytes]:
            yield b"<html><body><h1>Dynamic content</h1>"
            yield f"<p>{request.method} {request.path}, query {request.query}</p>".encode()
            yield f"<p>time {time.time():.3f}</p></body></html>".encode()

        return lws.Response(200, stream=body(), content_type="text/html")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=7681)
    args = parser.parse_args(argv)
    mounts = [lws.Mount("/dyn", protocol="dyn"),
              lws.Mount("/", directory=Path(__file__).parent / "mount-origin")]
    with lws.Context([Http(), Dynamic()], port=args.port, host=args.host,
                     mounts=mounts) as ctx:
        print(f"http://localhost:{ctx.port}/dyn", flush=True)
        try:
            ctx.run()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
