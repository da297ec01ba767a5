"""Python twin of lws' minimal-examples/http-server/minimal-http-server-multivhost.

Two vhosts on two ports, each with its own protocol instance (so its own
per-vhost state) and its own mount.

    python examples/minimal_http_server_multivhost.py [--port N] [--port2 N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lws


class Hello(lws.Protocol):
    name = "http"

    def __init__(self, site: str) -> None:
        self.site = site
        self.served = 0  # per-vhost protocol state

    def on_request(self, conn: lws.Connection, request: lws.Request) -> lws.Response:
        self.served += 1
        return lws.Response(200, f"{self.site}: request {self.served} on vhost "
                                 f"{self.vhost.name}\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=7681)
    parser.add_argument("--port2", type=int, default=7682)
    args = parser.parse_args(argv)
    with lws.Context([Hello("first site")], port=args.port, host=args.host) as ctx:
        second = ctx.add_vhost(
            "localhost2", [Hello("second site")], port=args.port2, host=args.host,
            mounts=[lws.Mount("/files", directory=Path(__file__).parent / "mount-origin")])
        print(f"http://localhost:{ctx.port}/ http://localhost:{second.port}/", flush=True)
        try:
            ctx.run()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
