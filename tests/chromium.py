"""Open a page in headless Chromium (Debian's ``chromium``) and look at it as a browser does,
with the standard library only: the DevTools protocol over ``--remote-debugging-pipe``
(JSON messages ending in a NUL byte; the browser reads fd 3 and writes fd 4).

``look(page, png)`` loads the page, waits for its load event, collects console errors and
uncaught exceptions, evaluates an expression and saves a full-page screenshot.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


class DevTools:
    def __init__(self, exe: str, profile: str) -> None:
        to_browser_r, self._w = os.pipe()
        self._r, from_browser_w = os.pipe()
        args = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "about:blank"]
        # bash puts the pipes on fds 3 and 4, where the browser expects them (dash takes one-digit fds only)
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{to_browser_r} 4>&{from_browser_w}', "bash", *args],
            pass_fds=(to_browser_r, from_browser_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(os.environ.get("PYULOGD_CHROMIUM_LOG", os.devnull), "ab"))
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 30) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        want = self._id
        end = time.monotonic() + timeout
        while True:
            m = self._next(end)
            if m.get("id") == want:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                result: dict[str, Any] = m.get("result", {})
                return result
            self.events.append(m)

    def wait_event(self, method: str, timeout: float = 30) -> dict[str, Any]:
        for i, m in enumerate(self.events):
            if m.get("method") == method:
                return self.events.pop(i)
        end = time.monotonic() + timeout
        while True:
            m = self._next(end)
            if m.get("method") == method:
                return m
            self.events.append(m)

    def _next(self, end: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("the browser did not answer in time")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("the browser went away")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        data: dict[str, Any] = json.loads(raw)
        return data

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._r)
        os.close(self._w)


def look(page: Path, png: Path, expression: str, width: int = 1280, full: bool = True) -> dict[str, Any]:
    """Load ``page``; return ``{"value": <expression's value>, "errors": [...]}`` and write the
    screenshot to ``png``."""
    exe = browser()
    assert exe is not None, "no chromium"
    with tempfile.TemporaryDirectory(prefix="pyulogd-chromium-") as profile:
        dt = DevTools(exe, profile)
        try:
            target = dt.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = dt.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                dt.send(f"{domain}.enable", session=session)
            dt.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": 900, "deviceScaleFactor": 1,
                                                           "mobile": False}, session=session)
            dt.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
            dt.wait_event("Page.loadEventFired")
            value = dt.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                            session=session)["result"].get("value")
            shot = dt.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": full},
                           session=session)
            png.write_bytes(base64.b64decode(shot["data"]))
            errors = []
            for m in dt.events:
                p = m.get("params", {})
                if m.get("method") == "Runtime.exceptionThrown":
                    errors.append(str(p.get("exceptionDetails", {}).get("text")))
                elif m.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                    errors.append(json.dumps(p.get("args")))
                elif m.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                    errors.append(str(p["entry"].get("text")))
            return {"value": value, "errors": errors}
        finally:
            dt.close()
