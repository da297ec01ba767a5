"""Python twin of lws' minimal-examples/http-server/minimal-http-server-tls.

The same file mount as minimal_http_server.py, over TLS (HTTP/2 by ALPN
where the lws build has it). Give it a certificate and key in PEM files.

    python examples/minimal_http_server_tls.py --cert C.pem --key K.pem [--port N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lws


class Http(lws.Protocol):
    name = "http"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=7681)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args(argv)
    tls = lws.ServerTLS(args.cert, args.key)
    mounts = [lws.Mount("/", directory=Path(__file__).parent / "mount-origin")]
    with lws.Context([Http()], port=args.port, host=args.host, mounts=mounts,
                     tls=tls) as ctx:
        print(f"https://localhost:{ctx.port}/", flush=True)
        try:
            ctx.run()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
