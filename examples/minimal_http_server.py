"""Python twin of lws' minimal-examples/http-server/minimal-http-server.

Serves ./mount-origin (next to this file) at / on port 7681 with lws' own
file server: default index, MIME types, 404 for missing files.

    python examples/minimal_http_server.py [--port N] [--host H] [--dir PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lws


class Http(lws.Protocol):
    """protocols[0]: lws serves the mount itself; nothing to handle here."""

    name = "http"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=7681)
    parser.add_argument("--dir", default=str(Path(__file__).parent / "mount-origin"))
    args = parser.parse_args(argv)
    mounts = [lws.Mount("/", directory=args.dir, default="index.html")]
    with lws.Context([Http()], port=args.port, host=args.host, mounts=mounts) as ctx:
        print(f"http://localhost:{ctx.port}/", flush=True)
        try:
            ctx.run()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
