"""The browser tooling itself: a failing browser test saves a screenshot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_a_failing_browser_test_saves_a_screenshot(tmp_path):
    env = os.environ | {"BROWSER_SCREENSHOTS_DIR": str(tmp_path)}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(HERE / "failing_on_purpose.py"),
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        cwd=HERE.parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    shots = list(tmp_path.glob("*.png"))
    assert len(shots) == 1, run.stdout
    assert "fails_after_drawing_something" in shots[0].name
    assert shots[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shots[0].stat().st_size > 1000
