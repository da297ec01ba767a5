"""The build and import checks: readable errors instead of tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import lws
from lws import _binding

ROOT = Path(__file__).resolve().parent.parent


def test_missing_libwebsockets_is_one_readable_message(tmp_path: Path) -> None:
    env = {**os.environ, "PKG_CONFIG_LIBDIR": str(tmp_path), "PKG_CONFIG_PATH": str(tmp_path)}
    env.pop("LWS_PREFIX", None)
    proc = subprocess.run([sys.executable, str(ROOT / "build_lws.py")], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    assert "libwebsockets-dev" in proc.stderr and "libwebsockets-devel" in proc.stderr
    assert "Traceback" not in proc.stderr and "gcc" not in proc.stderr


def test_bad_lws_prefix_is_named(tmp_path: Path) -> None:
    env = {**os.environ, "LWS_PREFIX": str(tmp_path / "nowhere")}
    proc = subprocess.run([sys.executable, str(ROOT / "build_lws.py")], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    assert "LWS_PREFIX" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("text", "expected"), [
    ("4.1.6-", (4, 1, 6)), ("4.3.5-unknown", (4, 3, 5)), ("4.3.5", (4, 3, 5)),
    ("4.3.5-v4.3.5-12-gabcdef", (4, 3, 5)),
])
def test_version_strings_parse(text: str, expected: tuple[int, ...]) -> None:
    assert _binding._major_minor_patch(text) == expected


def test_runtime_matches_build() -> None:
    assert _binding._major_minor_patch(lws.built_against) == lws.version_tuple()


def test_sources_ship_in_the_sdist_manifest() -> None:
    manifest = (ROOT / "MANIFEST.in").read_text()
    assert "lws/_cdef" in manifest and "build_lws.py" in manifest
    for name in ("types.h", "functions.h", "binding.h", "binding.c", "fastcall.c"):
        assert (ROOT / "lws" / "_cdef" / name).is_file()
