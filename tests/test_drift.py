"""Drift checks (smallfleet drift), the gateway's drift gauges, and `smallfleet watch`."""

from __future__ import annotations

import json
import shutil
import time

import httpx
import pytest
from cli_process import cli
from gateway_process import GatewayProcess, metric
from openai import OpenAI

from smallfleet.data import read_rows
from smallfleet.flywheel.monitor import DriftSettings, check_drift, fleet_targets
from smallfleet.models.embed import SentenceEmbedder
from smallfleet.store import Database
from smallfleet.store.ledger import SPECIALIST_TIER, new_row
from smallfleet.tasks import load_specialist

TASK = "support_ticket"


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
    sms = [r["text"] for _, r in read_rows(shared_datasets / "sms_spam" / "all.jsonl")][: len(tickets)]

    same = f"sqlite:///{tmp_path / 'same.db'}"
    log(same, answered(fleet, tickets))
    out = tmp_path / "same.json"
    cli("drift", str(fleet), "--task", TASK, "--db", same, "--json", str(out))
    report = json.loads(out.read_text())
    signals = report["signals"]
    assert set(signals) == {"input", "confidence", "escalation_rate", "answer_mix", "router_none_rate"}
    assert signals["input"]["n"] == len(tickets) and signals["input"]["p_value"] > 0.05
    assert signals["input"]["drift"] is False and signals["answer_mix"]["drift"] is False
    assert signals["router_none_rate"]["drift"] is None and "routed" in signals["router_none_rate"]["reason"]

    other = f"sqlite:///{tmp_path / 'other.db'}"
    log(other, answered(fleet, sms))
    tasks, router = fleet_targets(fleet, TASK)
    embedder = SentenceEmbedder()
    report = check_drift(tasks, router, Database(other), DriftSettings(), embedder)
    signals = report["tasks"][TASK]["signals"]
    assert report["drift"] is True
    assert signals["input"]["drift"] is True and signals["input"]["p_value"] < 0.01
    assert signals["answer_mix"]["drift"] is True and signals["confidence"]["drift"] is True

    # a specialist folder from before drift baselines: the input signal says why, the others still work
    (fleet / TASK / "drift_baseline.json").rename(tmp_path / "kept.json")
    try:
        report = check_drift(tasks, router, Database(other), DriftSettings(), embedder)
    finally:
        (tmp_path / "kept.json").rename(fleet / TASK / "drift_baseline.json")
    signals = report["tasks"][TASK]["signals"]
    assert signals["input"]["drift"] is None and "drift_baseline.json" in signals["input"]["reason"]
    assert signals["answer_mix"]["drift"] is True


def test_gateway_exports_drift_signals_computed_in_the_background(fleet, quickstart_data, tmp_path):
    tickets = [r["text"] for _, r in read_rows(quickstart_data / "tickets_test.jsonl")][:40]
    url = f"sqlite:///{tmp_path / 'g.db'}"
    with GatewayProcess(fleet, "--db", url, "--drift-every", "1") as gw:
        client = OpenAI(base_url=gw.base_url, api_key="unused")
        for text in tickets:
            client.chat.completions.create(model=f"fleet/{TASK}", messages=[{"role": "user", "content": text}])
        sample = f'smallfleet_drift{{signal="input",task="{TASK}"}}'
        used = f'smallfleet_drift_requests{{signal="input",task="{TASK}"}}'
        deadline = time.monotonic() + 180
        page = ""
        while metric(page, used) != len(tickets):  # a check that ran once every request was in the log
            assert time.monotonic() < deadline, page
            time.sleep(0.5)
            page = httpx.get(gw.base_url.removesuffix("/v1") + "/metrics").text
    assert metric(page, sample) == 0
    assert 0 <= metric(page, f'smallfleet_drift_p_value{{signal="confidence",task="{TASK}"}}') <= 1
    # the other task has no traffic: its signals are not computed, only their request count (0) is shown
    assert metric(page, 'smallfleet_drift_requests{signal="input",task="review_sentiment"}') == 0
    assert metric(page, 'smallfleet_drift{signal="input",task="review_sentiment"}') is None


TRAFFIC = [
    ("my invoice shows a charge I never agreed to", "billing"), ("refund still not on my card after 10 days", "billing"),
    ("why was I billed for two subscriptions this month", "billing"), ("the parcel went to my old address", "shipping"),
    ("courier says delivered but nothing at my door", "shipping"), ("can you ship to Norway", "shipping"),
    ("I cannot log in since the password reset", "account"), ("please delete my account and my data", "account"),
]  # fmt: skip


def test_watch_once_retrains_only_when_enough_new_labelled_rows(fleet_dir, tmp_path):
    fleet = tmp_path / "fleet"
    shutil.copytree(fleet_dir, fleet, ignore=shutil.ignore_patterns("*.db*", "*.log"))
    index = json.loads((fleet / "fleet.json").read_text())
    index["retrain_when"] = {"min_new_rows": 6, "on_drift": False, "check_every": 3600}  # as `retrain_when:` records it
    (fleet / "fleet.json").write_text(json.dumps(index))
    url = f"sqlite:///{tmp_path / 'w.db'}"
    upstream_rows = [new_row(request_id=f"chatcmpl-w{i}", task=TASK, tier="frontier", escalated=True, status="ok",
                             http_status=200, input=text, output=label) for i, (text, label) in enumerate(TRAFFIC)]  # fmt: skip
    log(url, upstream_rows[:3])
    before = (fleet / "fleet.json").read_bytes()
    quiet = cli("watch", str(fleet), "--once", "--db", url)
    assert f"{TASK}: no retraining (3 new labelled rows < min_new_rows 6)" in quiet.stderr
    assert (fleet / "fleet.json").read_bytes() == before

    log(url, upstream_rows[3:])
    done = cli("watch", str(fleet), "--once", "--db", url)
    assert f"{TASK}: retraining (8 new labelled rows >= min_new_rows 6)" in done.stderr
    assert "review_sentiment: no retraining (0 new labelled rows" in done.stderr
    versions = json.loads(cli("versions", str(fleet), "--task", TASK, "--json", "--db", url).stdout)
    assert [v["version"] for v in versions] == ["v1", "v2"] and (fleet / "_versions" / TASK / "v2" / "gate.json").is_file()
    # the rows are used now: the next check has nothing to do
    again = cli("watch", str(fleet), "--once", "--db", url)
    assert f"{TASK}: no retraining (0 new labelled rows" in again.stderr


def test_retrain_when_is_read_from_the_fleet_yaml(tmp_path, quickstart_data):
    from smallfleet.config import FleetSpec
    from smallfleet.errors import ConfigError

    yaml = tmp_path / "fleet.yaml"
    task = f"tasks:\n  - name: t\n    train: {quickstart_data / 'tickets_train.jsonl'}\n    fields: {{label: category}}\n"
    yaml.write_text(task + "retrain_when:\n  min_new_rows: 200\n  on_drift: true\n  check_every: 600\n")
    when = FleetSpec.from_file(yaml).retrain_when
    assert (when.min_new_rows, when.on_drift, when.check_every, when.active) == (200, True, 600.0, True)
    yaml.write_text(task + "retrain_when:\n  min_new_rows: 0\n")
    with pytest.raises(ConfigError, match="min_new_rows must be at least 1"):
        FleetSpec.from_file(yaml)
    yaml.write_text(task + "retrain_when:\n  every_day: true\n")
    with pytest.raises(ConfigError, match="unknown key 'every_day'"):
        FleetSpec.from_file(yaml)


def test_drift_tests_tell_a_shift_from_sampling_noise():
    import numpy as np

    from smallfleet.flywheel.drift import mix_test, mmd_test, rate_test

    rng = np.random.default_rng(0)
    baseline = rng.normal(size=(200, 32))
    assert mmd_test(rng.normal(size=(80, 32)), baseline, 0.01).drift is False
    shifted = mmd_test(rng.normal(size=(80, 32)) + 0.5, baseline, 0.01)
    assert shifted.drift is True and shifted.p_value < 0.01
    mix = {"billing": 100, "shipping": 100, "account": 100}
    assert mix_test(["billing", "shipping", "account"] * 30, mix, 0.01).drift is False
    assert mix_test(["billing"] * 80 + ["shipping"] * 10, mix, 0.01).drift is True
    assert rate_test("escalation_rate", 30, 100, 0.3, 0.01).drift is False
    assert rate_test("escalation_rate", 60, 100, 0.3, 0.01).drift is True
