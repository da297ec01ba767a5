"""Sphinx configuration: the Markdown pages in this folder, read by myst-parser,
and a reference generated from the package's docstrings (autodoc).

Build: ``make docs`` (or ``sphinx-build -W --keep-going -b html docs build/docs``
in an environment where lws-cffi is installed or built in place).
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import lws
except ImportError:  # a source checkout with the extension built in place
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import lws

project = "lws for Python"
author = "the lws-cffi authors"
copyright = "the lws-cffi authors"
release = lws.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "build"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
try:  # lws.pytest_plugin imports pytest; the docs extras alone do not install it
    import pytest  # noqa: F401
except ImportError:
    autodoc_mock_imports = ["pytest"]
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "alabaster"
html_title = f"lws for Python {release}"
html_theme_options = {
    "description": "a cffi binding over the real libwebsockets",
    "fixed_sidebar": True,
    "page_width": "1180px",
}
html_static_path = ["_static"]
html_css_files = ["lws.css"]

# The `lws` page documents the package's own API with :imported-members:.
# There, skip what has a page of its own (exceptions, reasons, session types),
# the ~200 reason aliases (lws.RECEIVE, lws.LWS_CALLBACK_RECEIVE), the
# submodules, and the version strings, which the page describes by hand.
_OWN_PAGES = ("lws.errors", "lws.reasons", "lws.session")
_BY_HAND = {"__version__", "lws_version", "built_against", "features"}


def _imports(options: object) -> bool:
    """Whether the automodule directive has :imported-members: (Sphinx 7 to 9)."""
    if getattr(options, "imported_members", None):
        return True
    getter = getattr(options, "get", None)
    return bool(getter("imported-members")) if callable(getter) else False


def _skip_member(app: object, what: str, name: str, obj: object, skip: bool,
                 options: object) -> bool | None:
    if what != "module" or not _imports(options):
        return None
    if isinstance(obj, lws.Reason) or name in _BY_HAND or type(obj) is type(lws):
        return True
    if getattr(obj, "__module__", "") in _OWN_PAGES:
        return True
    return None


# Objects the binding makes (never the user): their constructor's arguments
# are internal, so the reference shows no signature for them.
_MADE_BY_THE_BINDING = {"lws.Connection", "lws.HeaderWriter", "lws.TimerHandle", "lws.Vhost",
                        "lws.testing.Client"}


def _signature(app: object, what: str, name: str, obj: object, options: object,
               signature: str | None, return_annotation: str | None
               ) -> tuple[str | None, str | None] | None:
    if what == "class" and name in _MADE_BY_THE_BINDING:
        return "", return_annotation
    if signature and "_" in signature:
        # Drop private keyword parameters ("_poll_hook=None", "_wsi=None").
        kept = [p for p in _split_parameters(signature[1:-1])
                if not p.strip().lstrip("*").startswith("_")]
        return f"({', '.join(p.strip() for p in kept)})", return_annotation
    return None


def _split_parameters(text: str) -> list[str]:
    """Split a parameter list on the commas that are not inside brackets or quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p.strip()]


def setup(app: object) -> None:
    app.connect("autodoc-skip-member", _skip_member)  # type: ignore[attr-defined]
    app.connect("autodoc-process-signature", _signature)  # type: ignore[attr-defined]
