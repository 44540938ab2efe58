"""A real headless Chromium (the OS package, which .ci/run installs) driven over the DevTools protocol on a pipe
(`--remote-debugging-pipe`: it reads commands on fd 3 and writes answers on fd 4, as NUL-terminated JSON): no
websocket client and no browser download needed.

    with Browser(tmp_path) as browser:
        browser.open("file:///.../index.html")
        browser.evaluate("document.title")
        browser.click(x, y)
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

DEADLINE = 60.0  # seconds an answer may take on a busy machine before the test gives up (a guard, not a measure)


def chromium() -> str:
    """The Chromium of the OS packages; the dev setup installs it (`.ci/run`: apt-get install chromium)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Chromium is not installed: `apt-get install -y chromium` (as .ci/run does)"
    return found


class Browser:
    def __init__(self, profile: Path) -> None:
        self.profile = profile
        self.next_id = 0
        self.buffer = b""
        self.session: str | None = None

    def __enter__(self) -> Browser:
        commands_read, self._commands = os.pipe()
        self._answers, answers_write = os.pipe()

        def wire() -> None:  # in the child: the pipe ends on the descriptors Chromium expects
            os.dup2(commands_read, 3)
            os.dup2(answers_write, 4)

        self.proc = subprocess.Popen(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--mute-audio",
             "--remote-debugging-pipe", f"--user-data-dir={self.profile}", "--window-size=1280,900", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=False,
            preexec_fn=wire,
        )
        os.close(commands_read)
        os.close(answers_write)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        with contextlib.suppress(OSError, AssertionError):  # it may be gone already
            self.send("Browser.close", session=False)
        try:
            self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._commands)
        os.close(self._answers)

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True) -> dict[str, Any]:
        """One protocol command; its result (events that arrive meanwhile are skipped)."""
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session is not None:
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + DEADLINE
        while True:
            while b"\0" not in self.buffer:
                left = deadline - time.monotonic()
                assert left > 0 and select.select([self._answers], [], [], left)[0], f"no answer to {method}"
                chunk = os.read(self._answers, 1 << 16)
                assert chunk, f"Chromium went away during {method}"
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self.next_id:
                assert "error" not in answer, f"{method}: {answer['error']}"
                result: dict[str, Any] = answer["result"]
                return result

    def open(self, url: str) -> None:
        """A new tab on ``url``, once its document is loaded."""
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        self.send("Page.navigate", {"url": url})
        self.wait_for("location.href !== 'about:blank' && document.readyState === 'complete'")

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, condition: str) -> None:
        """Until the JavaScript ``condition`` holds (the page's scripts run on their own time)."""
        deadline = time.monotonic() + DEADLINE
        while not self.evaluate(condition):
            assert time.monotonic() < deadline, f"never true: {condition}"
            self.send("Runtime.evaluate", {"expression": "new Promise(r => requestAnimationFrame(r))",
                                           "awaitPromise": True})

    def click(self, x: float, y: float) -> None:
        """A real left click at the viewport's (x, y): pressed, then released."""
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})
