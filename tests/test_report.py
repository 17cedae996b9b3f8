"""`smallfleet report`: one self-contained HTML page, opened in a real headless Chromium."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time

import openai
import pytest
from browser import broken_images, chromium, console_errors
from fake_upstream import FakeUpstream
from gateway_process import GatewayProcess
from selenium.webdriver.common.by import By

TICKETS = ["I was charged twice for order 88412, please refund the extra payment",
           "The tracking page has said 'label created' for six days now",
           "How do I reset my password? The link in the email expired."]  # fmt: skip
REVIEWS = ["Stopped charging after a week and support never answered.", "Does what it says, nothing more."]


@pytest.fixture(scope="module")
def served(fleet_dir, tmp_path_factory):
    """A request log with local answers, escalations and live audits."""
    db = tmp_path_factory.mktemp("report") / "log.db"
    with FakeUpstream() as upstream:
        upstream.mode = "reply:billing"
        args = ["--db", f"sqlite:///{db}", "--escalate-to", upstream.base_url, "--escalate-model", "frontier",
                "--escalate-input-price", "2.5", "--escalate-output-price", "10", "--threshold", "support_ticket=0",
                "--threshold", "review_sentiment=2", "--audit-rate", "1"]  # fmt: skip
        with GatewayProcess(fleet_dir, *args) as gw:
            client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
            labels = [client.chat.completions.create(model="fleet/support_ticket", messages=[
                {"role": "user", "content": text}]).choices[0].message.content for text in TICKETS * 2]  # fmt: skip
            deadline = time.monotonic() + 60
            while audits(db) < len(TICKETS) * 2:  # every accepted ticket is audited in the background
                assert time.monotonic() < deadline, f"{audits(db)} audits stored"
                time.sleep(0.1)
            upstream.mode = "reply:negative"  # only now: an audit still waiting would get this reply
            for text in REVIEWS:
                client.chat.completions.create(model="fleet/review_sentiment", messages=[{"role": "user", "content": text}])
    return db, labels.count("billing")  # the frontier says billing every time: audits agree on these


def audits(db) -> int:
    try:
        return sqlite3.connect(db).execute("select count(*) from judgements where source = 'audit'").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def report(fleet_dir, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smallfleet", "report", str(fleet_dir), *args], capture_output=True,
                          text=True)  # fmt: skip


def test_report_is_one_self_contained_page_that_a_browser_shows_whole(fleet_dir, served, tmp_path):
    db, agreed = served
    out = tmp_path / "report.html"
    done = report(fleet_dir, "--db", f"sqlite:///{db}", "--out", str(out))
    assert done.returncode == 0, done.stderr
    html = out.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # one file, nothing beside it
    assert not re.search(r"""(src|href)=["'](https?:|//)""", html) and "<script" not in html and "<link" not in html
    images = re.findall(r'<img src="([^"]+)"', html)
    # fleet spend; per task risk-coverage, reliability, cost-quality, novelty, traffic; live quality where answers were judged
    assert len(images) == 1 + 6 + 5 and all(i.startswith("data:image/png;base64,") for i in images)

    with chromium() as driver:
        driver.get(out.as_uri())
        driver.save_screenshot(str(tmp_path.parent / "report.png"))
        assert broken_images(driver) == [] and console_errors(driver) == []
        shown = {img.get_attribute("alt") for img in driver.find_elements(By.TAG_NAME, "img") if img.size["width"] > 100}
        for task in ("support_ticket", "review_sentiment"):
            for plot in ("Risk-coverage", "Reliability", "Cost vs quality", "Novelty", "Traffic and spend"):
                assert f"{task}: {plot}" in shown
        assert "support_ticket: Live quality" in shown  # review_sentiment escalated everything: nothing to judge
        text = driver.find_element(By.TAG_NAME, "body").text
        assert "8 requests logged" in " ".join(text.split()) or "8\nrequests logged" in text
        live = re.search(r"Live: (\d+) of (\d+) judged accepted answers right", text)
        assert live and live.groups() == (str(agreed), "6"), text[:2000]  # every accepted ticket was audited
        rows = driver.find_elements(By.CSS_SELECTOR, "#summary tbody tr")
        assert [r.find_element(By.TAG_NAME, "a").text for r in rows] == ["support_ticket", "review_sentiment"]
        assert "most confused label pairs" in text and "SGR" in text

        # the checks above can fail: a broken plot and a script error are both caught
        broken = tmp_path / "broken.html"
        broken.write_text(html.replace(images[1], "data:image/png;base64,AAAA", 1).replace(
            "</body>", "<script>console.error('boom')</script></body>"))  # fmt: skip
        driver.get(broken.as_uri())
        assert len(broken_images(driver)) == 1 and any("boom" in m for m in console_errors(driver))


def test_report_of_a_fleet_never_served_shows_what_training_measured(fleet_dir, tmp_path):
    out = tmp_path / "r.html"
    done = report(fleet_dir, "--db", f"sqlite:///{tmp_path / 'empty.db'}", "--out", str(out))
    assert done.returncode == 0, done.stderr
    html = out.read_text()
    assert "0</b>requests logged" in html and len(re.findall(r'<img src="data:image/png', html)) == 2 * 4
