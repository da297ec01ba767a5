"""The chat demo in a real browser: headless Chromium, two tabs, one room.

``python -m lws demo --port 0`` runs as a subprocess; Debian's ``chromium``
is driven through ``chromedriver`` by the W3C WebDriver protocol, spoken here
directly (JSON over HTTP with urllib: no selenium). Both tabs pick a nick,
both chat, and each must show both messages and 2 people online; then the
demo gets SIGINT and both pages must report the server's 1001.

Screenshots go to ``artifacts/`` at the repository root (git-ignored).
Chromium missing is a failure, not a skip: ``make test`` installs it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C web element key
ENTER = "\ue007"
BUDGET = 50.0  # seconds for the whole test, start-up and clean-up included

T = TypeVar("T")

# What a tab shows, read in one go.
READ_PAGE = """
const all = (sel) => Array.from(document.querySelectorAll(sel));
return {
  state: document.body.dataset.state || "",
  status: document.getElementById("status").textContent,
  count: document.getElementById("online-count").textContent,
  online: all("#online li").map((li) => li.textContent),
  me: all("#online li.me").map((li) => li.textContent),
  messages: all("#log li.message").map(
    (li) => [li.querySelector(".nick").textContent, li.querySelector(".text").textContent]),
  errors: all("#log li.error").map((li) => li.textContent),
  images: document.querySelectorAll("#log img").length,
};
"""


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self, cap: float = 60.0) -> float:
        return max(0.1, min(cap, self.end - time.monotonic()))

    def expired(self) -> bool:
        return time.monotonic() >= self.end


class WebDriver:
    """The few W3C WebDriver commands this test needs, over urllib."""

    def __init__(self, base: str, deadline: Deadline) -> None:
        self.base = base
        self.deadline = deadline
        self.session: str | None = None

    def call(self, method: str, path: str, body: Any = None, cap: float = 20.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.deadline.left(cap)) as resp:
                answer = json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise AssertionError(f"WebDriver {method} {path}: {exc.code} {detail}") from None
        return answer.get("value")

    def s(self, method: str, path: str, body: Any = None) -> Any:
        assert self.session is not None
        return self.call(method, f"/session/{self.session}{path}", body)

    def start(self, user_data_dir: Path) -> None:
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={user_data_dir}",
                "--window-size=1100,720", "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows"]
        caps = {"browserName": "chrome", "pageLoadStrategy": "normal",
                "timeouts": {"pageLoad": 15000, "script": 10000, "implicit": 0},
                "goog:chromeOptions": {"binary": CHROMIUM, "args": args}}
        value = self.call("POST", "/session", {"capabilities": {"alwaysMatch": caps}}, cap=30)
        self.session = value["sessionId"]

    def quit(self) -> None:
        if self.session is not None:
            try:
                self.call("DELETE", f"/session/{self.session}", cap=10)
            except Exception:
                pass
            self.session = None

    # -- windows and pages ------------------------------------------------

    def window(self) -> str:
        return str(self.s("GET", "/window"))

    def new_tab(self) -> str:
        return str(self.s("POST", "/window/new", {"type": "tab"})["handle"])

    def switch(self, handle: str) -> None:
        self.s("POST", "/window", {"handle": handle})

    def get(self, url: str) -> None:
        self.s("POST", "/url", {"url": url})

    def script(self, source: str, *args: Any) -> Any:
        return self.s("POST", "/execute/sync", {"script": source, "args": list(args)})

    def find(self, css: str) -> str:
        return str(self.s("POST", "/element", {"using": "css selector", "value": css})[ELEMENT])

    def clear(self, element: str) -> None:
        self.s("POST", f"/element/{element}/clear", {})

    def type(self, element: str, text: str) -> None:
        self.s("POST", f"/element/{element}/value", {"text": text})

    def click(self, element: str) -> None:
        self.s("POST", f"/element/{element}/click", {})

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.s("GET", "/screenshot")))


def _wait_for_line(path: Path, pattern: str, proc: subprocess.Popen[bytes],
                   deadline: Deadline, cap: float) -> re.Match[str]:
    """Poll a process's log file for a line matching ``pattern``."""
    end = time.monotonic() + deadline.left(cap)
    while time.monotonic() < end:
        match = re.search(pattern, path.read_text(errors="replace"))
        if match:
            return match
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"no {pattern!r} from {proc.args!r} (exit {proc.poll()}):\n"
                         + path.read_text(errors="replace")[-2000:])


def _until(what: str, probe: Callable[[], T], ok: Callable[[T], bool], deadline: Deadline,
           cap: float = 15.0) -> T:
    end = time.monotonic() + deadline.left(cap)
    value = probe()
    while not ok(value):
        if time.monotonic() >= end:
            raise AssertionError(f"timed out waiting for {what}; last seen: {value!r}")
        time.sleep(0.1)
        value = probe()
    return value


def _shows_me(nick: str) -> Callable[[dict[str, Any]], bool]:
    return lambda page: bool(page["me"] == [nick])


def _stop(proc: subprocess.Popen[bytes], group: bool = False) -> None:
    """End a process this test started (its own process group for chromedriver)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
    if group:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # chromium children left behind, if any
        except (ProcessLookupError, PermissionError):
            pass
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "lws", "demo", "--port", "0"],
                                stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        match = _wait_for_line(log, r"on (http://\S+/) ", proc, Deadline(20), 20)
        yield match.group(1), proc, log
    finally:
        _stop(proc)


@pytest.mark.timeout(60)
def test_two_tabs_chat_in_headless_chromium(
        demo: tuple[str, subprocess.Popen[bytes], Path], tmp_path: Path) -> None:
    url, server, server_log = demo
    deadline = Deadline(BUDGET)
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not os.access(tool, os.X_OK):
            pytest.fail(f"{tool} is missing: apt-get install chromium chromium-driver "
                        "(make test installs them)")

    driver_log = tmp_path / "chromedriver.log"
    with driver_log.open("wb") as out:
        chromedriver = subprocess.Popen([CHROMEDRIVER, "--port=0"], stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
    wd: WebDriver | None = None
    try:
        port = _wait_for_line(driver_log, r"started successfully on port (\d+)", chromedriver,
                              deadline, 15).group(1)
        wd = WebDriver(f"http://127.0.0.1:{port}", deadline)
        wd.start(tmp_path / "profile")

        def page() -> dict[str, Any]:
            return dict(wd.script(READ_PAGE))

        # Two tabs on the page, each connected.
        tabs = {"alice": wd.window()}
        wd.get(url)
        _until("tab 1 to connect", page, lambda p: p["state"] == "open", deadline)
        tabs["bob"] = wd.new_tab()
        wd.switch(tabs["bob"])
        wd.get(url)
        _until("tab 2 to connect", page, lambda p: p["state"] == "open", deadline)

        # Each picks a nick the way a person would: clear the box, type, press the button.
        for nick, handle in tabs.items():
            wd.switch(handle)
            box = wd.find("#nick")
            wd.clear(box)
            wd.type(box, nick)
            wd.click(wd.find("#set-nick"))
            _until(f"{nick}'s nick to take", page, _shows_me(nick), deadline)

        said = {"alice": "hello from alice <b>not bold</b>", "bob": "hi alice, bob here"}
        wd.switch(tabs["alice"])
        wd.type(wd.find("#text"), said["alice"] + ENTER)  # Enter submits
        wd.switch(tabs["bob"])
        wd.type(wd.find("#text"), said["bob"])
        wd.click(wd.find("#send"))

        expected = [["alice", said["alice"]], ["bob", said["bob"]]]
        for nick, handle in tabs.items():
            wd.switch(handle)
            seen = _until(f"{nick}'s tab to show both messages and 2 online", page,
                          lambda p: p["messages"] == expected and p["count"] == "2",
                          deadline)
            assert seen["online"] == ["alice", "bob"]
            assert seen["me"] == [nick]
            assert seen["errors"] == []
            assert seen["images"] == 0  # the markup was shown as text
            wd.screenshot(ARTIFACTS / f"browser-chat-{nick}.png")
        assert (ARTIFACTS / "browser-chat-alice.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # Ctrl-C on the server: both pages hear 1001.
        server.send_signal(signal.SIGINT)
        assert server.wait(deadline.left(10)) == 0, server_log.read_text()
        for nick, handle in tabs.items():
            wd.switch(handle)
            seen = _until(f"{nick}'s tab to see the close", page,
                          lambda p: p["state"] == "closed", deadline)
            assert "1001" in seen["status"], seen
        wd.screenshot(ARTIFACTS / "browser-chat-closed.png")
        log = server_log.read_text()
        assert "alice left after 1 message" in log and "bob left after 1 message" in log, log
    except BaseException:
        if wd is not None and wd.session is not None:
            try:  # what the current tab showed, to see why
                wd.screenshot(ARTIFACTS / "browser-chat-failure.png")
            except Exception:
                pass
        raise
    finally:
        if wd is not None:
            wd.quit()
        _stop(chromedriver, group=True)
