"""Open a local HTML page in a real headless browser and say what a person would get.

Debian's `chromium` (installed by `make test`'s `browser` prerequisite, never downloaded by
Playwright) is driven by Playwright. `open_page` returns the console errors, uncaught page
errors, requests that failed or left the machine, the ids of the page's sections in order, which
images decoded, and a full-page screenshot. Any test that checks a page we write (the run report,
later the serving docs) uses it:

    check = open_page(run.report_path, tmp_path / "report.png")
    assert check.problems() == []
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("LAYERWISE_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"  # git-ignored
# A browser that stays off the network and out of the user's profile.
LAUNCH_FLAGS = [
    "--no-sandbox",  # root in a container has no user namespace for the sandbox
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
_IMAGES_JS = """async () => Promise.all(Array.from(document.images).map(async (img) => {
    let decoded = true;
    try { await img.decode(); } catch (e) { decoded = false; }
    return {alt: img.alt, decoded: decoded && img.naturalWidth > 0,
            width: img.naturalWidth, height: img.naturalHeight};
}))"""


@dataclass
class PageCheck:
    """What the browser saw on one page."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    section_ids: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    title: str = ""
    screenshot: Path | None = None
    measured: Any = None  # what `open_page(script=...)` returned

    def problems(self) -> list[str]:
        """Everything that should not happen on a page we ship, one line each."""
        lines = [f"console error: {text}" for text in self.console_errors]
        lines += [f"page error: {text}" for text in self.page_errors]
        lines += [f"request failed: {url}" for url in self.failed_requests]
        lines += [f"request left the machine: {url}" for url in self.external_requests]
        lines += [f"image did not decode: {i['alt']!r}" for i in self.images if not i["decoded"]]
        return lines


def require_browser() -> None:
    """Skip with the reason when Chromium or Playwright is missing; under CI, fail instead,
    because there `make test` installs the browser first and its absence is a broken setup."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (Debian package chromium; `make browser` installs it)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the Python package playwright (in the dev extra)")
    if not missing:
        return
    reason = "no headless browser: missing " + " and ".join(missing)
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the browser test")
    pytest.skip(reason)


def open_page(
    path: Path,
    screenshot: Path,
    width: int = 1200,
    height: int = 900,
    script: str | None = None,
) -> PageCheck:
    """Load `path` (a local file) in headless Chromium with a fresh profile, wait for it and its
    images, run `script` (a JavaScript function, its result in `measured`) and save a full-page
    screenshot to `screenshot` (and a copy in test-artifacts/)."""
    from playwright.sync_api import Route, sync_playwright

    check = PageCheck()

    def keep_local(route: Route) -> None:
        url = route.request.url
        if url.startswith(("file:", "data:", "about:")):
            route.continue_()
        else:
            check.external_requests.append(url)
            route.abort()

    with tempfile.TemporaryDirectory(prefix="lw-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=LAUNCH_FLAGS,
            viewport={"width": width, "height": height},
        )
        try:
            page = context.new_page()
            page.on(
                "console",
                lambda m: check.console_errors.append(m.text) if m.type == "error" else None,
            )
            page.on("pageerror", lambda exc: check.page_errors.append(str(exc)))
            page.on("requestfailed", lambda r: check.failed_requests.append(r.url))
            page.route("**/*", keep_local)
            page.goto(path.resolve().as_uri(), wait_until="load")
            check.title = page.title()
            check.section_ids = page.eval_on_selector_all(
                "section[id]", "els => els.map(e => e.id)"
            )
            check.images = page.evaluate(_IMAGES_JS)
            if script is not None:
                check.measured = page.evaluate(script)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            context.close()
    check.screenshot = screenshot
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(screenshot, ARTIFACTS / screenshot.name)
    return check
