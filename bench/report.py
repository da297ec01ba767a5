# ruff: noqa: RUF001  (typographic dashes and signs are meant for the Markdown report)
"""bench/results/results.md and chart.png from the summary that run.py writes.

    python bench/report.py [bench/results/results.json]    # redraw from a summary
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
MODE_TITLES = {
    "latency": "Latency-bound: 1 connection, 1 message in flight (round trips/s)",
    "inflight16": "CPU-bound: 1 connection, 16 messages in flight (messages/s)",
    "conns100": "CPU-bound: 100 connections, 1 message in flight each (messages/s)",
}
SHORT = {"latency": "1 in flight", "inflight16": "16 in flight", "conns100": "100 conns"}


def size_label(size: int | str) -> str:
    n = int(size)
    if n >= 1 << 20:
        return f"{n >> 20} MiB"
    if n >= 1024:
        return f"{n >> 10} KiB"
    return f"{n} B"


def rate(v: float) -> str:
    if v >= 10_000:
        return f"{v / 1000:.1f}k"
    if v >= 1000:
        return f"{v / 1000:.2f}k"
    return f"{v:.0f}"


def cell_rate(s: dict[str, float]) -> str:
    return f"{rate(s['median'])} ({rate(s['min'])}–{rate(s['max'])})"


def cell_ratio(s: dict[str, float]) -> str:
    return f"{s['median']:.2f} ({s['min']:.2f}–{s['max']:.2f})"


def order(keys: list[str]) -> list[str]:
    """C lws, then the binding, per lws version; then the peers."""
    base = ["c-lws", "lws", "lws-asyncio", "picows", "aiohttp", "websockets"]

    def rank(k: str) -> tuple[int, str, int]:
        name, _, version = k.partition(" ")
        return (0 if version else 1, version, base.index(name) if name in base else 9)
    return sorted(keys, key=rank)


def display(key: str, meta: dict[str, Any]) -> str:
    name, _, version = key.partition(" ")
    info = meta["servers"].get(key, {})
    if name == "c-lws":
        return f"C lws {version} echo"
    if name == "lws":
        return f"**lws-cffi on lws {version}, callback API**"
    if name == "lws-asyncio":
        return f"**lws-cffi on lws {version}, asyncio ({info.get('mode', '?')} mode)**"
    return f"{name} {info.get('version', '')}"


def write(summary: dict[str, Any], out: pathlib.Path) -> None:
    meta = summary["meta"]
    echo = summary["echo"]
    keys = order(list(meta["servers"]))
    primary = meta["primary"]
    m = meta["machine"]
    lines: list[str] = []
    add = lines.append
    add("# Benchmarks: lws-cffi against C lws and the Python WebSocket servers")
    add("")
    add(f"Run {meta['date']} with `make bench` (`bench/run.py`): {meta['runs']} runs of "
        f"{meta['duration_s']} s per server, mode and size, each after a "
        f"{meta['warmup_s']} s warm-up on its own connection(s). Every server runs "
        f"pinned to core {meta['server_core']} (`taskset`), the load client "
        f"(`bench/loadclient.c`, C, raw sockets) to core {meta['client_core']}. Each cell: "
        "median (min–max) over the runs. Ratios are computed within each run (the servers "
        "are measured back to back, in an order rotated from run to run), then summarised. "
        "Binary messages, no compression anywhere.")
    add("")
    add(f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}, "
        f"Linux {m['kernel']}")
    lv = ", ".join(f"{v} (asyncio: {meta['asyncio_mode'].get(k, '?')} mode)"
                   for k, v in meta["lws_versions"].items())
    add(f"- lws-cffi {meta['lws_cffi']} (commit {meta.get('commit', '?')}) on libwebsockets "
        f"{lv}; Python {meta['python']}")
    peers = meta["peers"]
    add(f"- picows {peers.get('picows')}, websockets {peers.get('websockets')}, aiohttp "
        f"{peers.get('aiohttp')}, all on uvloop {peers.get('uvloop')} (so is lws.asyncio)")
    add("- Servers: C lws = `conformance/echo.c` built against the same lws (one `lws_write` "
        "per WRITEABLE); callback API = `python -m lws echo` (`lws.__main__.EchoServer`, "
        "`on_message` + `conn.send`); asyncio API and peers = the `async for` echo of "
        "`bench/servers.py`.")
    add("")

    for mode in ("latency", "inflight16", "conns100"):
        if mode not in echo:
            continue
        sizes = list(echo[mode])
        add(f"## {MODE_TITLES[mode]}")
        add("")
        add("| server | " + " | ".join(size_label(s) for s in sizes) + " |")
        add("|---|" + "---|" * len(sizes))
        for key in keys:
            cells = [cell_rate(echo[mode][s][key]["rate"]) if key in echo[mode][s] else "–"
                     for s in sizes]
            add(f"| {display(key, meta)} | " + " | ".join(cells) + " |")
        add("")

    add("## Ratios (computed within each run)")
    add("")
    add("Throughput of the binding divided by C lws on the same lws version, and by each "
        "peer: median (min–max) over the runs. Above 1 = the binding is faster. One "
        "table per lws version (the asyncio API's mode on each is given above).")
    add("")
    bindings = [k for k in keys if k.split(" ")[0] in ("lws", "lws-asyncio")]
    versions = list(dict.fromkeys(k.split(" ")[1] for k in bindings))
    for version in versions:
        mine = [k for k in bindings if k.split(" ")[1] == version]
        cols = [f"{k} / c-lws {version}" for k in mine]
        cols += [f"{k} / {p}" for k in mine for p in ("picows", "websockets", "aiohttp")
                 if p in keys]
        header = [c.replace("c-lws", "C lws") for c in cols]
        add(f"### lws {version}")
        add("")
        add("| mode, size | " + " | ".join(header) + " |")
        add("|---|" + "---|" * len(cols))
        for mode in ("latency", "inflight16", "conns100"):
            for s in summary["ratios"].get(mode, {}):
                r = summary["ratios"][mode][s]
                add(f"| {SHORT[mode]}, {size_label(s)} | "
                    + " | ".join(cell_ratio(r[c]) if c in r else "–" for c in cols) + " |")
        add("")

    add("## Server CPU per message (µs; utime+stime of the server process over the window)")
    add("")
    cfgs = [(mode, s) for mode in ("latency", "inflight16", "conns100") if mode in echo
            for s in echo[mode]]
    add("| server | " + " | ".join(f"{SHORT[mo]}, {size_label(s)}" for mo, s in cfgs) + " |")
    add("|---|" + "---|" * len(cfgs))
    for key in keys:
        cells = []
        for mo, s in cfgs:
            c = echo[mo][s].get(key)
            cells.append(f"{c['cpu_us']['median']:.1f}" if c else "–")
        add(f"| {display(key, meta)} | " + " | ".join(cells) + " |")
    add("")
    add("Binding / C lws, CPU per message (same run; below 1.3 is the issue's target):")
    add("")
    ccols = [c for c in cols if "c-lws" in c]
    add("| mode, size | " + " | ".join(c.replace("c-lws", "C lws") for c in ccols) + " |")
    add("|---|" + "---|" * len(ccols))
    for mo, s in cfgs:
        r = summary["cpu_ratios"][mo][s]
        add(f"| {SHORT[mo]}, {size_label(s)} | "
            + " | ".join(cell_ratio(r[c]) if c in r else "–" for c in ccols) + " |")
    add("")

    if summary.get("connrate"):
        add("## Connections opened, upgraded and closed per second")
        add("")
        add("8 at a time: TCP connect, upgrade, close handshake (client sends 1000), "
            "server closes TCP.")
        add("")
        add("| server | connections/s | server CPU µs per connection |")
        add("|---|---|---|")
        for key in keys:
            c = summary["connrate"].get(key)
            if c:
                add(f"| {display(key, meta)} | {cell_rate(c['rate'])} | "
                    f"{c['cpu_us']['median']:.0f} |")
        add("")

    mem = [x for x in summary.get("memory", []) if x.get("per_conn_bytes")]
    if mem:
        counts = sorted({x["count"] for x in mem})
        add("## Resident memory per idle connection")
        add("")
        add("A fresh server; RSS (VmRSS) after N idle upgraded connections minus RSS before "
            "them, divided by N. Client in its own process.")
        add("")
        add("| server | " + " | ".join(f"{c:,} connections" for c in counts) + " |")
        add("|---|" + "---|" * len(counts))
        for key in keys:
            cells = []
            for c in counts:
                hit = [x for x in mem if x["server"] == key and x["count"] == c]
                cells.append(f"{hit[0]['per_conn_bytes'] / 1024:.1f} KiB"
                             + ("" if hit[0]["opened"] == c else f" ({hit[0]['opened']} opened)")
                             if hit else "–")
            add(f"| {display(key, meta)} | " + " | ".join(cells) + " |")
        add("")

    add("## Is the load client the bottleneck?")
    add("")
    worst = max(((c["client_cpu_pct_max"], mo, s, k) for mo in echo for s in echo[mo]
                 for k, c in echo[mo][s].items()), default=None)
    if worst:
        add(f"- Highest CPU share of its core the load client used in any run: "
            f"{worst[0]:.0f}% ({display(worst[3], meta)}, {SHORT[worst[1]]}, "
            f"{size_label(worst[2])}).")
    ck = summary.get("client_check") or {}
    if ck:
        cu, su = ck["client_cpu_us_per_msg"], ck["server_cpu_us_per_msg"]
        add(f"- Against C lws {primary}, the reference, 16 in flight, 256 B (median of "
            f"3 runs): the client spends **{cu:.1f} µs of CPU per message**, the server "
            f"{su:.1f} µs (one client: {rate(ck['one_client_msgs_per_s'])} msg/s, client at "
            f"{ck['one_client_cpu_pct']:.0f}% of its core, server at "
            f"{ck['one_client_server_cpu_pct']:.0f}% of its own).")
        cell = echo.get("inflight16", {}).get("256", {})
        close = sorted(k for k, c in cell.items() if c["cpu_us"]["median"] < 1.5 * cu)
        far = [c["cpu_us"]["median"] for k, c in cell.items() if k not in close]
        if far:
            add(f"- The binding and the other servers cost at least {min(far):.1f} µs per "
                f"message there ({min(far) / cu:.1f}× the client): with a core each, they "
                "saturate before the client does.")
        if close:
            add(f"- {', '.join(display(k, meta) for k in close)} cost less than 1.5× the "
                "client per message (both sides pay mostly for the same loopback TCP "
                "syscalls), so their CPU-bound *throughput* can be held back by the client "
                "on this 2-core machine: compare the binding with them in CPU per message "
                "(the tables above), which the client cannot bias.")
        add(f"- Two client processes (8 in flight each, same client core) against the same "
            f"server made {rate(ck['two_clients_msgs_per_s'])} msg/s in all, using "
            f"{ck['two_clients_cpu_pct']:.0f}% of the client core (two connections also let "
            "lws serve two sockets per poll).")
        if ck["one_client_server_cpu_pct"] < 80:
            add("- The server did not get all of its core in this check (other processes on "
                "the machine): throughput was bounded by the machine here, and CPU per "
                "message is the figure to read.")
    add("")
    add("## Targets of issue 6 (medians of in-run ratios)")
    add("")
    add(targets(summary))
    add("")
    add("![chart](chart.png)")
    add("")
    (out / "results.md").write_text("\n".join(lines))
    chart(summary, out / "chart.png")


def targets(summary: dict[str, Any]) -> str:
    meta = summary["meta"]
    rows = ["| target | measured | met |", "|---|---|---|"]
    for version in meta["lws_versions"]:
        b, c = f"lws {version}", f"c-lws {version}"
        lat = summary["ratios"].get("latency", {})
        worst = min((lat[s][f"{b} / {c}"]["median"], s) for s in lat if f"{b} / {c}" in lat[s]) \
            if lat else None
        if worst:
            rows.append(f"| latency-bound ≥ 0.9× C lws at every size ({version}) | worst "
                        f"{worst[0]:.2f} at {size_label(worst[1])} | "
                        f"{'yes' if worst[0] >= 0.9 else 'no'} |")
        big = lat.get(str(1 << 20), {}).get(f"{b} / {c}")
        if big:
            rows.append(f"| 1 MiB ≥ 0.95× C lws ({version}) | {big['median']:.2f} | "
                        f"{'yes' if big['median'] >= 0.95 else 'no'} |")
        cpu = summary["ratios"].get("inflight16", {}).get("256", {})
        for ref, floor in ((c, 0.8), ("websockets", 1.6), ("aiohttp", 1.1)):
            r = cpu.get(f"{b} / {ref}")
            if r:
                rows.append(f"| 16 in flight, 256 B ≥ {floor}× {ref} ({version}) | "
                            f"{r['median']:.2f} | {'yes' if r['median'] >= floor else 'no'} |")
        cr = summary["cpu_ratios"].get("inflight16", {}).get("256", {}).get(f"{b} / {c}")
        if cr:
            rows.append(f"| server CPU per message ≤ 1.3× C lws (16 in flight, 256 B, "
                        f"{version}) | {cr['median']:.2f} | "
                        f"{'yes' if cr['median'] <= 1.3 else 'no'} |")
        for count in (1000, 10000):
            mb = [x for x in summary.get("memory", []) if x.get("per_conn_bytes")
                  and x["count"] == count and x["server"] in (b, c)]
            if len(mb) == 2:
                bb = next(x for x in mb if x["server"] == b)["per_conn_bytes"]
                cc = next(x for x in mb if x["server"] == c)["per_conn_bytes"]
                rows.append(f"| memory per idle connection ≤ C lws + 1 KiB ({count:,}, "
                            f"{version}) | {bb / 1024:.1f} KiB vs {cc / 1024:.1f} KiB | "
                            f"{'yes' if bb <= cc + 1024 else 'no'} |")
    return "\n".join(rows)


def chart(summary: dict[str, Any], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta = summary["meta"]
    echo = summary["echo"]
    keys = order(list(meta["servers"]))
    primary = meta["primary"]
    fig, axes = plt.subplots(2, 3, figsize=(17, 9.5))
    colors = {"c-lws": "#444444", "lws": "#d62728", "lws-asyncio": "#ff9896",
              "picows": "#1f77b4", "websockets": "#2ca02c", "aiohttp": "#9467bd"}

    def style(key: str) -> dict[str, Any]:
        name, _, version = key.partition(" ")
        hatch = "//" if version and version != primary else None
        return {"color": colors.get(name, "#888888"), "hatch": hatch, "edgecolor": "white"}

    def bars(ax: Any, mode: str, title: str) -> None:
        if mode not in echo:
            ax.set_visible(False)
            return
        sizes = list(echo[mode])
        width = 0.85 / len(keys)
        for i, key in enumerate(keys):
            ref = f"c-lws {key.partition(' ')[2]}" if key.split(" ")[0] in (
                "c-lws", "lws", "lws-asyncio") else f"c-lws {primary}"
            vals, lo, hi = [], [], []
            for s in sizes:
                ratio = summary["ratios"][mode][s].get(f"{key} / {ref}")
                if key == ref:
                    ratio = {"median": 1.0, "min": 1.0, "max": 1.0}
                vals.append(ratio["median"] if ratio else 0)
                lo.append(ratio["median"] - ratio["min"] if ratio else 0)
                hi.append(ratio["max"] - ratio["median"] if ratio else 0)
            xs = [j + (i - len(keys) / 2 + 0.5) * width for j in range(len(sizes))]
            ax.bar(xs, vals, width, yerr=[lo, hi], capsize=2, label=key, **style(key))
        ax.axhline(1.0, color="black", linewidth=0.8)
        # A run where the machine stalled can put one ratio far off: keep the
        # axis on the medians (whiskers past it are clipped).
        medians = [summary["ratios"][mode][s][r]["median"] for s in sizes
                   for r in summary["ratios"][mode][s]]
        ax.set_ylim(0, max(1.5, 1.4 * max(medians, default=1.0)))
        ax.set_xticks(range(len(sizes)), [size_label(s) for s in sizes])
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("throughput / C lws (same run; median, min–max)")

    bars(axes[0][0], "latency", "1 connection, 1 in flight")
    bars(axes[0][1], "inflight16", "1 connection, 16 in flight")
    bars(axes[0][2], "conns100", "100 connections, 1 in flight each")
    axes[0][0].legend(fontsize=8, ncol=2)

    ax = axes[1][0]
    cell = echo.get("inflight16", {}).get("256", {})
    ks = [k for k in keys if k in cell]
    ax.bar(range(len(ks)), [cell[k]["cpu_us"]["median"] for k in ks],
           color=[style(k)["color"] for k in ks], hatch=None)
    ax.set_xticks(range(len(ks)), ks, rotation=30, ha="right", fontsize=8)
    ax.set_title("server CPU µs per message (16 in flight, 256 B)", fontsize=10)

    ax = axes[1][1]
    mem = [x for x in summary.get("memory", []) if x.get("per_conn_bytes")]
    counts = sorted({x["count"] for x in mem})
    if mem:
        width = 0.8 / max(1, len(counts))
        for j, count in enumerate(counts):
            vals = []
            for k in keys:
                hit = [x for x in mem if x["server"] == k and x["count"] == count]
                vals.append(hit[0]["per_conn_bytes"] / 1024 if hit else 0)
            ax.bar([i + (j - len(counts) / 2 + 0.5) * width for i in range(len(keys))], vals,
                   width, label=f"{count:,} connections",
                   color=["#999999", "#555555"][j % 2])
        ax.set_xticks(range(len(keys)), keys, rotation=30, ha="right", fontsize=8)
        ax.legend(fontsize=8)
    ax.set_title("resident memory per idle connection (KiB)", fontsize=10)

    ax = axes[1][2]
    cr = summary.get("connrate", {})
    ks = [k for k in keys if k in cr]
    ax.bar(range(len(ks)), [cr[k]["rate"]["median"] for k in ks],
           yerr=[[cr[k]["rate"]["median"] - cr[k]["rate"]["min"] for k in ks],
                 [cr[k]["rate"]["max"] - cr[k]["rate"]["median"] for k in ks]],
           color=[style(k)["color"] for k in ks], capsize=2)
    ax.set_xticks(range(len(ks)), ks, rotation=30, ha="right", fontsize=8)
    ax.set_title("connections opened + upgraded + closed per second", fontsize=10)

    m = meta["machine"]
    fig.suptitle(f"lws-cffi {meta['lws_cffi']} vs C lws and peers — {m['cpu']}, "
                 f"{m['cores']} cores, Python {meta['python']}, {meta['date'][:10]}",
                 fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    src = pathlib.Path(args[0]) if args else HERE / "results" / "results.json"
    summary = json.loads(src.read_text())
    write(summary, src.parent)
    print(f"wrote {src.parent / 'results.md'} and {src.parent / 'chart.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
