"""Python twin of lws' minimal-examples/http-client/minimal-http-client.

Fetches one URL with lws' own HTTP client and prints the status, the headers
lws knows and the body. ``--ca`` trusts a CA file for https:// URLs.

    python examples/minimal_http_client.py URL [--post DATA] [--ca CA.pem]
"""

from __future__ import annotations

import argparse
import sys

import lws


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--post", default=None, help="POST this body instead of GET")
    parser.add_argument("--ca", default=None)
    args = parser.parse_args(argv)
    tls = lws.ClientTLS(ca=args.ca) if args.ca else None
    try:
        result = lws.fetch(args.url, method="POST" if args.post is not None else "GET",
                           body=args.post, tls=tls, timeout=20)
    except (lws.ConnectError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(result.status)
    for name, value in sorted(result.headers.items()):
        print(f"{name}: {value}")
    print()
    sys.stdout.write(result.text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
