"""Headless Chromium for the console's browser tests: Debian's ``chromium`` driven by
Playwright (``executable_path``; Playwright never downloads a browser here), a page that records
every console error, uncaught exception and failed request, and ``shipit console`` on a free
127.0.0.1 port. Tests skip, saying why, when the ``chromium`` binary is absent. The fixtures
(``chromium``, ``browser_page``, ``console_url``) reach tests through the integration
conftest."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.replica_process import SHIPIT, free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
VIEWPORT = {"width": 1366, "height": 860}  # a laptop screen


def chromium_or_skip() -> str:
    if not Path(CHROMIUM).is_file():
        pytest.skip(
            "Debian's chromium is not installed (apt-get install -y --no-install-recommends "
            "chromium); the console's browser tests drive it with Playwright"
        )
    return CHROMIUM


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    path = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@dataclass
class Watched:
    """A page and what went wrong on it (console errors, exceptions, 4xx/5xx answers)."""

    page: Any
    problems: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        """No error logged, and no JavaScript placeholder (null, undefined, NaN) shown."""
        assert self.problems == [], self.problems
        shown = re.findall(r"\b(?:null|undefined|NaN)\b", self.page.inner_text("body"))
        assert shown == [], shown


@pytest.fixture
def browser_page(chromium: Any) -> Iterator[Watched]:
    context = chromium.new_context(viewport=VIEWPORT)
    p = context.new_page()
    watched = Watched(p)
    p.on(
        "console",
        lambda m: (
            watched.problems.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning")
            else None
        ),
    )
    p.on("pageerror", lambda e: watched.problems.append(f"exception: {e}"))
    p.on(
        "response",
        lambda r: watched.problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None,
    )
    try:
        yield watched
    finally:
        context.close()


def screenshot(page: Any, name: str, *, full_page: bool = True) -> Path:
    """``docs/images/console-<name>.png``: the pictures the docs show."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    path = IMAGES / f"console-{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


@pytest.fixture(scope="module")
def console_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``shipit console`` on a free port; stopped by pid."""
    port = free_port()
    log = tmp_path_factory.mktemp("console") / "console.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [SHIPIT, "console", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/ui/"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"shipit console exited {proc.returncode}: {log.read_text()}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("shipit console never answered: " + log.read_text())
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
