"""Opens the built documentation site in a real (headless) Chromium and checks it.

Usage (after ``python -m sphinx -W -b html docs docs/_build/html``; needs the
``docs`` extra, which brings ``selenium``, and Debian's ``chromium`` and
``chromium-driver`` packages)::

    python tools/docs_browser_check.py [--site docs/_build/html] [--page api/adam.html ...]

Serves the site from ``127.0.0.1`` on a free port (``http.server`` in a thread)
and loads each page (by default :data:`PAGES`: the index, an API page with
equations, the schedules guide's pictures, the two optimizer galleries) in
Chromium driven by Selenium through ``/usr/bin/chromedriver``. For each page it checks that

* MathJax rendered: every ``.math`` element holds an ``mjx-container``, and no
  raw TeX (``\\frac``, ``\\sqrt``, ``\\(`` ...) is left in the visible text
  outside code;
* every ``<img>`` loaded (``naturalWidth > 0``);
* the browser console logged no error;
* no request left the site: every URL of ``performance.getEntriesByType('resource')``
  and of the DevTools network log is on the local origin (or ``data:``/``blob:``);
  the server answered no request with an error.

Chromium runs with a fresh profile and its background networking off, and every
host name but ``127.0.0.1`` resolves to nothing, so the check never reaches the
network. Screenshots (the whole page) go to ``docs/_build/screenshots/<page>.png``.
Exits 1 with the list of problems, 0 when there are none.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SITE = ROOT / "docs" / "_build" / "html"
DEFAULT_SCREENSHOTS = ROOT / "docs" / "_build" / "screenshots"
# The pages loaded by default (paths under the site) and the screenshot's name.
PAGES = {
    "index.html": "index",
    "api/adam.html": "api-adam",  # docs/api/adam.rst: the Adam family's equations
    "guides/schedules.html": "guides-schedules",  # the schedules' pictures
    "guides/gallery.html": "guides-gallery",  # every optimizer's paths
    "guides/second_order_gallery.html": "guides-second-order-gallery",  # second-order paths
}
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--no-default-browser-check",
    # Nothing but the local server resolves: a stray request fails fast (and is reported).
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--window-size=1280,1000",
)
# TeX that MathJax would have replaced: its commands and the inline/display delimiters.
RAW_TEX = re.compile(
    r"\\(?:frac|sqrt|left|right|begin|end|mathbf|mathrm|mathcal|operatorname|hat|bar|tilde"
    r"|beta|eta|epsilon|lambda|alpha|gamma|odot|cdot|leftarrow|gets|sum|prod|max|min|text)\b"
    r"|\\\(|\\\)|\\\[|\\\]"
)
TIMEOUT_S = 30.0  # page load and scripts
MATHJAX_WAIT_S = 15.0  # MathJax's typesetting, waited for inside a script (under TIMEOUT_S)

# The page's visible text outside code, math that MathJax rendered, scripts and styles.
_VISIBLE_TEXT_JS = """
const skip = new Set(['PRE', 'CODE', 'SCRIPT', 'STYLE', 'MJX-CONTAINER', 'TEXTAREA', 'NOSCRIPT']);
const out = [];
const walk = (node) => {
  if (node.nodeType === Node.TEXT_NODE) { out.push(node.textContent); return; }
  if (node.nodeType !== Node.ELEMENT_NODE || skip.has(node.tagName)) return;
  const style = getComputedStyle(node);
  if (style.display === 'none' || style.visibility === 'hidden') return;
  for (const child of node.childNodes) walk(child);
};
walk(document.body);
return out.join(' ');
"""

_PAGE_STATE_JS = """
const math = Array.from(document.querySelectorAll('.math'));
return {
  math: math.length,
  mathRendered: math.filter(e => e.querySelector('mjx-container')).length,
  mathUnrendered: math.filter(e => !e.querySelector('mjx-container'))
                      .slice(0, 5).map(e => e.textContent.trim().slice(0, 80)),
  containers: document.querySelectorAll('mjx-container').length,
  mathjax: typeof window.MathJax === 'object' && !!window.MathJax.startup,
  images: Array.from(document.images).map(i => ({
    src: i.currentSrc || i.src, complete: i.complete, width: i.naturalWidth})),
  resources: performance.getEntriesByType('resource').map(e => e.name),
  navigation: performance.getEntriesByType('navigation').map(e => e.name),
};
"""

# Resolves when MathJax finished typesetting (or at once on a page without it).
_MATHJAX_DONE_JS = """
const done = arguments[arguments.length - 1];
const limit = arguments[0];
const start = Date.now();
const hasMathJax = !!document.querySelector('script[src*="mathjax"]');
const poll = () => {
  const mj = window.MathJax;
  if (mj && mj.startup && mj.startup.promise) {
    mj.startup.promise.then(() => done('ok'), (e) => done('error: ' + e));
  } else if (!hasMathJax && document.readyState === 'complete') {
    done('no mathjax');
  } else if (Date.now() - start > limit) {
    done('timeout');
  } else {
    setTimeout(poll, 50);
  }
};
poll();
"""


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the site quietly, recording every request and its status."""

    log: list[tuple[str, int]]

    def log_request(self, code="-", size="-"):
        self.log.append((self.path, int(code) if str(code).isdigit() else 0))

    def log_message(self, format, *args):  # noqa: A002 (http.server's name)
        pass


def serve(site: Path) -> tuple[_Server, list[tuple[str, int]]]:
    """A server for ``site`` on a free port of 127.0.0.1, running in a thread."""
    log: list[tuple[str, int]] = []
    handler = functools.partial(type("Handler", (_Handler,), {"log": log}), directory=str(site))
    server = _Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, log


def start_chromium(chromium: str, chromedriver: str, profile: str):
    # Selenium Manager (which may download a driver) is never asked: both paths are given.
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    options.add_experimental_option(
        "perfLoggingPrefs", {"enableNetwork": True, "enablePage": False}
    )
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    # The new-tab page Chromium opened with loads chrome:// resources: start blank and
    # drop what the logs hold so far, so they hold only what the site's pages do.
    driver.get("about:blank")
    driver.get_log("performance")
    driver.get_log("browser")
    driver.set_page_load_timeout(TIMEOUT_S)
    driver.set_script_timeout(TIMEOUT_S)
    # Room for every resource a page loads (Chromium keeps 250 by default).
    driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {"source": "performance.setResourceTimingBufferSize(100000);"},
    )
    return driver


def network_requests(driver) -> list[str]:
    """The URLs the page requested since the last call, from the DevTools log."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def screenshot(driver, path: Path) -> None:
    """The whole page (not just the window) as a PNG."""
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    width, height = int(size["width"]), min(int(size["height"]), 16000)
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        },
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def _implicit_favicon(url_or_message: str, origin: str) -> bool:
    """Chromium asks every site for ``/favicon.ico`` on its own; the site declares no
    icon (its pages have no ``<link rel="icon">``), so that request's 404 is not the
    site's problem. Anything else the server or console reports is."""
    return url_or_message.startswith((f"{origin}/favicon.ico", "/favicon.ico"))


def check_page(driver, origin: str, page: str, shot: Path) -> tuple[list[str], str]:
    """The problems of one page and a one-line summary of what was checked."""
    problems: list[str] = []
    driver.get(f"{origin}/{page}")
    mathjax = driver.execute_async_script(_MATHJAX_DONE_JS, MATHJAX_WAIT_S * 1000)
    if mathjax not in ("ok", "no mathjax"):
        problems.append(f"MathJax did not finish: {mathjax}")
    # Scroll through the page so that anything loaded lazily is loaded, then wait for images.
    driver.execute_script("window.scrollTo(0, document.body.scrollHeight); window.scrollTo(0, 0);")
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline and not driver.execute_script(
        "return Array.from(document.images).every(i => i.complete);"
    ):
        time.sleep(0.1)
    state = driver.execute_script(_PAGE_STATE_JS)

    if state["math"] and not state["mathjax"]:
        problems.append(f"{state['math']} math elements but MathJax did not load")
    if state["mathRendered"] < state["math"]:
        problems.append(
            f"MathJax left {state['math'] - state['mathRendered']} of {state['math']} math "
            f"elements unrendered, e.g. {state['mathUnrendered']}"
        )
    raw = sorted(set(RAW_TEX.findall(driver.execute_script(_VISIBLE_TEXT_JS))))
    if raw:
        problems.append(f"raw TeX in the visible text: {raw[:10]}")

    for image in state["images"]:
        if not image["complete"] or image["width"] <= 0:
            problems.append(f"image did not load: {image['src']}")

    for entry in driver.get_log("browser"):
        message = entry.get("message", "")
        if entry.get("level") == "SEVERE" and not _implicit_favicon(message, origin):
            problems.append(f"console error: {message}")

    requested = set(state["resources"]) | set(state["navigation"]) | set(network_requests(driver))
    for url in sorted(requested):
        if not (url.startswith(origin + "/") or url.startswith(("data:", "blob:"))):
            problems.append(f"request left the site: {url}")

    screenshot(driver, shot)
    summary = (
        f"{state['containers']} rendered equations ({state['math']} math elements), "
        f"{len(state['images'])} images, {len(requested)} requests"
    )
    return problems, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, default=DEFAULT_SITE)
    parser.add_argument(
        "--page",
        action="append",
        help=f"a page under the site to load (repeatable); default: {', '.join(PAGES)}",
    )
    parser.add_argument("--screenshots", type=Path, default=DEFAULT_SCREENSHOTS)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = parser.parse_args(argv)

    pages = {p: PAGES.get(p, p.removesuffix(".html").replace("/", "-")) for p in args.page or PAGES}
    missing = [p for p in pages if not (args.site / p).is_file()]
    if missing:
        print(f"docs browser check: not built under {args.site}: {missing}")
        return 1
    for tool in (args.chromium, args.chromedriver):
        if not shutil.which(tool):
            print(
                f"docs browser check: {tool} not found "
                "(apt-get install -y chromium chromium-driver)"
            )
            return 1

    from selenium.common.exceptions import WebDriverException

    server, served = serve(args.site.resolve())
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    problems: dict[str, list[str]] = {}
    profile = tempfile.mkdtemp(prefix="gradtx-docs-chromium-")
    driver = None
    try:
        driver = start_chromium(args.chromium, args.chromedriver, profile)
        print(f"docs browser check: {driver.capabilities.get('browserVersion')} on {origin}")
        for page, name in pages.items():
            shot = args.screenshots / f"{name}.png"
            served.clear()
            try:
                found, summary = check_page(driver, origin, page, shot)
            except WebDriverException as error:
                found, summary = [f"the browser failed: {error.msg}"], "not checked"
            found += [
                f"the server answered {code} to {path}"
                for path, code in served
                if code >= 400 and not _implicit_favicon(path, origin)
            ]
            problems[page] = found
            status = "OK" if not found else f"{len(found)} problem(s)"
            print(f"  {page}: {status}: {summary}; screenshot {shot}")
    finally:
        if driver is not None:
            driver.quit()
        server.shutdown()
        server.server_close()
        shutil.rmtree(profile, ignore_errors=True)

    failed = {page: found for page, found in problems.items() if found}
    if failed:
        print("docs browser check: FAILED")
        for page, found in failed.items():
            for problem in found:
                print(f"  - {page}: {problem}")
        return 1
    print(f"docs browser check: OK ({len(pages)} pages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
