"""Build the private compiled module ``lws._lws`` (cffi API, out-of-line mode).

libwebsockets is found with pkg-config (through the ``pkgconfig`` package).
``LWS_PREFIX=/path/to/install`` selects another install (it is searched before
the system, and the extension gets an rpath to its library directory);
``PKG_CONFIG_PATH`` works as usual too.

Without libwebsockets or its headers the build stops with one readable
message naming what to install.
"""

from __future__ import annotations

import os
import pathlib
import sys
from typing import NoReturn

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
CDEF_DIR = HERE / "lws" / "_cdef"
# Declarations in the order they depend on each other.
CDEF_FILES = ("types.h", "functions.h", "binding.h")
# The C source of the module, in this order (fastcall.c calls into binding.c).
SOURCE_FILES = ("binding.c", "fastcall.c")

MISSING_LWS = """\
libwebsockets (with its headers and pkg-config file) was not found.
Install it, then build again:
  Debian/Ubuntu:  apt-get install libwebsockets-dev pkg-config
  Fedora:         dnf install libwebsockets-devel pkgconf-pkg-config
  Homebrew:       brew install libwebsockets pkg-config
or point LWS_PREFIX (or PKG_CONFIG_PATH) at another libwebsockets install.
{detail}"""


def _fail(detail: str) -> NoReturn:  # type: ignore[name-defined]
    sys.stderr.write("\nlws-cffi build error: " + MISSING_LWS.format(detail=detail) + "\n")
    raise SystemExit(1)


def _prefix_pkgconfig_dirs(prefix: str) -> list[str]:
    root = pathlib.Path(prefix)
    candidates = [root / "lib" / "pkgconfig", root / "lib64" / "pkgconfig",
                  root / "share" / "pkgconfig", *sorted(root.glob("lib/*-linux-gnu/pkgconfig"))]
    return [str(c) for c in candidates if c.is_dir()]


def find_libwebsockets() -> dict[str, list[str]]:
    """Compiler and linker flags for libwebsockets, or a readable exit."""
    try:
        import pkgconfig
    except ImportError:
        _fail("(the Python package 'pkgconfig' is missing: pip install pkgconfig)")

    prefix = os.environ.get("LWS_PREFIX")
    if prefix:
        dirs = _prefix_pkgconfig_dirs(prefix)
        if not dirs:
            _fail(f"(LWS_PREFIX={prefix} has no lib/pkgconfig/libwebsockets.pc)")
        old = os.environ.get("PKG_CONFIG_PATH")
        os.environ["PKG_CONFIG_PATH"] = os.pathsep.join(dirs + ([old] if old else []))

    try:
        if not pkgconfig.exists("libwebsockets"):
            _fail("(pkg-config does not know 'libwebsockets')")
        flags = pkgconfig.parse("libwebsockets")
        cflags = pkgconfig.cflags("libwebsockets").split()
        version = pkgconfig.modversion("libwebsockets")
    except OSError as exc:  # pkg-config itself is missing
        _fail(f"(pkg-config could not run: {exc})")

    include_dirs = list(flags["include_dirs"])
    header_dirs = [*include_dirs, "/usr/include", "/usr/local/include"]
    if not any((pathlib.Path(d) / "libwebsockets.h").is_file() for d in header_dirs):
        _fail("(libwebsockets.h is not installed: the -dev/-devel package is missing)")

    extra_link: list[str] = []
    if prefix or os.environ.get("PKG_CONFIG_PATH"):
        # A private install: let the extension find its library at run time.
        extra_link += [f"-Wl,-rpath,{d}" for d in flags["library_dirs"]]
    sys.stderr.write(f"lws-cffi: building against libwebsockets {version}\n")
    return {
        "include_dirs": include_dirs,
        "library_dirs": list(flags["library_dirs"]),
        "libraries": list(flags["libraries"]) or ["websockets"],
        "define_macros": list(flags["define_macros"]),
        "extra_compile_args": [f for f in cflags if not f.startswith("-I")],
        "extra_link_args": extra_link,
    }


def make_ffi() -> FFI:
    ffi = FFI()
    ffi.cdef("\n".join((CDEF_DIR / name).read_text() for name in CDEF_FILES))
    flags = find_libwebsockets()
    ffi.set_source(
        "lws._lws",
        "\n".join((CDEF_DIR / name).read_text() for name in SOURCE_FILES),
        include_dirs=flags["include_dirs"],
        library_dirs=flags["library_dirs"],
        libraries=flags["libraries"],
        # The stable ABI as of 3.10 (requires-python), not cffi's default of
        # 3.2: fastcall.c's per-message functions use METH_FASTCALL.
        define_macros=[*flags["define_macros"], ("Py_LIMITED_API", "0x030A0000")],
        extra_compile_args=flags["extra_compile_args"],
        extra_link_args=flags["extra_link_args"],
    )
    return ffi


ffibuilder = make_ffi() if __name__ != "__main__" else None

if __name__ == "__main__":
    make_ffi().compile(tmpdir=str(HERE), verbose=True)
