"""The dashboard in a real headless Chromium (Debian package ``chromium``), driven over the
DevTools protocol: pages load from disk with no console error, injected model text runs
nothing, and the overview screenshot is saved (``$EVALPIPE_ARTIFACTS_DIR`` or tmp) for CI.

Chromium missing is a failure, not a skip: scripts/install-chromium.sh installs it."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_report import build_store

from evalpipe.report.dashboard import page_name, render_dashboard
from evalpipe.store import open_store

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(
            "chromium not found: run scripts/install-chromium.sh (apt-get install chromium)"
        )
    return found


class Page:
    """One tab over CDP: send commands, collect console errors and exceptions."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session: str) -> None:
        self.ws, self.session = ws, session
        self.ids = itertools.count(100)
        self.errors: list[str] = []
        self.loaded = asyncio.Event()

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        await self.ws.send_json(
            {"id": msg_id, "method": method, "params": params, "sessionId": self.session}
        )
        while True:
            msg = await self.ws.receive_json(timeout=30)
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg["result"]
                return result
            self._event(msg)

    def _event(self, msg: dict[str, Any]) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.exceptionThrown":
            self.errors.append(json.dumps(params["exceptionDetails"])[:500])
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append(json.dumps(params.get("args"))[:500])
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(params["entry"]["text"])
        elif method == "Page.loadEventFired":
            self.loaded.set()

    async def open(self, path: Path) -> None:
        self.loaded.clear()
        await self.send("Page.navigate", url=path.resolve().as_uri())
        while not self.loaded.is_set():
            self._event(await self.ws.receive_json(timeout=30))
        await self.send("Runtime.evaluate", expression="1")  # drain events raised on load

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")


async def _drive(site: Path, pages: list[Path], screenshot: Path, profile: Path) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        chromium(),
        *FLAGS,
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
        "about:blank",
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        url = None
        while url is None:
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            if not line:
                raise RuntimeError("chromium exited before DevTools came up")
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            url = m.group(1) if m else None
        async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0) as ws:
            await ws.send_json(
                {"id": 1, "method": "Target.createTarget", "params": {"url": "about:blank"}}
            )
            target = await _reply(ws, 1)
            await ws.send_json(
                {
                    "id": 2,
                    "method": "Target.attachToTarget",
                    "params": {"targetId": target["targetId"], "flatten": True},
                }
            )
            page = Page(ws, (await _reply(ws, 2))["sessionId"])
            for domain in ("Page", "Runtime", "Log"):
                await page.send(f"{domain}.enable")
            await page.send(
                "Emulation.setDeviceMetricsOverride",
                width=1400,
                height=1000,
                deviceScaleFactor=1,
                mobile=False,
            )
            seen: dict[str, Any] = {}
            for path in pages:
                await page.open(path)
                seen[str(path.relative_to(site))] = {
                    "pwned": await page.evaluate("typeof window.__pwned"),
                    "title": await page.evaluate("document.title"),
                }
                if path.name == "index.html":
                    shot = await page.send("Page.captureScreenshot", format="png")
                    screenshot.write_bytes(base64.b64decode(shot["data"]))
                    # The filter works from file://: pick the drifting task, others hide.
                    seen["filter"] = await page.evaluate(
                        "(() => { const s = document.querySelector('select[data-dim=task]');"
                        " s.value = 'arith'; s.dispatchEvent(new Event('input'));"
                        " return [...document.querySelectorAll('tbody tr')]"
                        ".filter(r => !r.hidden).map(r => r.dataset.task); })()"
                    )
            seen["errors"] = page.errors
            return seen
    finally:
        proc.kill()
        await proc.wait()


async def _reply(ws: aiohttp.ClientWebSocketResponse, msg_id: int) -> dict[str, Any]:
    while True:
        msg = await ws.receive_json(timeout=30)
        if msg.get("id") == msg_id:
            result: dict[str, Any] = msg["result"]
            return result


def test_pages_load_clean_and_injected_text_runs_nothing(tmp_path: Path) -> None:
    with open_store(str(tmp_path / "store.db")) as store:
        runs = build_store(store)
        render_dashboard(store, tmp_path / "site", pairs={"tp2": "tp1"})
    site = tmp_path / "site"
    artifacts = Path(os.environ.get("EVALPIPE_ARTIFACTS_DIR") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    screenshot = artifacts / "dashboard-overview.png"
    drift = page_name(runs["drift"].run_id)
    pages = [
        site / "index.html",
        site / "trends.html",
        site / "runs.html",
        site / "compare" / drift,
        site / "runs" / drift,
    ]
    seen = asyncio.run(_drive(site, pages, screenshot, tmp_path / "profile"))
    print(f"overview screenshot: {screenshot}")
    assert seen.pop("errors") == []
    assert seen.pop("filter") == ["arith"]
    for page, got in seen.items():
        assert got["pwned"] == "undefined", page
        assert "evalpipe" in got["title"], page
    assert screenshot.stat().st_size > 10_000
