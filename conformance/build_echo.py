"""Build the C baseline ``conformance/echo.c`` against the lws the binding uses.

    python3 conformance/build_echo.py [--out DIR] [--force]

prints the path of the binary. libwebsockets is found with pkg-config:
``LWS_PREFIX`` (the same variable the binding's build reads) selects a private
install, otherwise the system one is used. The binary goes to
``build/conformance/lws-<version>/echo`` (``/build/`` is git-ignored), one per
lws version, so the 4.1.6 and 4.3.5 test runs never share a binary. It is
rebuilt when ``echo.c`` is newer.

Importable too (by file path, so that the repository root never lands on
``sys.path``): :func:`build_echo` and :func:`lws_modversion`.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
SOURCE = HERE / "echo.c"
DEFAULT_OUT = ROOT / "build" / "conformance"


class BuildFailed(RuntimeError):
    """The C baseline could not be built (message says why)."""


def _pkg_env() -> dict[str, str]:
    env = dict(os.environ)
    prefix = env.get("LWS_PREFIX")
    if prefix:
        root = pathlib.Path(prefix)
        dirs = [d for d in (root / "lib" / "pkgconfig", root / "lib64" / "pkgconfig",
                            *sorted(root.glob("lib/*-linux-gnu/pkgconfig"))) if d.is_dir()]
        if not dirs:
            raise BuildFailed(f"LWS_PREFIX={prefix} has no lib/pkgconfig/libwebsockets.pc")
        old = env.get("PKG_CONFIG_PATH")
        env["PKG_CONFIG_PATH"] = os.pathsep.join([str(d) for d in dirs] + ([old] if old else []))
    return env


def _pkg_config(*args: str) -> str:
    if shutil.which("pkg-config") is None:
        raise BuildFailed("pkg-config is not installed (Debian: apt-get install pkg-config)")
    proc = subprocess.run(["pkg-config", *args, "libwebsockets"], capture_output=True,
                          text=True, env=_pkg_env(), check=False)
    if proc.returncode != 0:
        raise BuildFailed(f"pkg-config {' '.join(args)} libwebsockets failed: "
                          f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def _mmp(version: str) -> tuple[int, ...]:
    found = re.match(r"\s*(\d+)\.(\d+)(?:\.(\d+))?", version)
    return tuple(int(p or 0) for p in found.groups()) if found else (0, 0, 0)


def lws_modversion() -> str:
    """The libwebsockets version pkg-config finds (with LWS_PREFIX honoured)."""
    return _pkg_config("--modversion")


def build_echo(out: pathlib.Path | None = None, force: bool = False,
               expect_version: str | None = None) -> pathlib.Path:
    """Compile echo.c (if needed) and return the binary's path.

    ``expect_version``: the lws version the binding was built against
    (``lws.built_against``); a different pkg-config version is an error, so
    the baseline never runs on another lws than the binding.
    """
    version = lws_modversion()
    if expect_version is not None and _mmp(version) != _mmp(expect_version):
        raise BuildFailed(
            f"pkg-config finds libwebsockets {version} but the binding was built against "
            f"{expect_version}; set LWS_PREFIX to the install the binding uses")
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise BuildFailed("no C compiler (Debian: apt-get install gcc)")
    tag = "lws-" + ".".join(str(p) for p in _mmp(version))
    outdir = (out or DEFAULT_OUT) / tag
    binary = outdir / "echo"
    if (not force and binary.exists()
            and binary.stat().st_mtime >= SOURCE.stat().st_mtime):
        return binary
    cflags = _pkg_config("--cflags").split()
    libs = _pkg_config("--libs").split()
    rpath = []
    if os.environ.get("LWS_PREFIX"):
        libdir = _pkg_config("--variable=libdir")
        rpath = [f"-Wl,-rpath,{libdir}"]
    outdir.mkdir(parents=True, exist_ok=True)
    # Build to a temporary name, then rename: concurrent builds never see half a file.
    fd, tmp = tempfile.mkstemp(prefix=".echo-", dir=outdir)
    os.close(fd)
    cmd = [cc, "-O2", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter", "-o", tmp,
           str(SOURCE), *cflags, *libs, *rpath]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        os.unlink(tmp)
        raise BuildFailed(f"compiling echo.c failed:\n$ {' '.join(cmd)}\n{proc.stderr}")
    os.chmod(tmp, 0o755)
    os.replace(tmp, binary)
    return binary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help=f"output root (default {DEFAULT_OUT})")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument("--expect-version", default=None,
                        help="fail unless pkg-config finds this lws version")
    args = parser.parse_args(argv)
    try:
        print(build_echo(args.out, args.force, args.expect_version))
    except BuildFailed as exc:
        print(f"build_echo: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
