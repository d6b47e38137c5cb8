"""Where Debian's Chromium is and the flags it runs with, for the browser tests
(``tests/browser``) and the README screenshots (``scripts/screenshots.py``)."""

from __future__ import annotations

import os

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
