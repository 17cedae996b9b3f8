"""Drift checks (smallfleet drift), the gateway's drift gauges, and `smallfleet watch`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import httpx
import pytest
from gateway_process import GatewayProcess
from openai import OpenAI

from smallfleet.data import read_rows
from smallfleet.store import Database
from smallfleet.store.ledger import SPECIALIST_TIER, new_row
from smallfleet.tasks import load_specialist

TASK = "support_ticket"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smallfleet", *args], capture_output=True, text=True, check=True)


def metric(text: str, sample: str) -> float | None:
    """The value of one Prometheus sample, e.g. `name{label="x"}`, in a /metrics page."""
    for line in text.splitlines():
        if line.rsplit(" ", 1)[0] == sample:
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture(scope="module")
def fleet(fleet_dir, tmp_path_factory):
    copy = tmp_path_factory.mktemp("drift") / "fleet"
    shutil.copytree(fleet_dir, copy, ignore=shutil.ignore_patterns("*.db*", "*.log"))
    return copy


def answered(fleet, texts: list[str]) -> list[dict]:
    """Request-log rows of the ticket specialist answering `texts` (as the gateway logs them, escalation aside)."""
    specialist = load_specialist(fleet / TASK)
    answers = specialist.answer(texts)
    return [new_row(request_id=f"chatcmpl-d{i}", task=TASK, tier=SPECIALIST_TIER, status="ok", http_status=200,
                    input=text, output=a.content, confidence=a.confidence, version="v1")
            for i, (text, a) in enumerate(zip(texts, answers))]  # fmt: skip


def log(url: str, rows: list[dict]) -> None:
    db = Database(url)
    with db.engine.begin() as conn:
        conn.execute(db.requests.insert(), rows)


def test_drift_stays_quiet_on_traffic_like_the_training_data_and_fires_on_other_traffic(fleet, quickstart_data,
                                                                                       shared_datasets, tmp_path):  # fmt: skip
    tickets = [r["text"] for _, r in read_rows(quickstart_data / "tickets_test.jsonl")]
    sms = [r["text"] for _, r in read_rows(shared_datasets / "sms_spam" / "all.jsonl")][:90]

    same = f"sqlite:///{tmp_path / 'same.db'}"
    log(same, answered(fleet, tickets))
    out = tmp_path / "same.json"
    cli("drift", str(fleet), "--task", TASK, "--db", same, "--json", str(out))
    report = json.loads(out.read_text())
    signals = report["signals"]
    print({k: (s["statistic"], s["p_value"], s["drift"], s["reason"]) for k, s in signals.items()})
    assert set(signals) == {"input", "confidence", "escalation_rate", "answer_mix"}
    assert signals["input"]["drift"] is False and signals["input"]["n"] == len(tickets)

    other = f"sqlite:///{tmp_path / 'other.db'}"
    log(other, answered(fleet, sms))
    out = tmp_path / "other.json"
    cli("drift", str(fleet), "--task", TASK, "--db", other, "--json", str(out))
    report = json.loads(out.read_text())
    signals = report["signals"]
    print({k: (s["statistic"], s["p_value"], s["drift"], s["reason"]) for k, s in signals.items()})
    assert report["drift"] is True
    assert signals["input"]["drift"] is True
