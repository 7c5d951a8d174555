"""Open a sweep's report.html in a real headless browser (Debian's chromium), offline, and
check that it rendered: every plot decoded, the table there, and the screenshot shows plots.

    python -m benchmarks run sweep_report_screenshot [--report build/sweep/report.html]

1. ``chromium --headless --dump-dom`` (network disabled): the page's own script writes how
   many ``img.plot`` the browser decoded (``data-plots-rendered``) and how many table rows
   it has (``data-table-rows``) onto ``<html>``; both are read back from the DOM.
2. ``chromium --headless --screenshot``: the PNG is inspected with PIL: enough non-white
   pixels, and saturated colours (the plots' markers and lines, not just black text).

Writes the screenshot beside the report (report.png) and benchmarks/results/sweep_report_screenshot.json.
Exit 1 if the page did not render.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import BUILD

KIND = "study"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--hide-scrollbars",
         "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]  # any network request fails


def chromium() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser")) if p), None)


def _browser(html: Path, *extra: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000",
                               *extra, html.resolve().as_uri()], capture_output=True, text=True, timeout=timeout)


def check_report(html: Path, screenshot: Path, *, width: int = 1400, height: int = 2400) -> dict:
    """Render ``html`` headless; returns what was found, with ``ok``."""
    from PIL import Image
    import numpy as np

    source = html.read_text(encoding="utf-8")
    expected_plots = source.count("class='plot'")
    expected_rows = len(re.findall(r"<tr class='[^']*'>", source))
    dom = _browser(html, "--dump-dom").stdout
    rendered = re.search(r'data-plots-rendered="(\d+)"', dom)
    rows = re.search(r'data-table-rows="(\d+)"', dom)
    shot = _browser(html, f"--window-size={width},{height}", f"--screenshot={screenshot.resolve()}")
    found = {"report": str(html), "screenshot": str(screenshot), "expected_plots": expected_plots,
             "plots_rendered": int(rendered.group(1)) if rendered else None, "expected_table_rows": expected_rows,
             "table_rows": int(rows.group(1)) if rows else None, "screenshot_written": screenshot.is_file()}
    if screenshot.is_file():
        a = np.asarray(Image.open(screenshot).convert("RGB")).astype(np.int16)
        non_white = (a.min(axis=2) < 235).mean()
        saturated = ((a.max(axis=2) - a.min(axis=2)) > 80).mean()  # coloured markers/lines, not grey text
        found.update(non_white_fraction=round(float(non_white), 4), saturated_fraction=round(float(saturated), 5),
                     size=[int(a.shape[1]), int(a.shape[0])])
    else:
        found["browser_stderr_tail"] = shot.stderr.strip().splitlines()[-3:]
    found["ok"] = bool(expected_plots and found["plots_rendered"] == expected_plots
                       and found["table_rows"] == expected_rows and expected_rows > 0
                       and found.get("non_white_fraction", 0) > 0.05 and found.get("saturated_fraction", 0) > 0.001)
    return found


def add_arguments(ap) -> None:
    ap.add_argument("--report", default=str(BUILD / "sweep" / "report.html"))


def run(args) -> dict | int:
    if chromium() is None:
        print("chromium not found: apt-get install -y chromium", file=sys.stderr)
        return 2
    html = Path(args.report)
    if not html.is_file():
        print(f"no report at {html}: run `mobiledeploy sweep` first", file=sys.stderr)
        return 2
    found = check_report(html, html.with_suffix(".png"))
    version = subprocess.run([chromium(), "--version"], capture_output=True, text=True).stdout.strip()
    found["browser"] = version
    print(json.dumps(found, indent=2))
    return {**found, "_exit": 0 if found["ok"] else 1}
