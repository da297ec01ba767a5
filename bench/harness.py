"""Shared pieces of the benchmark harness: builds, runtimes, running the load client.

Used by run.py and guard.py (both put bench/ on sys.path).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
from typing import Any

from servers import Runtime, raise_nofile

BENCH = pathlib.Path(__file__).resolve().parent
ROOT = BENCH.parent
BUILD = ROOT / "build" / "bench"
CLIENT_SRC = BENCH / "loadclient.c"
CLIENT_BIN = BUILD / "loadclient"
SERVER_CORE = 0
CLIENT_CORE = 1


class HarnessError(RuntimeError):
    pass


def build_client(force: bool = False) -> pathlib.Path:
    """Compile loadclient.c (OpenSSL's libcrypto for SHA-1) when it is newer."""
    if (not force and CLIENT_BIN.exists()
            and CLIENT_BIN.stat().st_mtime >= CLIENT_SRC.stat().st_mtime):
        return CLIENT_BIN
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise HarnessError("no C compiler (Debian: apt-get install gcc)")
    BUILD.mkdir(parents=True, exist_ok=True)
    tmp = BUILD / f".loadclient-{os.getpid()}"
    cmd = [cc, "-O2", "-g", "-Wall", "-Wextra", "-o", str(tmp), str(CLIENT_SRC), "-lcrypto"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HarnessError(f"building the load client failed (needs libssl-dev):\n"
                           f"$ {' '.join(cmd)}\n{proc.stderr}")
    os.replace(tmp, CLIENT_BIN)
    return CLIENT_BIN


def build_echo(lws_prefix: str | None) -> str:
    """The C lws echo (conformance/build_echo.py) for the system lws or ``lws_prefix``."""
    env = dict(os.environ)
    env.pop("LWS_PREFIX", None)
    if lws_prefix:
        env["LWS_PREFIX"] = lws_prefix
    proc = subprocess.run([sys.executable, str(ROOT / "conformance" / "build_echo.py")],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise HarnessError(f"building conformance/echo.c failed: {proc.stderr.strip()}")
    return proc.stdout.strip().splitlines()[-1]


def probe(python: str, env: dict[str, str], cwd: str) -> dict[str, Any]:
    """What a Python sees: lws-cffi and lws versions, the peers' versions."""
    code = (
        "import json, sys, platform\n"
        "out = {'python': platform.python_version()}\n"
        "import lws\n"
        "out.update(lws_cffi=lws.__version__, lws=lws.lws_version,\n"
        "           external_poll=lws.features['external_poll'], lws_file=lws.__file__)\n"
        "for name in ('picows', 'websockets', 'aiohttp', 'uvloop'):\n"
        "    try:\n"
        "        mod = __import__(name)\n"
        "        out[name] = getattr(mod, '__version__', '?')\n"
        "    except Exception:\n"
        "        out[name] = None\n"
        "print(json.dumps(out))\n")
    full = dict(os.environ)
    full.update(env)
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, env=full,
                          cwd=cwd, check=False)
    if proc.returncode != 0:
        raise HarnessError(f"{python} cannot import lws: {proc.stderr.strip()[-400:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def source_runtime(python: str | None = None) -> Runtime:
    """The binding from this source tree (lws/_lws*.so built in place, or the
    editable install of .venv), with the C echo of the system lws."""
    py = python or sys.executable
    env = {"PYTHONPATH": str(ROOT)}
    info = probe(py, env, "/")
    prefix = os.environ.get("LWS_PREFIX") if not info["lws"].startswith(_system_lws()) \
        else None
    return Runtime(_short(info["lws"]), py, build_echo(prefix), env, "/", info)


def installed_runtime(python: str, lws_prefix: str) -> Runtime:
    """A venv with the package installed (not the source tree) against ``lws_prefix``."""
    info = probe(python, {}, "/")
    return Runtime(_short(info["lws"]), python, build_echo(lws_prefix), {}, "/", info)


def _short(version: str) -> str:
    return version.split("-")[0]


def _system_lws() -> str:
    proc = subprocess.run(["pkg-config", "--modversion", "libwebsockets"], capture_output=True,
                          text=True, check=False)
    return proc.stdout.strip() or "?"


def run_client(port: int, server_pid: int | None = None, *, mode: str = "echo",
               conns: int = 1, inflight: int = 1, size: int = 256, warmup: float = 0.5,
               duration: float = 2.0, parallel: int = 8,
               timeout: float | None = None) -> dict[str, Any]:
    """One load-client run pinned to the client core; its JSON result."""
    cmd = ["taskset", "-c", str(CLIENT_CORE), str(CLIENT_BIN), "--port", str(port),
           "--mode", mode, "--conns", str(conns), "--inflight", str(inflight),
           "--size", str(size), "--warmup", str(warmup), "--duration", str(duration),
           "--parallel", str(parallel)]
    if server_pid:
        cmd += ["--server-pid", str(server_pid)]
    limit = timeout or (warmup + duration + 30)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, check=False,
                          preexec_fn=raise_nofile)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise HarnessError(f"load client failed ({proc.returncode}): {proc.stderr.strip()}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["exit"] = proc.returncode
    return result
