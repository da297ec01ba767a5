"""Print one closing line for the test runs on both lws versions.

Reads the logs of ``make test-435`` and ``make test-416`` and sums pytest's
summary lines; a run with no summary line (it crashed) counts as one failure.
"""

from __future__ import annotations

import re
import sys

KINDS = ("passed", "failed", "errors", "error", "skipped", "xfailed", "xpassed")


def summary(path: str) -> dict[str, int] | None:
    try:
        lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        found = re.findall(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)", line)
        if found and re.search(r" in [\d.]+s", line):
            counts = dict.fromkeys(KINDS, 0)
            for num, kind in found:
                counts[kind] += int(num)
            return counts
    return None


def main(paths: list[str]) -> int:
    total = dict.fromkeys(KINDS, 0)
    for path in paths:
        counts = summary(path)
        label = path.removeprefix(".test-").removesuffix(".log")
        if counts is None:
            print(f"lws {label}: no pytest summary (the run did not finish)")
            total["failed"] += 1
            continue
        print(f"lws {label}: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
        for k, v in counts.items():
            total[k] += v
    failed = total["failed"] + total["errors"] + total["error"]
    line = f"{total['passed']} passed, {failed} failed"
    if total["skipped"]:
        line += f", {total['skipped']} skipped"
    print("total: " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
