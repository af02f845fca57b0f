"""The report in a real browser: headless Chromium driven through chromedriver.

chromedriver speaks the W3C WebDriver protocol (JSON over HTTP), so a few lines of urllib drive
it and no Python package is needed. Chromium and chromedriver are the Debian packages
``chromium`` and ``chromium-driver``; when they are missing and this runs as root with apt-get,
the fixture installs them (about 1.5 minutes), otherwise the test is skipped saying why. Set
``INNERSIGHT_NO_BROWSER_INSTALL=1`` to skip instead of installing.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import innersight as ins
from tests.report import small_report

PACKAGES = ("chromium", "chromium-driver")
TITLE = "<script>document.title='pwned'</script> digits & co"
# Waits for the whole page (a loaded 2-core machine once returned from navigation with part of
# a large report parsed), opens every <details>, waits for every image to decode, and reports
# what the page holds.
INSPECT = """
const done = arguments[arguments.length - 1];
const loaded = document.readyState === 'complete' ? Promise.resolve()
  : new Promise(resolve => window.addEventListener('load', resolve, {once: true}));
loaded.then(() => {
document.querySelectorAll('details').forEach(d => { d.open = true; });
const images = [...document.images];
return Promise.all(images.map(img => img.decode().then(() => null, err => String(err))))
  .then(errors => ({images, errors}));
}).then(({images, errors}) => {
  done({
    images: images.map((img, i) => ({
      alt: img.alt, width: img.naturalWidth, height: img.naturalHeight,
      declared: Number(img.getAttribute('width')), scheme: img.src.slice(0, 21),
      error: errors[i],
    })),
    sections: [...document.querySelectorAll('section')].map(s => s.id),
    scripts: document.scripts.length,
    title: document.title,
    height: document.documentElement.scrollHeight,
  });
});
"""


def _which(*names: str) -> str | None:
    return next((path for name in names if (path := shutil.which(name))), None)


def _apt_install() -> str:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:  # stale package lists: refresh once and retry
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=600)
        proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    return "" if proc.returncode == 0 else (proc.stderr or proc.stdout)[-500:]


def chromium_and_driver() -> tuple[str, str]:
    """Paths of chromium and chromedriver, installing the Debian packages when possible."""
    found = _which("chromium", "chromium-browser", "google-chrome"), _which("chromedriver")
    if all(found):
        return found  # type: ignore[return-value]
    if os.environ.get("INNERSIGHT_NO_BROWSER_INSTALL", "") not in ("", "0"):
        pytest.skip("headless Chromium is not installed and INNERSIGHT_NO_BROWSER_INSTALL is set")
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(
            "headless Chromium is not installed and cannot be installed here (needs root and "
            "apt-get); install the packages chromium and chromium-driver to run this test"
        )
    error = _apt_install()
    found = _which("chromium", "chromium-browser"), _which("chromedriver")
    if error or not all(found):
        pytest.skip(f"installing {' '.join(PACKAGES)} with apt-get failed: {error.strip()}")
    return found  # type: ignore[return-value]


class Browser:
    """A headless Chromium session through chromedriver (W3C WebDriver over HTTP)."""

    def __init__(self, chromium: str, driver: str) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait_ready()
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        caps = {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": [*args, "--window-size=1400,1000"]},
            "goog:loggingPrefs": {"browser": "ALL"},
        }
        self.session = self.call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})[
            "sessionId"
        ]
        self.call("POST", self._s("/timeouts"), {"script": 60_000, "pageLoad": 60_000})

    def _s(self, path: str) -> str:
        return f"/session/{self.session}{path}"

    def _wait_ready(self, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if self.call("GET", "/status").get("ready"):
                    return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        self.proc.kill()
        pytest.fail("chromedriver did not start within 20 s")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as err:
            raise AssertionError(f"WebDriver {method} {path}: {err.read()[:500]!r}") from None

    def open(self, url: str) -> None:
        self.call("POST", self._s("/url"), {"url": url})

    def run_async(self, script: str) -> Any:
        return self.call("POST", self._s("/execute/async"), {"script": script, "args": []})

    def console(self) -> list[dict[str, Any]]:
        return self.call("POST", self._s("/se/log"), {"type": "browser"})

    def screenshot(self, path: Path, height: int) -> Path:
        """The whole page: the window is made as tall as the page (capped) first."""
        self.call("POST", self._s("/window/rect"), {"width": 1400, "height": min(height, 16_000)})
        path.write_bytes(base64.b64decode(self.call("GET", self._s("/screenshot"))))
        return path

    def close(self) -> None:
        try:
            self.call("DELETE", self._s(""))
        finally:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser():
    chromium, driver = chromium_and_driver()
    session = Browser(chromium, driver)
    yield session
    session.close()


def test_report_renders_in_chromium_without_errors(browser, tmp_path):
    report = small_report(n_inputs=2, title=TITLE)
    path = report.write(tmp_path / "report.html")
    browser.open(path.as_uri())
    page = browser.run_async(INSPECT)
    shot = browser.screenshot(tmp_path / "report.png", page["height"])
    print(f"screenshot: {shot}")

    errors = [e for e in browser.console() if e["level"] in ("SEVERE", "WARNING")]
    assert errors == [], errors
    assert page["scripts"] == 0 and page["title"] == TITLE  # the title is text, not a script
    figures = [f for s in report.sections for r in s.runs for f in (*r.figures, *r.details)]
    assert len(page["images"]) == len(figures) + len(report.inputs) > 0
    for img in page["images"]:
        assert img["error"] is None and img["width"] > 0, img
        assert img["scheme"] == "data:image/png;base64" and img["width"] == img["declared"], img
    for name in ins.techniques():
        assert f"technique-{name}" in page["sections"]
    assert shot.stat().st_size > 10_000
