"""End to end (issue 9 acceptance): a replayed city written to the embedded store, ``monitor serve`` on
loopback with a token configured, headless Debian Chromium (driven by chromedriver through selenium)
signs in, opens the list and one institution, and the rendered text is checked. Screenshots are saved
under ``tests/artifacts/`` (gitignored) for a person to look at.

Chromium needs these flags here (env notes): --headless --no-sandbox --disable-gpu --disable-quic
--no-first-run --disable-background-networking --disable-component-update --disable-sync and a fresh
--user-data-dir (the machine's network is closed; background fetches would be refused)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from builders import CLINIC, PHARMACY
from test_inspect import full_ladder

ARTIFACTS = Path(__file__).with_name("artifacts")
TOKEN = "e2e-inspector-token"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1400", "--lang=zh-CN")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A city replayed into embedded chDB; ``monitor serve`` over it on a free loopback port."""
    from monitor.sinks.clickhouse import ClickHouseSink

    tmp = tmp_path_factory.mktemp("e2e")
    dsn = f"chdb://{tmp / 'ch'}"
    full_ladder(tmp, sinks=[ClickHouseSink(dsn, tmp / "buf")])
    env = {**os.environ, "MONITOR_UI_TOKEN": TOKEN, "MONITOR_DATA_DIR": str(tmp / "var")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", "serve", "--store", dsn, "--policy", str(tmp / "upload-only.toml"),
         "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "monitor serve: http://127.0.0.1:PORT/ (...)"
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        assert "bearer token required" in line
        yield match.group(0)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    # the sign-in POST redirects to the list; on a loaded machine the next page may not be there the
    # instant click() returns, so element look-ups wait (up to 30 s) instead of failing at once
    driver.implicitly_wait(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_browser_signs_in_and_reads_the_case_files(served: str, browser: object) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    ARTIFACTS.mkdir(exist_ok=True)
    # without the session the page is the sign-in form (HTTP 401)
    browser.get(served)
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "访问令牌 Access token" in body and "惠民" not in body
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "signin").click()

    # the list: both institutions, state and next-deadline columns, bilingual headers
    table = browser.find_element(By.ID, "institutions")
    text = table.text
    assert "鄂城区惠民大药房" in text and "华容区社区诊所" in text
    assert "已终止/取消 terminated" in text and "正常 normal" in text
    rows = browser.find_elements(By.CSS_SELECTOR, "#institutions tbody tr")
    assert [r.get_attribute("data-code") for r in rows] == [CLINIC, PHARMACY]
    assert "Flagged institutions" in browser.find_element(By.TAG_NAME, "body").text
    browser.save_screenshot(str(ARTIFACTS / "inspect-list.png"))

    # filter by state through the form's query string, then open the pharmacy
    browser.get(served + "?state=terminated&sort=recency")
    rows = browser.find_elements(By.CSS_SELECTOR, "#institutions tbody tr")
    assert [r.get_attribute("data-code") for r in rows] == [PHARMACY]
    rows[0].find_element(By.TAG_NAME, "a").click()

    inst = browser.find_element(By.ID, "institution").text
    for fact in ("鄂城区惠民大药房", "定点零售药店 / retail pharmacy", "鄂城区 (420704)", "C（XY）",
                 "2026-01-01 → 2026-12-31", "已终止/取消 terminated"):
        assert fact in inst, fact
    timeline = browser.find_element(By.ID, "timeline").text
    assert timeline.count("告警 Alert") == 4 and timeline.count("工单 Ticket") == 2
    assert "2026-01-13 → 2026-02-13" in timeline and "终止门诊统筹定点资格" in timeline
    assert "1 个月后仍未实现实时上传的，终止其门诊统筹定点资格" in timeline
    page = browser.find_element(By.TAG_NAME, "body").text
    assert not re.search(r"(?<!\d)\d{17}[\dXx](?!\d)", page) and "王小明" not in page
    assert "Upload lag p90" in page  # institution_daily chart from the store
    browser.save_screenshot(str(ARTIFACTS / "inspect-case-file.png"))
    assert (ARTIFACTS / "inspect-case-file.png").stat().st_size > 10_000
