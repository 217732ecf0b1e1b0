"""Headless Chromium for the report tests: Debian's ``chromium`` and ``chromium-driver`` driven by Selenium, with the
network blocked, the browser's console and its network log read back.

The network is closed three ways: every host name resolves to nothing (``--host-resolver-rules``), a proxy that does
not exist takes any request that gets past that, and background services are off. The test then reads Chrome's
performance log (DevTools ``Network.requestWillBeSent`` events) and fails on any request whose URL is not the file
itself or an in-page ``data:``/``blob:``/``about:`` URL, so "no request leaves the file" is measured, not assumed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
    "--window-size=1280,2000",
)

# Marks of a Vega SVG: every item of a mark group whose role is a data mark (axes, legends and titles are other roles).
COUNT_MARKS_JS = """
var out = {};
document.querySelectorAll(arguments[0]).forEach(function (el) {
  out[el.id || el.getAttribute('data-chart')] = el.querySelectorAll('svg g.role-mark > path, svg g.role-mark > line, '
    + 'svg g.role-mark > text, svg g.role-mark > rect, svg g.role-mark > circle').length;
});
return out;
"""


def ensure_chromium() -> None:
    """Install Debian's Chromium and its driver when missing (the machine's package registry; no browser download)."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    if shutil.which("apt-get") is None:
        raise RuntimeError("Chromium is missing and apt-get is not available to install it")
    subprocess.run(["apt-get", "update"], check=True, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "chromium", "chromium-driver"], check=True, capture_output=True)


@dataclass
class PageResult:
    url: str
    console: list[dict]
    requests: list[str]
    marks: dict[str, int]
    rendered: dict[str, str]
    screenshot: Path
    title: str

    @property
    def errors(self) -> list[dict]:
        return [e for e in self.console if e.get("level") in ("SEVERE", "ERROR")]

    def outside_requests(self) -> list[str]:
        return [u for u in self.requests if u != self.url and not u.startswith(("data:", "blob:", "about:"))]


@contextmanager
def chromium():
    ensure_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="flourish-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def open_page(driver, path: Path, screenshot: Path, *, chart_selector: str = ".vega-chart",
              figure_selector: str | None = None, wait_seconds: float = 30.0) -> PageResult:
    """Open ``path`` as a file URL, wait until every chart has rendered (or failed), and collect what happened."""
    import time

    url = path.resolve().as_uri()
    driver.set_window_size(1280, 800)  # the page's own height decides the screenshot's, not the previous page's
    driver.get("about:blank")  # leave the start page (its chrome:// resources are the browser's, not the report's)
    time.sleep(0.3)
    driver.get_log("browser")
    driver.get_log("performance")
    driver.get(url)
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        pending = driver.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0])).filter(function (e) {"
            " return !e.getAttribute('data-rendered'); }).length;", chart_selector)
        if pending == 0:
            break
        time.sleep(0.2)
    time.sleep(0.5)
    rendered = driver.execute_script(
        "var o = {}; document.querySelectorAll(arguments[0]).forEach(function (e) { o[e.id] ="
        " e.getAttribute('data-rendered') || 'pending'; }); return o;", chart_selector)
    marks = driver.execute_script(COUNT_MARKS_JS, chart_selector)
    if figure_selector:
        marks.update(driver.execute_script(COUNT_MARKS_JS, figure_selector))
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(int(height), 800), 16000))
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(screenshot))
    requests = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            params = message["params"]
            if params.get("documentURL", url) != "about:blank":
                requests.append(params["request"]["url"])
    return PageResult(url, driver.get_log("browser"), requests, marks, rendered, screenshot, driver.title)
