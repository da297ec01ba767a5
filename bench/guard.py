"""CI guard: fail if the binding's CPU-bound throughput falls below a floor ratio to C lws.

    python bench/guard.py [--floor 0.45] [--pairs 3] [--python PY --lws-prefix DIR]

Starts the C lws echo (conformance/echo.c, built against the same lws as the
binding) and the binding's callback echo (``python -m lws echo``), each pinned
to core 0, and measures both with the load client on core 1 in the CPU-bound
mode: one connection, 16 messages of 256 B in flight. ``--pairs`` pairs of
runs (C lws then the binding, alternating which goes first), 1.5 s each after
0.3 s of warm-up: about 15 seconds in all. The figure judged is a ratio taken
within each pair, never a wall-clock rate: messages per server CPU-second
(utime+stime from /proc) of the binding over those of C lws, the median over
the pairs. In this mode that equals the throughput ratio on a quiet machine,
and it stays put when neighbours take part of the server's core (the
messages/s ratio is printed too). Exit status: 0 pass, 1 below the floor, 2
the guard could not run.

The default floor (0.45) was chosen from measurements on the 2-core
reference machine (see bench/README.md): after the second round of hot-path
work the guard gives about 0.7 on lws 4.1.6 and 0.9 on 4.3.5, so the floor
is about 0.65 times that, and a regression that makes the binding's messages
cost 1.5 times the CPU fails. Raise it as the hot path gets faster. Override
with ``--floor`` or the ``LWS_BENCH_FLOOR`` environment variable.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import harness
from servers import Server, raise_nofile, start

DEFAULT_FLOOR = 0.45


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--floor", type=float,
                        default=float(os.environ.get("LWS_BENCH_FLOOR", DEFAULT_FLOOR)))
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=1.5)
    parser.add_argument("--warmup", type=float, default=0.3)
    parser.add_argument("--python", default=None,
                        help="a Python with lws-cffi installed (default: this source tree "
                             "with the running Python)")
    parser.add_argument("--lws-prefix", default=os.environ.get("LWS_PREFIX"),
                        help="with --python: the lws install it was built against")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    raise_nofile()
    servers: list[Server] = []
    try:
        harness.build_client()
        if args.python:
            rt = harness.installed_runtime(args.python, args.lws_prefix or "")
        else:
            rt = harness.source_runtime()
        c = start("c-lws", rt, harness.SERVER_CORE)
        servers.append(c)
        b = start("lws", rt, harness.SERVER_CORE)
        servers.append(b)
        ratios: list[float] = []
        cpu_ratios: list[float] = []
        pairs: list[dict[str, Any]] = []
        stalls = 0
        while len(ratios) < args.pairs:
            got = {}
            for srv in ((c, b) if len(ratios) % 2 == 0 else (b, c)):
                got[srv.name] = harness.run_client(srv.port, srv.pid, inflight=16, size=256,
                                                   warmup=args.warmup,
                                                   duration=args.duration)
            rc, rb = got["c-lws"], got["lws"]
            if rb.get("errors") or rc.get("errors"):
                raise harness.HarnessError(f"a run had errors: C {rc}, binding {rb}")
            if not rc["msgs_per_s"] or not rb["msgs_per_s"]:
                # Nothing came back at all: on a shared VM the whole machine
                # sometimes stalls for a second. Measure the pair again (twice
                # at most); a binding that really hangs fails after that.
                stalls += 1
                if not rc["msgs_per_s"] and stalls > 2:
                    raise harness.HarnessError("C lws echoed nothing three times")
                if stalls <= 2:
                    print("guard: a window with no messages, measuring that pair again",
                          file=sys.stderr)
                    continue
                # the binding echoed nothing, again: that counts (ratio 0)
            ratios.append(rb["msgs_per_s"] / rc["msgs_per_s"])
            if rb.get("server_cpu_us_per_op") and rc.get("server_cpu_us_per_op"):
                cpu_ratios.append(rb["server_cpu_us_per_op"] / rc["server_cpu_us_per_op"])
            pairs.append({"c_lws": rc["msgs_per_s"], "binding": rb["msgs_per_s"],
                          "c_lws_cpu_us": rc.get("server_cpu_us_per_op"),
                          "binding_cpu_us": rb.get("server_cpu_us_per_op")})
    except (harness.HarnessError, RuntimeError, OSError) as exc:
        print(f"guard: could not run: {exc}", file=sys.stderr)
        return 2
    finally:
        for srv in servers:
            srv.stop()
    # The judged ratio: messages per server-CPU-second, binding over C lws, in
    # the same pair. In the CPU-bound mode a server's throughput is its core
    # divided by its CPU cost per message, so on a quiet machine this equals
    # the throughput ratio; unlike messages/s it does not move when a
    # neighbour takes part of the server's core for a while.
    efficiency = [1 / r for r in cpu_ratios]
    if len(efficiency) < len(ratios):  # a pair without CPU figures: use throughput
        efficiency = ratios
    ratio = statistics.median(efficiency)
    ok = ratio >= args.floor
    result = {"lws": rt.info["lws"], "ratio": round(ratio, 3),
              "efficiency_ratios": [round(r, 3) for r in efficiency],
              "throughput_ratio": round(statistics.median(ratios), 3),
              "throughput_ratios": [round(r, 3) for r in ratios],
              "floor": args.floor, "ok": ok, "pairs": pairs}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"guard: lws {rt.info['lws']}, 16 in flight x 256 B: binding / C lws, messages "
              f"per CPU-second = {ratio:.2f} (pairs: "
              f"{', '.join(f'{r:.2f}' for r in efficiency)}; messages/s ratio "
              f"{result['throughput_ratio']:.2f}), floor {args.floor:.2f}: "
              f"{'ok' if ok else 'BELOW THE FLOOR'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
