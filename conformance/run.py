"""Run the Autobahn TestSuite cases (with kosoku) against the binding and the C baseline.

    python conformance/run.py [--cases GLOB ...] [--exclude GLOB ...]
        [--modes server,client] [--peers binding,c[,asyncio]] [--case-timeout S]
        [--jobs N] [--artifacts DIR] [--doc FILE | --no-doc]

Two modes, two peers each (three with ``asyncio``):

* ``server``: kosoku's fuzzing client drives an echo server: the binding's
  (``binding_peer.py server``, i.e. the protocol of ``python -m lws echo``) and
  the C baseline (``echo.c``, built against the same lws).
* ``client``: kosoku serves the cases (fuzzing server) to an echo client: the
  binding's (``binding_peer.py client``) and the C baseline (``echo --client``).
* ``--peers ...,asyncio`` adds the same echoes through :mod:`lws.asyncio`
  (``binding_peer.py --api asyncio``), in the mode the build picks. A run of
  some peers only keeps the others' saved results (``save``).

Sections 12 and 13 (compression) run with permessage-deflate on, for each peer
that can negotiate it; a peer that cannot has those cases reported as "not
run" with the reason. Every case has a time limit: cases run in groups (one
subsection, e.g. ``6.4``); a group that overruns its budget is rerun one case
at a time, the hung case is recorded as TIMEOUT and the peer is restarted.

Writes, per lws version, ``artifacts/conformance/lws-<version>/``: kosoku's
HTML report for each (mode, peer) and ``results.json``; then regenerates
``docs/conformance.md`` from every ``results.json`` found (so running it under
both lws versions gives one document with both). Exit status 0 when the
binding passes every case the C baseline passes, in every mode run.

Run it by path with the interpreter whose ``lws`` you want to test; set
``LWS_PREFIX`` when that ``lws`` was built against a private libwebsockets.
Importable by file path (the tests do): :func:`run_cases`, :func:`select_cases`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import fnmatch
import importlib
import importlib.util
import json
import os
import pathlib
import pkgutil
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import kosoku

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
PEER_SCRIPT = HERE / "binding_peer.py"
DEFAULT_ARTIFACTS = ROOT / "artifacts" / "conformance"
DEFAULT_DOC = ROOT / "docs" / "conformance.md"

DEFLATE_SECTIONS = frozenset({"12", "13"})
PASSING = frozenset({"OK", "NON-STRICT", "INFORMATIONAL"})
STATUSES = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")
# Statuses that are not a kosoku verdict: shown in the "other" column.
OTHER = ("TIMEOUT", "CRASH", "ERROR", "NOT RUN")
MODES = ("server", "client")
PEERS = ("binding", "c")
# "asyncio" (the same echo through lws.asyncio) is run on request (--peers) and
# by the CI subset; the document compares the callback API with C lws.
PEER_TITLES = {"binding": "binding", "c": "C baseline", "asyncio": "binding (asyncio)"}
AGENTS = {"binding": "lws-cffi", "c": "lws-c-echo", "asyncio": "lws-cffi-asyncio"}

SECTION_NAMES = {
    "1": "Framing", "2": "Pings/Pongs", "3": "Reserved Bits", "4": "Opcodes",
    "5": "Fragmentation", "6": "UTF-8 Handling", "7": "Close Handling",
    "9": "Limits/Performance", "10": "Misc", "12": "Compression (payloads)",
    "13": "Compression (parameters)",
}

_NO_CTX_OFFER = (
    "kosoku's server wants to answer with client_no_context_takeover, which it may "
    "only do if the client offered it; lws clients (the binding's and the C "
    "baseline's) offer \"permessage-deflate; client_max_window_bits\", so nothing is "
    "negotiated and the case is unimplemented. A matter of the offer string, not of "
    "lws' deflate.")

# Cases the C baseline fails as well: what lws does there, and why.
LWS_BEHAVIOUR = {
    "2.10": "lws answers a burst of pings with fewer pongs: it keeps one pending ping "
            "payload per connection and the newest one replaces the older ones "
            "(RFC 6455 allows answering only the latest).",
    "2.11": "as 2.10, with the pings sent in small pieces (timing decides how many pongs "
            "come back).",
    # client mode: kosoku's server answers with parameters the offer must allow
    "13.2": _NO_CTX_OFFER,
    "13.5": _NO_CTX_OFFER,
    "13.6": _NO_CTX_OFFER,
}


# -- the cases -----------------------------------------------------------------


def _sort_key(case_id: str) -> list[int]:
    return [int(p) for p in case_id.split(".")]


_ALL: list[str] | None = None


def all_case_ids() -> list[str]:
    """Every case id kosoku knows, in numeric order (read from kosoku's case modules)."""
    global _ALL
    if _ALL is None:
        from kosoku import _caseindex
        from kosoku import cases as case_pkg

        _caseindex.initialize_shims()
        ids: set[str] = set()
        for info in pkgutil.iter_modules(case_pkg.__path__):
            if not info.name.startswith("case") or info.name == "case":
                continue
            module = importlib.import_module(info.name)
            for name, value in vars(module).items():
                if not name.startswith("Case"):
                    continue
                classes = value if isinstance(value, list) else [value]
                for cls in classes:
                    if isinstance(cls, type):
                        cid = cls.__name__.removeprefix("Case").replace("_", ".")
                        if re.fullmatch(r"\d+(\.\d+)+", cid):
                            ids.add(cid)
        if not ids:
            raise RuntimeError("could not read kosoku's case list (its layout changed?)")
        _ALL = sorted(ids, key=_sort_key)
    return list(_ALL)


def select_cases(patterns: Iterable[str] | None = None,
                 exclude: Iterable[str] | None = None) -> list[str]:
    """Case ids matching any of ``patterns`` (kosoku-style globs) and none of ``exclude``."""
    pats = list(patterns or ["*"])
    excl = list(exclude or [])
    return [c for c in all_case_ids()
            if any(fnmatch.fnmatchcase(c, p) for p in pats)
            and not any(fnmatch.fnmatchcase(c, p) for p in excl)]


def section(case_id: str) -> str:
    return case_id.split(".")[0]


def _groups(ids: list[str]) -> list[list[str]]:
    """Consecutive runs of one subsection (``6.4.1``..``6.4.4`` -> one group)."""
    groups: list[list[str]] = []
    for cid in ids:
        key = ".".join(cid.split(".")[:2])
        if groups and ".".join(groups[-1][0].split(".")[:2]) == key:
            groups[-1].append(cid)
        else:
            groups.append([cid])
    return groups


# -- outcomes ------------------------------------------------------------------


@dataclass
class Outcome:
    status: str                       # one of STATUSES or OTHER
    behavior: str = ""
    behavior_close: str = ""
    detail: str = ""
    duration_ms: int = 0

    @property
    def passed(self) -> bool:
        return self.status in PASSING


def _outcome(result: Any) -> Outcome:
    behavior = result.behavior.value
    close = result.behavior_close.value
    if behavior in ("UNIMPLEMENTED", "ERROR"):
        status = behavior
    elif not result.passed:
        status = "FAILED"
    else:
        status = behavior
    detail = result.result
    if close not in ("OK", "INFORMATIONAL"):
        detail += f" Close: {close}: {result.result_close}"
    return Outcome(status, behavior, close, detail.strip(), int(result.duration))


# -- the peers -------------------------------------------------------------------


@dataclass
class Peer:
    """How to start one side under test."""

    name: str                       # "binding", "asyncio" or "c"
    python: str = sys.executable
    echo_binary: pathlib.Path | None = None

    def deflate_unavailable(self) -> str | None:
        if self.name == "c":
            return None  # echo.c always has the extension compiled in (checked at build)
        return _binding_deflate_status(self.python)

    def server_cmd(self, port: int, deflate: bool) -> list[str]:
        if self.name in ("binding", "asyncio"):
            cmd = [self.python, str(PEER_SCRIPT), "server", "--port", str(port),
                   "--api", "asyncio" if self.name == "asyncio" else "callback"]
        else:
            cmd = [str(self._echo()), "--port", str(port)]
        return cmd + (["--deflate"] if deflate else [])

    def client_cmd(self, port: int, deflate: bool, case_timeout: float) -> list[str]:
        limit = str(max(1, int(case_timeout)))
        if self.name in ("binding", "asyncio"):
            cmd = [self.python, str(PEER_SCRIPT), "client",
                   "--api", "asyncio" if self.name == "asyncio" else "callback"]
        else:
            cmd = [str(self._echo()), "--client"]
        cmd += ["--port", str(port), "--agent", AGENTS[self.name], "--case-timeout", limit]
        return cmd + (["--deflate"] if deflate else [])

    def _echo(self) -> pathlib.Path:
        if self.echo_binary is None:
            self.echo_binary = build_c_baseline()
        return self.echo_binary


def _load(name: str, path: pathlib.Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_c_baseline() -> pathlib.Path:
    """Build echo.c against the lws the binding in this interpreter was built against."""
    import lws

    builder = _load("lws_conformance_build_echo", HERE / "build_echo.py")
    path: pathlib.Path = builder.build_echo(expect_version=lws.built_against)
    return path


_DEFLATE_STATUS: dict[str, str | None] = {}


def _binding_deflate_status(python: str) -> str | None:
    if python not in _DEFLATE_STATUS:
        if python == sys.executable:
            peer = _load("lws_conformance_binding_peer", PEER_SCRIPT)
            _DEFLATE_STATUS[python] = peer.deflate_status()
        else:
            out = subprocess.run(
                [python, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                 "import binding_peer; print(binding_peer.deflate_status() or '')", str(HERE)],
                capture_output=True, text=True, timeout=60, check=False)
            _DEFLATE_STATUS[python] = out.stdout.strip() or None
    return _DEFLATE_STATUS[python]


class Process:
    """A peer subprocess with its output in a log file; always ended by stop()."""

    def __init__(self, cmd: list[str], log: pathlib.Path) -> None:
        self.cmd = cmd
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._out = open(log, "ab")
        self._out.write(f"$ {' '.join(cmd)}\n".encode())
        self._out.flush()
        self._start = self._out.tell()
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=HERE)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        with open(self.log, "rb") as f:
            f.seek(self._start)
            return f.read().decode("utf-8", "replace")

    async def port(self, timeout: float = 20.0) -> int:
        """Wait for the "listening on port N" line."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"listening on port (\d+)", self.output())
            if found:
                return int(found.group(1))
            if not self.alive:
                break
            await asyncio.sleep(0.02)
        tail = self.output()[-2000:]
        self.stop()
        raise RuntimeError(f"{self.cmd[0]} did not start listening: {tail}")

    def runaway(self, limit: int = 20 << 20) -> bool:
        """Kill the peer if it logged more than ``limit`` bytes (lws stuck in a loop).

        The log keeps its beginning and its end around a marker line.
        """
        try:
            size = os.path.getsize(self.log) - self._start
        except OSError:
            return False
        if size <= limit or not self.alive:
            return False
        self.proc.kill()
        self.proc.wait(10)
        with open(self.log, "rb") as f:
            f.seek(self._start)
            head = f.read(4096)
            f.seek(-4096, os.SEEK_END)
            tail = f.read()
        with open(self.log, "r+b") as f:
            f.seek(self._start)
            f.write(head + f"\n[runaway: {size >> 20} MiB of output; killed]\n".encode() + tail)
            f.truncate()
        return True

    def stop(self, grace: float = 5.0) -> int | None:
        try:
            if self.alive:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(grace)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        finally:
            self._out.close()
        return self.proc.returncode


# -- running cases -------------------------------------------------------------------


@dataclass
class Run:
    """What one (mode, peer) run produced."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)
    results: list[Any] = field(default_factory=list)    # kosoku CaseResults, for the report
    notes: list[str] = field(default_factory=list)


def _last_words(output: str) -> str:
    """The line of a dead peer's output that says why (an lws assertion), if any."""
    if "[runaway:" in output:
        after = output[output.rindex("[runaway:"):].splitlines()
        lines = [x.strip() for x in after[1:-1]] or [x.strip() for x in after[1:]]
        said = f", it said: {lines[-1][:160]}" if lines else ""
        return f": {after[0].strip('[]')}{said}"
    for line in reversed(output.splitlines()[-20:]):
        if "Assertion" in line or "Segmentation" in line:
            found = re.search(r"(\S+\.c:\d+: .*)$", line)
            return ": " + (found.group(1) if found else line.strip())[:200]
    return ""


def _budget(n: int, case_timeout: float) -> float:
    """Time limit of a group of n cases (a hung case is then rerun alone)."""
    return max(case_timeout, 10.0 + 5.0 * n)


async def _server_mode(peer: Peer, ids: list[str], deflate: bool, case_timeout: float,
                       jobs: int, logdir: pathlib.Path, run: Run) -> None:
    log = logdir / f"server-{peer.name}{'-deflate' if deflate else ''}.log"
    state: dict[str, Any] = {"proc": None, "port": 0}

    async def ensure() -> str:
        crashed()
        if state["proc"] is None:
            proc = Process(peer.server_cmd(state["port"], deflate), log)
            state["proc"] = proc
            state["port"] = await proc.port()
        return f"ws://127.0.0.1:{state['port']}"

    def crashed() -> int | None:
        """The server's exit status if it died (it is then restarted on next use)."""
        proc = state["proc"]
        if proc is not None and not proc.alive:
            state["proc"] = None
            state["last_words"] = _last_words(proc.output())
            return proc.stop()
        return None

    def restart() -> None:
        if state["proc"] is not None:
            state["proc"].stop()
            state["proc"] = None

    async def watchdog() -> None:
        while True:
            await asyncio.sleep(0.5)
            proc = state["proc"]
            if proc is not None and proc.runaway():
                return

    async def attempt(cases: list[str], limit: float) -> list[Any] | None:
        url = await ensure()
        guard = asyncio.ensure_future(watchdog())
        try:
            results = await asyncio.wait_for(
                kosoku.run_fuzzingclient(url, cases, concurrency=jobs), limit)
        except kosoku.FailureError as failure:
            results = failure.results
        except asyncio.TimeoutError:
            return None
        finally:
            guard.cancel()
        return list(results)

    async def one_by_one(cases: list[str]) -> list[Any]:
        """Each case alone, on a live server: a hang or a crash is that case's."""
        results: list[Any] = []
        for cid in cases:
            one = await attempt([cid], case_timeout)
            code = crashed()
            if one is None:
                run.outcomes[cid] = Outcome(
                    "TIMEOUT", detail=f"no verdict within {case_timeout:.0f} s")
                restart()
            elif code is not None:
                run.results += one
                died[cid] = code
                words[cid] = state.get("last_words", "")
            else:
                results += one
        return results

    died: dict[str, int] = {}
    words: dict[str, str] = {}
    try:
        for group in _groups(ids):
            results = await attempt(group, _budget(len(group), case_timeout))
            code = crashed()
            if results is None:
                restart()
                results = await one_by_one(group)
            elif code is not None:
                run.notes.append(
                    f"the {PEER_TITLES[peer.name]} server died (exit status {code}"
                    f"{state.get('last_words', '')}) during {group[0]}..{group[-1]}; its "
                    f"failed cases were rerun one at a time (log: {log.name})")
                bad = [r.case_id for r in results if not _outcome(r).passed]
                results = [r for r in results if _outcome(r).passed] + await one_by_one(bad)
            _record(run, results, group)
            for cid in group:
                if cid in died:
                    why = f"the server died (exit status {died[cid]}{words.get(cid, '')})"
                    run.outcomes[cid] = Outcome("CRASH", detail=why)
    finally:
        restart()


async def _update_reports(port: int, agent: str) -> None:
    """End a fuzzing-server run ourselves (its client was stopped)."""
    from websockets.asyncio.client import connect

    async def once() -> None:
        async with connect(f"ws://127.0.0.1:{port}/updateReports?agent={agent}"):
            pass

    with contextlib.suppress(Exception):
        await asyncio.wait_for(once(), 10)


async def _client_mode(peer: Peer, ids: list[str], deflate: bool, case_timeout: float,
                       logdir: pathlib.Path, run: Run) -> None:
    log = logdir / f"client-{peer.name}{'-deflate' if deflate else ''}.log"

    async def attempt(cases: list[str], limit: float) -> tuple[list[Any], str | None]:
        """Run ``cases``; (kosoku's results, the client's exit status if it crashed)."""
        async with kosoku.run_fuzzingserver(cases, host="127.0.0.1", port=0) as server:
            proc = Process(peer.client_cmd(server.port, deflate, case_timeout), log)
            try:
                deadline = time.monotonic() + limit
                while proc.alive and time.monotonic() < deadline and not proc.runaway():
                    await asyncio.sleep(0.05)
                overran = proc.alive
            finally:
                code = proc.stop()
            said = _last_words(proc.output())
            where = f"{cases[0]}..{cases[-1]}" if len(cases) > 1 else cases[0]
            if overran:
                run.notes.append(f"the {PEER_TITLES[peer.name]} client overran {limit:.0f} s "
                                 f"on {where}; stopped")
            crash = f"exit status {code}{said}" \
                if code is not None and code < 0 and not overran else None
            if crash is not None or (code not in (0, None) and not overran):
                run.notes.append(f"the {PEER_TITLES[peer.name]} client exited with status "
                                 f"{code}{said} on {where} (log: {log.name})")
            await _update_reports(server.port, AGENTS[peer.name])
            try:
                return list(await asyncio.wait_for(server.get_result(), 15)), crash
            except kosoku.FailureError as failure:
                return list(failure.results), crash
            except asyncio.TimeoutError:
                return [], crash

    for group in _groups(ids):
        results, crash = await attempt(group, _budget(len(group), case_timeout) + 10)
        got = {r.case_id for r in results if crash is None or _outcome(r).passed}
        results = [r for r in results if r.case_id in got]
        for cid in group:
            if cid in got:
                continue
            # rerun alone: a hang or a crash is then this case's
            one, crash = await attempt([cid], case_timeout + 15)
            if crash is not None:
                run.results += one
                run.outcomes[cid] = Outcome("CRASH", detail=f"the client died ({crash})")
            elif one:
                results += one
            else:
                run.outcomes[cid] = Outcome(
                    "TIMEOUT", detail=f"no verdict within {case_timeout:.0f} s")
        _record(run, results, group)


def _record(run: Run, results: list[Any], expected: list[str]) -> None:
    for r in results:
        run.outcomes[r.case_id] = _outcome(r)
        run.results.append(r)
    for cid in expected:
        run.outcomes.setdefault(cid, Outcome("ERROR", detail="kosoku returned no result"))


def run_cases(mode: str, peer: Peer | str, ids: list[str], *, case_timeout: float = 30.0,
              jobs: int = 2, logdir: pathlib.Path | None = None,
              compression: bool = True) -> Run:
    """Run ``ids`` in ``mode`` ("server" or "client") against ``peer``; one Run back.

    Compression cases (sections 12, 13) run with permessage-deflate on, or are
    "NOT RUN" (with the reason) when the peer cannot negotiate it or
    ``compression`` is false.
    """
    if isinstance(peer, str):
        peer = Peer(peer)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    run = Run()
    own_logdir = logdir is None
    logs = pathlib.Path(tempfile.mkdtemp(prefix="lws-conformance-")) if own_logdir else logdir
    assert logs is not None
    plain = [c for c in ids if section(c) not in DEFLATE_SECTIONS]
    packed = [c for c in ids if section(c) in DEFLATE_SECTIONS]
    why = None if compression else "compression runs were switched off"
    if packed and why is None:
        why = peer.deflate_unavailable()
    if packed and why is not None:
        for cid in packed:
            run.outcomes[cid] = Outcome("NOT RUN", detail=why)
        run.notes.append(f"compression cases not run: {why}")
        packed = []

    async def main() -> None:
        for cases, deflate in ((plain, False), (packed, True)):
            if not cases:
                continue
            if mode == "server":
                await _server_mode(peer, cases, deflate, case_timeout, jobs, logs, run)
            else:
                await _client_mode(peer, cases, deflate, case_timeout, logs, run)

    asyncio.run(main())
    run.outcomes = dict(sorted(run.outcomes.items(), key=lambda kv: _sort_key(kv[0])))
    return run


def regressions(binding: dict[str, Outcome], baseline: dict[str, Outcome]) -> list[str]:
    """Cases the C baseline passes and the binding does not (NOT RUN excluded)."""
    return [cid for cid, c in baseline.items()
            if c.passed and cid in binding and not binding[cid].passed
            and binding[cid].status != "NOT RUN"]


# -- results on disk, the document -------------------------------------------------------


def _version_tag(version: str) -> str:
    found = re.match(r"\s*(\d+)\.(\d+)(?:\.(\d+))?", version)
    return "lws-" + ".".join(p or "0" for p in found.groups()) if found else "lws-unknown"


def save(path: pathlib.Path, runs: dict[tuple[str, str], Run], meta: dict[str, Any]) -> None:
    """Merge this run's outcomes into ``results.json`` (cases not run keep old results)."""
    data: dict[str, Any] = {}
    if path.exists():
        with contextlib.suppress(ValueError, OSError):
            data = json.loads(path.read_text())
    before = (data.get("date", "?"), data.get("jobs", "?"))
    store = data.setdefault("runs", {})
    partial = bool(store) and all(
        not set(run.outcomes) >= set(store.get(mode, {}).get(peer, {}).get("cases", {}))
        for (mode, peer), run in runs.items())
    # The header describes the last whole run; a partial rerun leaves it (its notes say).
    data.update({k: v for k, v in meta.items() if not partial or k not in data})
    for (mode, peer), run in runs.items():
        entry = store.setdefault(mode, {}).setdefault(peer, {"cases": {}, "notes": []})
        whole = set(run.outcomes) >= set(entry["cases"])
        if not whole:
            # A rerun of some cases says what it replaced, if the verdict moved.
            for cid, o in run.outcomes.items():
                was = entry["cases"].get(cid, {}).get("status")
                if was and was != o.status:
                    run.notes.append(
                        f"{cid}: {was} in the run of {before[0]} ({before[1]} case(s) in "
                        f"parallel); {o.status} when rerun on {meta.get('date')} "
                        f"({meta.get('jobs')} in parallel), which is shown")
        entry["cases"].update({cid: asdict(o) for cid, o in run.outcomes.items()})
        entry["cases"] = dict(sorted(entry["cases"].items(), key=lambda kv: _sort_key(kv[0])))
        # a partial rerun adds its notes; a run of everything replaces them
        old = [] if whole else [n for n in entry.get("notes", []) if n not in run.notes]
        entry["notes"] = old + run.notes
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def _load_results(artifacts: pathlib.Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted(artifacts.glob("lws-*/results.json")):
        with contextlib.suppress(ValueError, OSError):
            found.append(json.loads(path.read_text()))
    found.sort(key=lambda d: _sort_key(re.sub(r"[^\d.]", "", d.get("lws", "0")) or "0"))
    return found


def _counts(cases: dict[str, Any], ids: list[str]) -> list[str]:
    cells = []
    statuses = [cases[c]["status"] for c in ids if c in cases]
    for s in STATUSES:
        n = statuses.count(s)
        cells.append(str(n) if n else "·")
    other = [s for s in statuses if s not in STATUSES]
    missing = len(ids) - len(statuses)
    labels = [f"{other.count(s)} {s.lower()}" for s in OTHER if other.count(s)]
    if missing:
        labels.append(f"{missing} not run")
    cells.append(", ".join(labels) if labels else "·")
    return cells


def render(results: list[dict[str, Any]]) -> str:
    """docs/conformance.md from the saved results of every lws version."""
    out = [
        "# Conformance: the Autobahn TestSuite cases, binding vs C lws",
        "",
        "Generated by `make conformance` (`conformance/run.py`); do not edit by hand.",
        "",
        "[kosoku](https://pypi.org/project/kosoku/) runs the Autobahn TestSuite case "
        "files against peers on the same libwebsockets:",
        "",
        "* **binding**: the binding's echo server, the protocol of `python -m lws echo` "
        "(server mode), and a binding echo client (`conformance/binding_peer.py`, client "
        "mode);",
        "* **binding (asyncio)**, where run: the same echoes written with `lws.asyncio` "
        "(`async for` / `await send`), in the mode the build picks: native on lws built "
        "with external poll (4.3.5 here), the service thread otherwise (4.1.6);",
        "* **C baseline**: `conformance/echo.c`, a plain lws echo server and client written "
        "like lws' `minimal-ws-server-echo` (one `lws_write` per WRITEABLE, rx flow "
        "control, fragments and message types preserved).",
        "",
        "*Server mode*: kosoku is the client and drives the peer's echo server. "
        "*Client mode*: kosoku is the fuzzing server and the peer's echo client runs each "
        "case. Compression sections (12, 13) run with permessage-deflate on; a peer that "
        "cannot negotiate it has them marked *not run* with the reason. Every case has a "
        "time limit. OK, NON-STRICT and INFORMATIONAL count as passing. A case the C "
        "baseline fails too is lws' own behaviour and listed with the reason.",
        "",
        "Reproduce: `make conformance` (both lws versions, the whole suite), or "
        "`python conformance/run.py --cases '1.*' --cases '9.*'` for a selection. kosoku's "
        "HTML reports land in `artifacts/conformance/` (not committed).",
    ]
    if not results:
        out += ["", "No results yet: run `make conformance`.", ""]
        return "\n".join(out)
    for data in results:
        out += ["", f"## libwebsockets {data.get('lws', '?')}", ""]
        out.append(f"Run {data.get('date', '?')} with kosoku {data.get('kosoku', '?')}, "
                   f"lws-cffi {data.get('lws_cffi', '?')}, Python {data.get('python', '?')}, "
                   f"{data.get('case_timeout', '?')} s per case, "
                   f"{data.get('jobs', '?')} case(s) in parallel in server mode.")
        runs = data.get("runs", {})
        for mode in MODES:
            if mode not in runs:
                continue
            peers = [p for p in PEER_TITLES if p in runs[mode]]
            all_ids = sorted({c for p in peers for c in runs[mode][p]["cases"]}, key=_sort_key)
            sections = sorted({section(c) for c in all_ids}, key=int)
            title = ("server mode (kosoku drives the echo server)" if mode == "server"
                     else "client mode (kosoku serves the cases to the echo client)")
            out += ["", f"### lws {data.get('lws', '?')}, {title}", ""]
            head = ["section", "cases"]
            for p in peers:
                t = PEER_TITLES[p]
                head += [f"{t} {s}" for s in STATUSES] + [f"{t} other"]
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + "|".join(["---", "--:"] + ["--:"] * (len(head) - 2)) + "|")
            totals = ["**all**", str(len(all_ids))]
            for sec in sections:
                ids = [c for c in all_ids if section(c) == sec]
                row = [f"{sec} {SECTION_NAMES.get(sec, '')}".strip(), str(len(ids))]
                for p in peers:
                    row += _counts(runs[mode][p]["cases"], ids)
                out.append("| " + " | ".join(row) + " |")
            for p in peers:
                totals += [f"**{c}**" for c in _counts(runs[mode][p]["cases"], all_ids)]
            out.append("| " + " | ".join(totals) + " |")
            out += _failures(runs[mode], peers, all_ids)
            for p in peers:
                for note in runs[mode][p].get("notes", []):
                    out.append(f"* {PEER_TITLES[p]}: {note}")
    out.append("")
    return "\n".join(out)


# Cases only the C baseline fails (by subsection): what its way of echoing meets in lws.
C_ONLY = {
    "13.3": "the C echo writes each received piece back at once as a fragment of the "
            "message; with permessage-deflate (window bits 9 here) lws 4.3.5 then "
            "sends back a message of another length (kosoku: \"Echo'ed message length "
            "differs\"). The binding's echo writes whole messages (in 64 KiB fragments) "
            "and passes.",
}


def _reason(cid: str) -> str | None:
    """What lws does in a case (or its subsection) that the C baseline fails too."""
    return LWS_BEHAVIOUR.get(cid) or LWS_BEHAVIOUR.get(".".join(cid.split(".")[:2]))


def _failures(run: dict[str, Any], peers: list[str], ids: list[str]) -> list[str]:
    def get(p: str, cid: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = run.get(p, {}).get("cases", {}).get(cid)
        return result

    rows: list[tuple[str, tuple[str, ...]]] = []
    for cid in ids:
        found = {p: get(p, cid) for p in peers}
        bad = {p: o for p, o in found.items()
               if o is not None and o["status"] not in PASSING and o["status"] != "NOT RUN"}
        if not bad:
            continue
        b, c = found.get("binding"), found.get("c")
        if c is not None and c["status"] not in PASSING and c["status"] != "NOT RUN" and \
                b is not None and b["status"] in PASSING:
            sub = ".".join(cid.split(".")[:2])
            why = C_ONLY.get(sub) or _reason(cid) or c["detail"] or c["status"]
            kind = "C baseline only"
        elif c is not None and c["status"] not in PASSING and c["status"] != "NOT RUN":
            why = _reason(cid) or (c["detail"] or c["status"])
            kind = "lws' own behaviour (the C baseline too)"
        elif b is not None and c is not None and c["status"] == "NOT RUN":
            why, kind = b["detail"], "binding only (no C result)"
        else:
            why, kind = (b or {}).get("detail", ""), "**binding only**"
        statuses = tuple((found[p] or {}).get("status", "-") for p in peers)
        rows.append((cid, (*statuses, kind, why)))
    if not rows:
        return ["", "No case failed."]
    # Consecutive cases (no case between them) of one subsection with the same
    # outcome: one row.
    place = {cid: i for i, cid in enumerate(ids)}
    merged: list[tuple[str, str, tuple[str, ...]]] = []
    for cid, cells in rows:
        sub = ".".join(cid.split(".")[:2])
        last = merged[-1] if merged else None
        if last is not None and last[2] == cells and place[last[1]] + 1 == place[cid] and \
                ".".join(last[0].split(".")[:2]) == sub:
            merged[-1] = (last[0], cid, cells)
        else:
            merged.append((cid, cid, cells))
    head = ["case"] + [PEER_TITLES[p] for p in peers] + ["whose", "why"]
    lines = ["", "Cases not passed:", "", "| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * len(head)) + "|"]
    for first, last_id, cells in merged:
        label = first if first == last_id else f"{first} to {last_id}"
        lines.append("| " + " | ".join(x.replace("|", "/") for x in (label, *cells)) + " |")
    return [*lines, ""]


# -- the command ----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    import lws

    parser = argparse.ArgumentParser(description="Autobahn cases: binding vs C baseline")
    parser.add_argument("--cases", action="append", default=None,
                        help="case id or glob (repeatable; default: the whole suite)")
    parser.add_argument("--exclude", action="append", default=None)
    parser.add_argument("--modes", default="server,client")
    parser.add_argument("--peers", default="binding,c")
    parser.add_argument("--case-timeout", type=float, default=30.0)
    parser.add_argument("--jobs", type=int, default=2, help="parallel cases (server mode)")
    parser.add_argument("--artifacts", type=pathlib.Path, default=DEFAULT_ARTIFACTS)
    parser.add_argument("--doc", type=pathlib.Path, default=DEFAULT_DOC)
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite the document")
    parser.add_argument("--no-compression", action="store_true",
                        help="report sections 12 and 13 as not run")
    args = parser.parse_args(argv)

    modes = [m for m in args.modes.split(",") if m]
    peers = [p for p in args.peers.split(",") if p]
    if not set(modes) <= set(MODES) or not set(peers) <= set(PEER_TITLES):
        parser.error(f"--modes from {MODES}, --peers from {tuple(PEER_TITLES)}")
    ids = select_cases(args.cases, args.exclude)
    if not ids:
        parser.error("no case matches")
    outdir = args.artifacts / _version_tag(lws.built_against)
    outdir.mkdir(parents=True, exist_ok=True)
    print(f"conformance: {len(ids)} case(s), lws {lws.lws_version}, modes {modes}, "
          f"peers {peers}; artifacts in {outdir}", flush=True)

    shared = {p: Peer(p) for p in peers}
    if "c" in shared:
        shared["c"].echo_binary = build_c_baseline()
    runs: dict[tuple[str, str], Run] = {}
    for mode in modes:
        for p in peers:
            started = time.monotonic()
            run = run_cases(mode, shared[p], ids, case_timeout=args.case_timeout,
                            jobs=args.jobs, logdir=outdir / "logs",
                            compression=not args.no_compression)
            runs[(mode, p)] = run
            summary = {s: 0 for s in STATUSES + OTHER}
            for o in run.outcomes.values():
                summary[o.status] += 1
            shown = ", ".join(f"{v} {k}" for k, v in summary.items() if v)
            print(f"{mode:6} {PEER_TITLES[p]:10} {time.monotonic() - started:6.1f} s: {shown}",
                  flush=True)
            if run.results:
                _write_html(run.results, outdir / f"{mode}-{p}")
    status = 0
    for mode in modes:
        if (mode, "binding") in runs and (mode, "c") in runs:
            worse = _confirm(mode, shared, runs, args.case_timeout, args.jobs, outdir)
            if worse:
                status = 1
                print(f"{mode}: the binding fails what the C baseline passes: {worse}")
    meta = {
        "lws": _version_tag(lws.lws_version).removeprefix("lws-"), "lws_cffi": lws.__version__,
        "kosoku": _dist_version("kosoku"), "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "case_timeout": args.case_timeout, "jobs": args.jobs,
    }
    save(outdir / "results.json", runs, meta)
    if not args.no_doc:
        args.doc.write_text(render(_load_results(args.artifacts)))
        print(f"wrote {args.doc}")

    return status


def _confirm(mode: str, peers: dict[str, Peer], runs: dict[tuple[str, str], Run],
             case_timeout: float, jobs: int, outdir: pathlib.Path) -> list[str]:
    """Rerun (twice at most, both peers) the cases the binding alone failed.

    Some cases depend on timing in lws itself (2.11: a burst of pings); a case
    counts against the binding only if it fails again while C lws passes.
    """
    b_run, c_run = runs[(mode, "binding")], runs[(mode, "c")]
    worse = regressions(b_run.outcomes, c_run.outcomes)
    for _ in range(2):
        if not worse:
            break
        kwargs: dict[str, Any] = {"case_timeout": case_timeout, "jobs": jobs,
                                  "logdir": outdir / "logs"}
        again_b = run_cases(mode, peers["binding"], worse, **kwargs).outcomes
        again_c = run_cases(mode, peers["c"], worse, **kwargs).outcomes
        for cid in worse:
            if again_b[cid].passed or not again_c[cid].passed:
                note = (f"{cid}: the binding failed it while C lws passed; on a rerun the "
                        f"binding got {again_b[cid].status} and C lws {again_c[cid].status} "
                        "(timing-dependent; the rerun is shown)")
                b_run.outcomes[cid], c_run.outcomes[cid] = again_b[cid], again_c[cid]
                b_run.notes.append(note)
        worse = regressions(b_run.outcomes, c_run.outcomes)
    return worse


def _write_html(results: list[Any], outdir: pathlib.Path) -> None:
    try:
        from kosoku._report import write_reports
    except ImportError:
        return
    with contextlib.suppress(Exception):
        write_reports(results, str(outdir))


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
