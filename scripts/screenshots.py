"""Screenshots of every page for the README, taken from a running demo (``make run``).

    .venv/bin/python scripts/screenshots.py [--url http://127.0.0.1:8000] [--out docs/screenshots]

Drives Debian's Chromium (``/usr/bin/chromium``) with Playwright at 1280x800, logged in as the
demo users (password ``demo-pass``). The review page is shown before and after the reveal: the
script answers phase 1 by keyboard (label 1, confidence Shift+4, one box, Enter), so the demo
expert's first task gets an expectation.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts.chromium import CHROMIUM, CHROMIUM_FLAGS


def login(page: Page, url: str, username: str) -> None:
    page.goto(f"{url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill("demo-pass")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r".*/$"))


def shoot(page: Page, out: Path, name: str) -> None:
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(out / f"{name}.png"), full_page=False)
    print(f"saved {out / name}.png")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--out", default="docs/screenshots")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    url = args.url.rstrip("/")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)

        expert = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        login(expert, url, "expert")
        shoot(expert, out, "inbox")
        expert.get_by_role("link", name=re.compile("Start reviewing|Continue")).first.click()
        expert.wait_for_selector("#workspace:not([hidden])")
        expert.keyboard.press("1")
        expert.keyboard.press("Shift+Digit4")
        box = expert.locator("#canvas").bounding_box()
        if box:
            expert.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
            expert.mouse.down()
            expert.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.6)
            expert.mouse.up()
        shoot(expert, out, "review-expectation")
        expert.keyboard.press("Enter")
        expert.wait_for_selector("#verdict-submit:visible")
        expert.wait_for_timeout(1500)  # the saliency overlay image
        shoot(expert, out, "review-reveal")

        scientist = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        login(scientist, url, "scientist")
        scientist.locator(".cards a").first.click()
        shoot(scientist, out, "project-setup")
        project_url = scientist.url.rstrip("/")
        scientist.goto(f"{project_url}/rounds/new/")
        scientist.wait_for_timeout(1500)  # the live sampler preview
        shoot(scientist, out, "round-new")
        scientist.goto(project_url + "/")
        scientist.locator("a[href^='/rounds/']").first.click()
        shoot(scientist, out, "round-progress")
        scientist.goto(project_url + "/")
        scientist.locator("a[href*='/matrix/']").first.click()
        shoot(scientist, out, "confusion-matrix")
        cell = scientist.locator("a[href*='pred=']").first
        cell.click()
        scientist.wait_for_timeout(1000)
        scientist.screenshot(path=str(out / "confusion-cell.png"), full_page=True)
        print(f"saved {out / 'confusion-cell.png'}")
        scientist.locator("a[href^='/instances/']").first.click()
        shoot(scientist, out, "instance")

        approver = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        login(approver, url, "approver")
        approver.locator(".cards a").first.click()
        approver.get_by_role("link", name="Readiness").click()
        shoot(approver, out, "readiness")
        browser.close()


if __name__ == "__main__":
    main()
