"""The benchmark run: every server under test, every mode and size, one report.

    python bench/run.py [--quick] [--runs 5] [--duration 2] [--warmup 0.5]
                        [--servers c-lws,lws,...] [--python435 PY] [--prefix435 DIR]
                        [--skip memory,connrate,check]

Server on core 0 (taskset), load client (bench/loadclient.c) on core 1. All
servers are started once and stay up; each (mode, size) is run ``--runs``
times, and in each run every server is measured once, back to back, in an
order rotated from run to run, so that every ratio is computed between
measurements taken within the same run. Reports median, min and max.

Measured: round trips/s with 1 message in flight (latency-bound), messages/s
with 16 in flight on one connection and with 100 connections (CPU-bound),
the server's CPU microseconds per message (utime+stime from /proc/PID/stat
over the measurement window), resident memory per idle connection at 1,000
and 10,000 connections (fresh server each, client in its own process), and
connections opened + upgraded + closed per second.

Writes bench/results/results.md, chart.png and results.json (the summary);
the raw per-run lines go to bench/results/raw/ (not committed).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import select
import statistics
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import harness
import report
from servers import ALL_SERVERS, Runtime, Server, raise_nofile, start, stop_process

RESULTS = harness.BENCH / "results"
KIB = 1024
CONFIGS: list[tuple[str, int, int, list[int]]] = [
    # mode name, connections, messages in flight per connection, sizes
    ("latency", 1, 1, [16, 256, 8 * KIB, 64 * KIB, 1024 * KIB]),
    ("inflight16", 1, 16, [16, 256, 8 * KIB]),
    ("conns100", 100, 1, [16, 256, 8 * KIB]),
]
BINDING = ("lws", "lws-asyncio")
PEERS = ("picows", "websockets", "aiohttp")
VERSIONED = ("c-lws", *BINDING)


class Progress:
    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.t0 = time.monotonic()
        self.tty = sys.stderr.isatty()

    def step(self, label: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.t0
        left = elapsed / self.done * (self.total - self.done) if self.done else 0
        line = (f"[{self.done:4d}/{self.total}] {elapsed / 60:5.1f} min, "
                f"~{left / 60:4.1f} min left  {label}")
        if self.tty:
            sys.stderr.write("\r\x1b[K" + line[:150])
        elif self.done % 10 == 0 or self.done == self.total:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def note(self, text: str) -> None:
        if self.tty:
            sys.stderr.write("\r\x1b[K")
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


def stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def ref_key(server_key: str, primary: str) -> str:
    """The C lws echo a server is compared with: same lws for the binding."""
    name, _, version = server_key.partition(" ")
    return f"c-lws {version}" if name in VERSIONED else f"c-lws {primary}"


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem_kib = int(line.split()[1])
    try:
        os_name = platform.freedesktop_os_release().get("PRETTY_NAME", platform.system())
    except OSError:
        os_name = platform.system()
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1),
            "kernel": platform.release(), "os": os_name,
            "nofile_hard": __import__("resource").getrlimit(
                __import__("resource").RLIMIT_NOFILE)[1]}


# -- the parts of a run ------------------------------------------------------

def run_matrix(servers: list[Server], configs: list[tuple[str, int, int, list[int]]],
               args: argparse.Namespace, progress: Progress, raw: Any) -> list[dict[str, Any]]:
    rows = []
    for mode, conns, inflight, sizes in configs:
        for size in sizes:
            for run in range(args.runs):
                shift = run % len(servers)
                for srv in servers[shift:] + servers[:shift]:
                    label = f"{mode} {size} B run {run + 1}/{args.runs} {srv.key}"
                    res = measure(srv, label, progress, conns=conns, inflight=inflight,
                                  size=size, warmup=args.warmup, duration=args.duration)
                    if srv.proc.poll() is not None:
                        raise harness.HarnessError(f"{srv.key} died during {label}")
                    row = {**res, "kind": "echo", "mode": mode, "size": size, "run": run,
                           "server": srv.key}
                    rows.append(row)
                    raw.write(json.dumps(row) + "\n")
                    rate = res.get("msgs_per_s")
                    progress.step(f"{label}: {rate / 1000:.1f}k/s" if rate else label)
    return rows


def measure(srv: Server, label: str, progress: Progress, **kw: Any) -> dict[str, Any]:
    """One load-client run; repeated once if nothing at all came back.

    On this shared 2-core VM the whole machine sometimes stalls for a second
    or more (both processes idle, no messages); such a window measures the
    host, not the server. The repeat is recorded (``retried``).
    """
    res: dict[str, Any] = {}
    for attempt in range(2):
        try:
            res = harness.run_client(srv.port, srv.pid, **kw)
        except (harness.HarnessError, subprocess.TimeoutExpired) as exc:
            res = {"error": str(exc)}
            progress.note(f"{label}: {exc}")
        if res.get("msgs_per_s") or res.get("cycles_per_s") or "error" in res:
            break
        progress.note(f"{label}: no message in the window, measuring again")
        res["retried"] = attempt + 1
    return res


def run_connrate(servers: list[Server], args: argparse.Namespace, progress: Progress,
                 raw: Any) -> list[dict[str, Any]]:
    rows = []
    for run in range(args.runs):
        shift = run % len(servers)
        for srv in servers[shift:] + servers[:shift]:
            label = f"connrate run {run + 1}/{args.runs} {srv.key}"
            res = measure(srv, label, progress, mode="connrate", parallel=8,
                          warmup=args.warmup, duration=args.duration)
            row = {**res, "kind": "connrate", "run": run, "server": srv.key}
            rows.append(row)
            raw.write(json.dumps(row) + "\n")
            rate = res.get("cycles_per_s")
            progress.step(f"{label}: {rate:.0f}/s" if rate else label)
    return rows


def client_check(ref: Server, args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Is the load client the bottleneck? Against C lws, 16 in flight, 256 B:
    the CPU the client spends per message next to the server's, and one
    client (16 in flight) against two client processes (8 in flight each) on
    the same client core, alternated three times."""
    ones, twos = [], []
    cmd = [str(harness.CLIENT_BIN), "--port", str(ref.port), "--inflight", "8", "--size",
           "256", "--warmup", str(args.warmup), "--duration", str(args.duration),
           "--server-pid", str(ref.pid)]
    for i in range(3):
        ones.append(harness.run_client(ref.port, ref.pid, inflight=16, size=256,
                                       warmup=args.warmup, duration=args.duration))
        progress.step(f"client check {i + 1}/3: one client")
        procs = [subprocess.Popen(["taskset", "-c", str(harness.CLIENT_CORE), *cmd],
                                  stdout=subprocess.PIPE, text=True) for _ in range(2)]
        pair = []
        try:
            for p in procs:
                out, _ = p.communicate(timeout=args.warmup + args.duration + 30)
                pair.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            for p in procs:
                stop_process(p)
        twos.append(pair)
        progress.step(f"client check {i + 1}/3: two clients")

    def us_per_msg(r: dict[str, Any], pct_key: str) -> float:
        return r[pct_key] / 100 * r["window_s"] / r["messages"] * 1e6 if r["messages"] else 0.0

    return {
        "one_client_msgs_per_s": statistics.median(r["msgs_per_s"] for r in ones),
        "one_client_cpu_pct": statistics.median(r["client_cpu_pct"] for r in ones),
        "one_client_server_cpu_pct": statistics.median(r.get("server_cpu_pct", 0) for r in ones),
        "client_cpu_us_per_msg": statistics.median(us_per_msg(r, "client_cpu_pct") for r in ones),
        "server_cpu_us_per_msg": statistics.median(r.get("server_cpu_us_per_op", 0) for r in ones),
        "two_clients_msgs_per_s": statistics.median(sum(r["msgs_per_s"] for r in p)
                                                    for p in twos),
        "two_clients_cpu_pct": statistics.median(sum(r["client_cpu_pct"] for r in p)
                                                 for p in twos),
    }


def measure_memory(name: str, rt: Runtime, count: int, log_dir: pathlib.Path,
                   hold: float = 60.0) -> dict[str, Any]:
    """RSS growth of a fresh server for ``count`` idle upgraded connections."""
    srv = start(name, rt, harness.SERVER_CORE, log_path=str(log_dir / f"memory-{name}.log"))
    client = None
    try:
        # one short burst first, so that lazy one-time allocations are not counted
        harness.run_client(srv.port, mode="connrate", parallel=4, warmup=0, duration=0.5)
        time.sleep(0.5)
        rss0 = srv.rss_kib()
        client = subprocess.Popen(
            ["taskset", "-c", str(harness.CLIENT_CORE), str(harness.CLIENT_BIN),
             "--port", str(srv.port), "--mode", "idle", "--conns", str(count),
             "--hold", str(hold)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=raise_nofile)
        assert client.stdout is not None
        ready, _, _ = select.select([client.stdout], [], [], 90)
        if not ready:
            raise harness.HarnessError(f"{name}: idle client did not report")
        opened = json.loads(client.stdout.readline())
        time.sleep(1.0)
        rss1 = srv.rss_kib()
        n = opened["opened"]
        return {"server": srv.key, "count": count, "opened": n, "open_s": opened["open_s"],
                "rss0_kib": rss0, "rss_kib": rss1,
                "per_conn_bytes": (rss1 - rss0) * 1024 / n if n else None}
    finally:
        if client is not None:
            try:
                assert client.stdin is not None
                client.stdin.close()
                client.wait(30)
            except subprocess.TimeoutExpired:
                pass
            stop_process(client)
        srv.stop()


# -- main --------------------------------------------------------------------------

def summarize(rows: list[dict[str, Any]], conn_rows: list[dict[str, Any]],
              primary: str, keys: list[str]) -> dict[str, Any]:
    """Medians per server and ratios computed within each run."""
    out: dict[str, Any] = {"echo": {}, "ratios": {}, "cpu_ratios": {}, "connrate": {}}
    by: dict[tuple[str, int, int, str], dict[str, Any]] = {}
    for r in rows:
        if "msgs_per_s" in r:
            by[(r["mode"], r["size"], r["run"], r["server"])] = r
    modes = sorted({(r["mode"], r["size"]) for r in rows}, key=lambda m: (
        [c[0] for c in CONFIGS].index(m[0]) if m[0] in [c[0] for c in CONFIGS] else 9, m[1]))
    runs = sorted({r["run"] for r in rows})
    for mode, size in modes:
        cell: dict[str, Any] = {}
        for key in keys:
            got = [by[(mode, size, run, key)] for run in runs if (mode, size, run, key) in by]
            if not got:
                continue
            cell[key] = {
                "rate": stats([g["msgs_per_s"] for g in got]),
                "cpu_us": stats([g["server_cpu_us_per_op"] for g in got
                                 if g.get("server_cpu_us_per_op")] or [0.0]),
                "server_cpu_pct": statistics.median(g.get("server_cpu_pct", 0) for g in got),
                "client_cpu_pct_max": max(g["client_cpu_pct"] for g in got),
                "rtt_p50_us": statistics.median(g["rtt_us"]["p50"] for g in got),
                "rtt_p99_us": statistics.median(g["rtt_us"]["p99"] for g in got),
                "errors": sum(g.get("errors", 0) for g in got),
                "verify_failures": sum(g.get("verify_failures", 0) for g in got),
            }
        out["echo"].setdefault(mode, {})[str(size)] = cell
        pairs: list[tuple[str, str]] = []
        for key in keys:
            ref = ref_key(key, primary)
            if key != ref and ref in keys:
                pairs.append((key, ref))
            if key.split(" ")[0] in BINDING:
                pairs += [(key, peer) for peer in PEERS if peer in keys]
        ratios: dict[str, Any] = {}
        cpu_ratios: dict[str, Any] = {}
        for a, b in pairs:
            vals, cvals = [], []
            for run in runs:
                ra, rb = by.get((mode, size, run, a)), by.get((mode, size, run, b))
                if ra and rb and rb["msgs_per_s"]:
                    vals.append(ra["msgs_per_s"] / rb["msgs_per_s"])
                    if ra.get("server_cpu_us_per_op") and rb.get("server_cpu_us_per_op"):
                        cvals.append(ra["server_cpu_us_per_op"] / rb["server_cpu_us_per_op"])
            if vals:
                ratios[f"{a} / {b}"] = stats(vals)
            if cvals:
                cpu_ratios[f"{a} / {b}"] = stats(cvals)
        out["ratios"].setdefault(mode, {})[str(size)] = ratios
        out["cpu_ratios"].setdefault(mode, {})[str(size)] = cpu_ratios
    for key in keys:
        got = [r for r in conn_rows if r["server"] == key and "cycles_per_s" in r]
        if got:
            out["connrate"][key] = {
                "rate": stats([g["cycles_per_s"] for g in got]),
                "cpu_us": stats([g.get("server_cpu_us_per_op", 0.0) for g in got]),
                "errors": sum(g.get("errors", 0) for g in got)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before measuring")
    parser.add_argument("--quick", action="store_true",
                        help="3 runs of 1 s, 1,000 idle connections only (a few minutes)")
    parser.add_argument("--servers", default=",".join(ALL_SERVERS),
                        help="comma-separated subset of: " + ", ".join(ALL_SERVERS))
    parser.add_argument("--python435", default=str(harness.ROOT / ".venv-lws435/bin/python"),
                        help="a Python with lws-cffi installed against lws 4.3.5 "
                             "('' to skip)")
    parser.add_argument("--prefix435", default=str(harness.ROOT / "vendor/prefix/lws-4.3.5"))
    parser.add_argument("--skip", default="", help="comma-separated: memory, connrate, check")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.duration, args.warmup = 3, 1.0, 0.3
    skip = {s for s in args.skip.split(",") if s}
    wanted = [s for s in args.servers.split(",") if s]
    bad = set(wanted) - set(ALL_SERVERS)
    if bad:
        parser.error(f"unknown servers: {', '.join(sorted(bad))}")
    raise_nofile()

    harness.build_client()
    runtimes = [harness.source_runtime()]
    if args.python435 and os.path.exists(args.python435):
        try:
            runtimes.append(harness.installed_runtime(args.python435, args.prefix435))
        except harness.HarnessError as exc:
            print(f"bench: skipping lws 4.3.5: {exc}", file=sys.stderr)
    elif args.python435:
        print(f"bench: {args.python435} not found; lws 4.3.5 skipped", file=sys.stderr)
    primary = runtimes[0].label
    plan: list[tuple[str, Runtime]] = [(n, runtimes[0]) for n in wanted]
    for rt in runtimes[1:]:
        plan += [(n, rt) for n in VERSIONED if n in wanted]
    for name, rt in plan:
        if name in PEERS and not rt.info.get(name):
            raise harness.HarnessError(f"{name} is not installed for {rt.python}")

    args.out.mkdir(parents=True, exist_ok=True)
    raw_dir = args.out / "raw"
    raw_dir.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    counts = sum(len(c[3]) for c in CONFIGS) * args.runs * len(plan)
    mem_counts = [1000] if args.quick else [1000, 10000]
    total = counts + (0 if "connrate" in skip else args.runs * len(plan)) + \
        (0 if "check" in skip else 6) + (0 if "memory" in skip else len(plan) * len(mem_counts))
    progress = Progress(total)
    print(f"bench: {len(plan)} servers, {args.runs} runs of {args.duration} s "
          f"(+{args.warmup} s warm-up) each; server on core {harness.SERVER_CORE}, "
          f"client on core {harness.CLIENT_CORE}; raw lines in {raw_dir}/{stamp}.jsonl",
          file=sys.stderr)

    servers: list[Server] = []
    rows: list[dict[str, Any]] = []
    conn_rows: list[dict[str, Any]] = []
    check: dict[str, Any] = {}
    memory: list[dict[str, Any]] = []
    with open(raw_dir / f"{stamp}.jsonl", "w") as raw:
        try:
            for name, rt in plan:
                servers.append(start(name, rt, harness.SERVER_CORE,
                                     log_path=str(raw_dir / f"{stamp}-{name}-{rt.label}.log")))
            rows = run_matrix(servers, CONFIGS, args, progress, raw)
            if "connrate" not in skip:
                conn_rows = run_connrate(servers, args, progress, raw)
            if "check" not in skip:
                check = client_check(servers[0], args, progress)
        finally:
            for srv in servers:
                srv.stop()
        if "memory" not in skip:
            for name, rt in plan:
                for count in mem_counts:
                    try:
                        m = measure_memory(name, rt, count, raw_dir)
                    except (harness.HarnessError, RuntimeError, OSError) as exc:
                        m = {"server": f"{name} {rt.label}" if name in VERSIONED else name,
                             "count": count, "error": str(exc)}
                        progress.note(f"memory {name} {count}: {exc}")
                    memory.append(m)
                    raw.write(json.dumps({"kind": "memory", **m}) + "\n")
                    per = m.get("per_conn_bytes")
                    progress.step(f"memory {m['server']} {count}: "
                                  + (f"{per / 1024:.1f} KiB/conn" if per else "failed"))
    progress.note("bench: done")

    keys = [s.key for s in servers]
    git = subprocess.run(["git", "-C", str(harness.ROOT), "log", "-1", "--format=%h %cs"],
                         capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(harness.ROOT), "status", "--porcelain", "--",
                            "lws", "build_lws.py"], capture_output=True, text=True,
                           check=False).stdout.strip()
    info = runtimes[0].info
    summary = {
        "meta": {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": machine(),
            "python": info["python"],
            "lws_cffi": info["lws_cffi"],
            "commit": git + (" + uncommitted changes in lws/" if dirty else ""),
            "lws_versions": {rt.label: rt.info["lws"] for rt in runtimes},
            # as the servers reported it (LWS_ASYNCIO_MODE picks one; auto otherwise)
            "asyncio_mode": {s.runtime.label: s.info.get("mode") for s in servers
                             if s.name == "lws-asyncio"},
            "peers": {p: info.get(p) for p in (*PEERS, "uvloop")},
            "runs": args.runs, "duration_s": args.duration, "warmup_s": args.warmup,
            "primary": primary, "server_core": harness.SERVER_CORE,
            "client_core": harness.CLIENT_CORE,
            "servers": {s.key: {"name": s.name, "lws": s.runtime.info["lws"], **s.info}
                        for s in servers},
        },
        **summarize(rows, conn_rows, primary, keys),
        "client_check": check,
        "memory": memory,
    }
    (args.out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    report.write(summary, args.out)
    print(f"bench: wrote {args.out / 'results.md'} and {args.out / 'chart.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
