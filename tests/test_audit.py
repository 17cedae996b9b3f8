"""Live audits: a share of accepted answers also goes to the upstream tier after the response,
and live quality is checked against the guarantee (served by a real gateway process)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

import httpx
import openai
import pytest
from fake_upstream import FakeUpstream
from gateway_process import GatewayProcess, metric

TICKET = "I was charged twice for order 88412, please refund the extra payment"


def costs(fleet_dir, db) -> dict:
    out = subprocess.run([sys.executable, "-m", "smallfleet", "costs", str(fleet_dir), "--db", f"sqlite:///{db}", "--json"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return json.loads(out)


def audits_stored(db) -> int:
    try:
        return sqlite3.connect(db).execute("select count(*) from judgements where source = 'audit'").fetchone()[0]
    except sqlite3.OperationalError:  # not migrated yet
        return 0


def wait_for_audits(db, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while audits_stored(db) < n:
        assert time.monotonic() < deadline, f"only {audits_stored(db)} of {n} audits stored"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream() as fake:
        yield fake


def test_audits_check_live_quality_after_the_response_and_alert_when_it_breaks(fleet_dir, upstream, tmp_path):
    db = tmp_path / "audit.db"
    args = ["--db", f"sqlite:///{db}", "--escalate-to", upstream.base_url, "--escalate-model", "frontier",
            "--escalate-input-price", "2.5", "--escalate-output-price", "10", "--threshold", "support_ticket=0",
            "--audit-rate", "1"]  # fmt: skip
    upstream.mode, upstream.delay = "reply:billing", 0.0
    with GatewayProcess(fleet_dir, *args) as gw:
        assert "live audits: 100.0% of accepted answers also go to tier escalate" in " ".join(gw.output().split())
        client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        ask = lambda: client.chat.completions.create(model="fleet/support_ticket",  # noqa: E731
                                                     messages=[{"role": "user", "content": TICKET}])
        answers = [ask() for _ in range(5)]
        assert all(a.choices[0].message.content == "billing" and a.model_extra["smallfleet"]["tier"] == "specialist"
                   for a in answers)  # fmt: skip
        wait_for_audits(db, 5)

        upstream.delay = 2.0  # the audit comes after the response and never delays it
        slow = ask()
        assert audits_stored(db) == 5  # answered while the audit's upstream call is still waiting
        wait_for_audits(db, 6)
        upstream.delay = 0.0
        row = sqlite3.connect(db).execute("select task, source, accepted, agrees, answer, reference, tier, cost_usd "
                                          "from judgements where request_id = ?", (slow.id,)).fetchone()  # fmt: skip
        assert row[:7] == ("support_ticket", "audit", 1, 1, "billing", "billing", "escalate") and row[7] > 0
        metrics = httpx.get(f"http://127.0.0.1:{gw.port}/metrics").text
        assert metric(metrics, 'smallfleet_audits_total{outcome="agree",task="support_ticket"}') == 6
        assert metric(metrics, 'smallfleet_live_quality_alert{task="support_ticket"}') == 0

        upstream.mode = "reply:shipping"  # the frontier now disagrees with every accepted answer
        for _ in range(6):
            ask()
        wait_for_audits(db, 12)
        deadline = time.monotonic() + 30
        while "below its guarantee" not in gw.output():
            assert time.monotonic() < deadline, gw.output()
            time.sleep(0.1)
        metrics = httpx.get(f"http://127.0.0.1:{gw.port}/metrics").text
        assert metric(metrics, 'smallfleet_live_quality_alert{task="support_ticket"}') == 1
        assert metric(metrics, 'smallfleet_live_quality{task="support_ticket"}') == pytest.approx(0.5)
    summary = costs(fleet_dir, db)
    live = summary["live_quality"]["support_ticket"]
    assert (live["judged"], live["agreed"], live["audits"], live["alert"]) == (12, 6, 12, True)
    assert live["low"] < 0.5 < live["high"] and live["bound"] == 0.95 and live["p_value"] < 0.05
    assert live["audit_cost_usd"] == pytest.approx(12 * (100 * 2.5 + 10 * 10) / 1e6)
    assert summary["audit_cost_usd"] == pytest.approx(live["audit_cost_usd"])
    assert summary["escalated"] == 0 and summary["requests"] == 12  # audits are not escalations; their spend is apart
    assert summary["cost_usd"] < live["audit_cost_usd"]
    table = subprocess.run([sys.executable, "-m", "smallfleet", "costs", str(fleet_dir), "--db", f"sqlite:///{db}"],
                           capture_output=True, text=True, check=True, env={**os.environ, "COLUMNS": "160"}).stdout  # fmt: skip
    assert "live quality of accepted answers" in table and "BELOW" in table
    with GatewayProcess(fleet_dir, *args) as gw:  # a restart keeps the verdict
        metrics = httpx.get(f"http://127.0.0.1:{gw.port}/metrics").text
        assert metric(metrics, 'smallfleet_live_quality_alert{task="support_ticket"}') == 1


def test_without_an_upstream_tier_nothing_is_audited(fleet_dir, tmp_path):
    db = tmp_path / "none.db"
    with GatewayProcess(fleet_dir, "--db", f"sqlite:///{db}", "--threshold", "support_ticket=0", "--audit-rate", "1") as gw:
        assert "no tier: none has a model, audits are off" in " ".join(gw.output().split())  # across wrapping
        client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        client.chat.completions.create(model="fleet/support_ticket", messages=[{"role": "user", "content": TICKET}])
    assert audits_stored(db) == 0 and costs(fleet_dir, db)["live_quality"] == {}
