"""The documentation's promises that can be checked without building it.

(The Sphinx build itself, with warnings as errors, is ``make docs``.)
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import lws

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FUNCTIONS_H = ROOT / "lws" / "_cdef" / "functions.h"


def _bound_functions() -> list[str]:
    text = re.sub(r"/\*.*?\*/", "", FUNCTIONS_H.read_text(), flags=re.S)
    return sorted(set(re.findall(r"\b(lws_[a-z0-9_]+)\s*\(", text)))


def test_porting_guide_lists_every_bound_function() -> None:
    porting = (DOCS / "porting.md").read_text()
    functions = _bound_functions()
    assert len(functions) > 30
    missing = [f for f in functions if f"`{f}(" not in porting]
    assert not missing, f"docs/porting.md does not cover: {missing}"


def test_porting_guide_lists_every_reason_with_its_handler() -> None:
    porting = (DOCS / "porting.md").read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(
        r"^\| `LWS_CALLBACK_([A-Z0-9_]+)` \((\d+)\) \|", porting, flags=re.M)}
    for reason in lws.Reason:
        assert rows.get(reason.name) == str(int(reason)), f"{reason.name} is missing or wrong"
        assert f"`on_{reason.name.lower()}(" in porting
    assert set(rows) == {r.name for r in lws.Reason}


def _python_blocks() -> list[tuple[str, int, str]]:
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text()
        for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
            line = text.count("\n", 0, m.start()) + 2
            found.append((str(page.relative_to(DOCS)), line, m.group(1)))
    return found


@pytest.mark.parametrize("page, line, code", _python_blocks(),
                         ids=[f"{p}:{n}" for p, n, _ in _python_blocks()])
def test_python_examples_in_the_docs_parse(page: str, line: int, code: str) -> None:
    if code.lstrip().startswith(">>>"):
        return
    ast.parse(code, filename=f"docs/{page}:{line}")


def test_every_page_is_in_a_toctree() -> None:
    pages = {str(p.relative_to(DOCS).with_suffix("")) for p in DOCS.rglob("*.md")}
    listed = {"index"}
    for page in DOCS.rglob("*.md"):
        text = page.read_text()
        for block in re.findall(r"```\{toctree\}\n(.*?)```", text, flags=re.S):
            for entry in block.splitlines():
                entry = entry.strip()
                if entry and not entry.startswith(":"):
                    base = page.parent.relative_to(DOCS)
                    listed.add(entry if str(base) == "." else str(base / entry))
    assert pages <= listed, f"pages in no toctree: {sorted(pages - listed)}"


def test_docs_target_builds_with_warnings_as_errors() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^docs:", makefile, flags=re.M)
    assert re.search(r"(sphinx-build|-m sphinx) -W --keep-going -b html docs build/docs", makefile)
