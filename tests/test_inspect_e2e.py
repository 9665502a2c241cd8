"""End to end (issue 9 acceptance): a replayed city written to the embedded store, ``monitor serve`` on
loopback with a token configured, headless Debian Chromium (driven by chromedriver through selenium)
signs in, opens the list and one institution, and the rendered text is checked (issue 18: Chinese rule
and action names in the list, evidence tables whose rows are the alert's sample records, the lag chart's
labelled axes and 24 h line). Screenshots are saved under pytest's temporary directory
(``<basetemp>/artifacts/``, printed at the end), never in the repository.

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
from builders import CLINIC, PHARMACY, read_jsonl
from test_inspect import full_ladder

TOKEN = "e2e-inspector-token"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1400", "--lang=zh-CN")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A city replayed into embedded chDB; ``monitor serve`` over it on a free loopback port."""
    from monitor.sinks.clickhouse import ClickHouseSink

    tmp = tmp_path_factory.mktemp("e2e")
    dsn = f"chdb://{tmp / 'ch'}"
    out, _ = full_ladder(tmp, sinks=[ClickHouseSink(dsn, tmp / "buf")])
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
        yield match.group(0), out
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


def test_browser_signs_in_and_reads_the_case_files(served: tuple[str, Path], browser: object,
                                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    url, out = served
    assert isinstance(browser, WebDriver)
    artifacts = tmp_path_factory.getbasetemp() / "artifacts"
    artifacts.mkdir(exist_ok=True)
    # without the session the page is the sign-in form (HTTP 401)
    browser.get(url)
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "访问令牌 Access token" in body and "惠民" not in body
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "signin").click()

    # the list: both institutions, state and next-deadline columns, bilingual headers
    table = browser.find_element(By.ID, "institutions")
    text = table.text
    assert "鄂城区惠民大药房" in text and "华容区社区诊所" in text
    assert "已终止/取消 terminated" in text and "正常 normal" in text
    # names, not codes: the pack's rule names and the actions' Chinese names, ids in small type
    for name in ("数据未实时上传", "未实现数据实时上传（机构日）", "中止门诊统筹服务", "终止门诊统筹定点资格",
                 "立案核查（须经核实）"):
        assert name in text, name
    ids = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#institutions small.id")]
    assert "upload.not_realtime" in ids and "TERMINATE_OUTPATIENT_POOLING" in ids
    rows = browser.find_elements(By.CSS_SELECTOR, "#institutions tbody tr")
    assert [r.get_attribute("data-code") for r in rows] == [CLINIC, PHARMACY]
    assert "Flagged institutions" in browser.find_element(By.TAG_NAME, "body").text
    browser.save_screenshot(str(artifacts / "inspect-list.png"))

    # filter by state through the form's query string, then open the pharmacy
    browser.get(url + "?state=terminated&sort=recency")
    rows = browser.find_elements(By.CSS_SELECTOR, "#institutions tbody tr")
    assert [r.get_attribute("data-code") for r in rows] == [PHARMACY]
    rows[0].find_element(By.TAG_NAME, "a").click()

    inst = browser.find_element(By.ID, "institution").text
    for fact in ("鄂城区惠民大药房", "定点零售药店 / retail pharmacy", "鄂城区 (420704)", "C（XY）",
                 "2026-01-01 → 2026-12-31", "已终止/取消 terminated"):
        assert fact in inst, fact
    assert len(browser.find_elements(By.CSS_SELECTOR, "#timeline .event.alert")) == 4
    assert len(browser.find_elements(By.CSS_SELECTOR, "#timeline .event.ticket")) == 2
    timeline = browser.find_element(By.ID, "timeline").text
    assert "2026-01-13 → 2026-02-13" in timeline and "终止门诊统筹定点资格" in timeline
    assert "1 个月后仍未实现实时上传的，终止其门诊统筹定点资格" in timeline
    # evidence: a table per alert whose rows are exactly the alert's sample records (from the replay's file)
    alerts = [a for a in read_jsonl(out / "alerts.jsonl") if a["fixmedins_code"] == PHARMACY]
    assert alerts
    for a in alerts:
        event = browser.find_element(By.ID, a["alert_id"])
        got = [tr.get_attribute("data-record") for tr in event.find_elements(By.CSS_SELECTOR,
                                                                               "table.evidence-table tbody tr")]
        assert got == a["evidence"]["sample_records"], a["alert_id"]
        cells = event.find_elements(By.CSS_SELECTOR, "table.evidence-table tbody tr td")
        assert cells and cells[0].text == a["evidence"]["sample_records"][0].split("=", 1)[1]
        assert "样本记录 5 条" in event.find_element(By.CSS_SELECTOR, "table.evidence-table tfoot").text
    # the lag chart: labelled axes with units, the pack's 24 h line, the tripped days marked
    chart = browser.find_element(By.ID, "chart-lag")
    labels = [e.text for e in chart.find_elements(By.CSS_SELECTOR, "text.axis-label")]
    assert any("业务日期" in x for x in labels) and any("小时" in x for x in labels)
    assert "24 h" in chart.find_element(By.CSS_SELECTOR, "text.threshold-label").text
    assert len(chart.find_elements(By.CSS_SELECTOR, "line.threshold")) == 1
    assert len(chart.find_elements(By.CSS_SELECTOR, "text.ytick")) == 5
    assert chart.find_elements(By.CSS_SELECTOR, "rect.tripped")  # 01-10 and 02-10 tripped upload rules
    assert chart.find_elements(By.CSS_SELECTOR, "rect.sanction")  # the suspension 01-13 → 02-13 shaded
    page = browser.find_element(By.TAG_NAME, "body").text
    assert not re.search(r"(?<!\d)\d{17}[\dXx](?!\d)", page) and "王小明" not in page
    browser.save_screenshot(str(artifacts / "inspect-case-file.png"))
    assert (artifacts / "inspect-case-file.png").stat().st_size > 10_000
    # the print view: same case file, no navigation
    browser.get(url + f"institutions/{PHARMACY}?print=1")
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("class") == "print"
    assert not browser.find_element(By.ID, "pdf").is_displayed()
    browser.save_screenshot(str(artifacts / "inspect-print.png"))
    print(f"screenshots: {artifacts}")
