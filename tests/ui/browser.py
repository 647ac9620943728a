"""A real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium) and
the StyleGAN2 app served over HTTP on 127.0.0.1 for it, plus waits and the artifact folder."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import need

ROOT = Path(__file__).resolve().parents[2]
# thumbnails from the store that the browser fetched and decoded (the header icon aside)
LOADED_IMAGES = ("return Array.from(document.querySelectorAll('img[src*=\"/thumbs/\"]'))"
                 ".filter(i => i.complete && i.naturalWidth > 0).length")
# Each row of the run tab's table: its height against the line height and padding of its
# cells, any ref, task id or metric that the layout broke over more than one line, and any
# cell whose content spills out of it over its neighbour.
RUN_ROWS = """
return Array.from(document.querySelectorAll('table.run-versions tbody tr')).map(tr => {
  const style = getComputedStyle(tr.querySelector('td'));
  const broken = Array.from(tr.querySelectorAll('a.ref, td.task span, td.inputs .input,'
      + ' ul.metrics-inline li')).filter(e => e.getClientRects().length > 1)
      .map(e => e.textContent);
  const spilled = Array.from(tr.cells).filter(td => td.scrollWidth > td.clientWidth + 1)
      .map(td => td.className);
  return {ref: tr.dataset.ref, height: tr.getBoundingClientRect().height,
          line: parseFloat(style.lineHeight),
          pad: parseFloat(style.paddingTop) + parseFloat(style.paddingBottom), broken, spilled};
});
"""
# how far the run tab's table reaches past its frame (0: nothing to scroll to)
OVERFLOW = ("const t = document.querySelector('.table-scroll');"
            "return t.scrollWidth - t.clientWidth;")


def artifacts() -> Path:
    """Where browser tests leave screenshots (``$STYLEGAN_TEST_ARTIFACTS``)."""
    out = Path(os.environ.get("STYLEGAN_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    return out


@contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """Headless Chromium with a ``width`` × ``height`` viewport."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    need(exe is not None and driver_bin is not None,
         "Chromium and its driver not installed (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        need(False, "selenium not installed (pip install selenium)")
        raise
    options = webdriver.ChromeOptions()
    options.binary_location = str(exe)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(driver_bin)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(check: Any, what: str, timeout: float = 60) -> Any:
    """Poll ``check`` until it returns something true; AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception:  # noqa: BLE001 - the page is still loading
            value = None
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def served(app: Any) -> Iterator[str]:
    """``app`` behind uvicorn on a free 127.0.0.1 port; yields its base URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, "the app server to start", 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def tall_or_broken(rows: list[dict[str, Any]], lines: int | None = 2) -> list[str]:
    """What is wrong with RUN_ROWS' rows: taller than ``lines`` text lines plus padding
    (None: any height), a ref, task id or metric broken over lines, a cell spilling over."""
    out = []
    for row in rows:
        limit = (lines or 0) * row["line"] + row["pad"] + 3  # the border, rounding
        if lines is not None and row["height"] > limit:
            out.append(f"{row['ref']}: {row['height']:.0f} px high, over {lines} lines "
                       f"({limit:.0f} px)")
        out += [f"{row['ref']}: {text!r} broken over lines" for text in row["broken"]]
        out += [f"{row['ref']}: the {cell!r} cell spills over" for cell in row["spilled"]]
    return out
