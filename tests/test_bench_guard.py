"""The benchmark guard in CI: the binding's CPU per message against C lws, as a ratio.

bench/guard.py measures C lws' echo (conformance/echo.c, built against the
same lws as the binding under test) and ``python -m lws echo``, pinned to
separate cores, 16 messages of 256 B in flight, in alternating pairs, and
judges messages per server CPU-second of the binding over C lws' within each
pair: never a wall-clock rate. The floor is in bench/guard.py (see
bench/README.md for how it was chosen).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_binding_stays_above_the_floor_ratio_to_c_lws() -> None:
    # The Python running the tests is the binding under test (its lws is the
    # one LWS_PREFIX names, or the system's).
    cmd = [sys.executable, str(ROOT / "bench" / "guard.py"), "--python", sys.executable,
           "--json"]
    if os.environ.get("LWS_PREFIX"):
        cmd += ["--lws-prefix", os.environ["LWS_PREFIX"]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 2, f"the guard could not run:\n{proc.stdout}\n{proc.stderr}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ratio"] >= result["floor"], result
    assert proc.returncode == 0, proc.stdout + proc.stderr
