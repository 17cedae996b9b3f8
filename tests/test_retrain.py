"""Retraining a task from its labelled traffic, gated against the served version, crash-safe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from cli_process import cli
from fleet_copy import copy_fleet

from smallfleet.flywheel.gate import GateSettings, decide, mcnemar_worse
from smallfleet.store import Database
from smallfleet.store.ledger import new_row
from smallfleet.tasks.specialist import confidence_curve

# requests the frontier answered (distillation), none of them in the task's test file (the frozen set)
TRAFFIC = [
    ("my invoice shows a charge I never agreed to", "billing"), ("refund still not on my card after 10 days", "billing"),
    ("why was I billed for two subscriptions this month", "billing"), ("the parcel went to my old address", "shipping"),
    ("courier says delivered but nothing at my door", "shipping"), ("can you ship to Norway", "shipping"),
    ("I cannot log in since the password reset", "account"), ("please delete my account and my data", "account"),
    ("the app crashes when I open settings", "technical"), ("sync stopped working after the update", "technical"),
    ("how do I send back a jacket that does not fit", "returns"), ("does the blender come with a warranty", "product_question"),
]  # fmt: skip


def log_traffic(url: str, rows) -> None:
    db = Database(url)
    with db.engine.begin() as conn:
        conn.execute(db.requests.insert(), [
            new_row(request_id=f"chatcmpl-t{i}", task="support_ticket", tier="frontier", escalated=True, status="ok",
                    http_status=200, input=text, output=label) for i, (text, label) in enumerate(rows)])  # fmt: skip


@pytest.fixture
def fleet(fleet_dir, tmp_path):
    return copy_fleet(fleet_dir, tmp_path / "fleet")


def test_retrain_gates_a_candidate_and_a_crash_leaves_the_served_version(fleet, tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    before = (fleet / "fleet.json").read_bytes()
    nothing = cli("retrain", str(fleet), "--task", "support_ticket", "--db", url)
    assert "no new labelled rows" in nothing.stderr and (fleet / "fleet.json").read_bytes() == before
    log_traffic(url, TRAFFIC)

    # Ctrl-C in the middle of training: nothing registered, nothing served differently, no half version
    proc = subprocess.Popen([sys.executable, "-m", "smallfleet", "retrain", str(fleet), "--task", "support_ticket",
                             "--db", url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    seen = ""
    deadline = time.monotonic() + 300
    while "epoch 1/" not in seen:
        assert time.monotonic() < deadline and proc.poll() is None, seen
        seen += proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert (fleet / "fleet.json").read_bytes() == before
    assert not (fleet / "_versions" / "support_ticket" / "v2").exists()

    out = tmp_path / "retrain.json"
    cli("retrain", str(fleet), "--task", "support_ticket", "--db", url, "--no-promote", "--json", str(out),
        "--calibrate-on", "trusted")  # fmt: skip
    result = json.loads(out.read_text())
    assert (result["candidate"], result["promoted"], result["added_rows"]) == ("v2", False, len(TRAFFIC))
    gate = result["gate"]
    assert [c["check"] for c in gate["checks"]] == ["not worse on frozen set", "not worse on fresh traffic",
                                                    "calibrated", "saves at least as much"]  # fmt: skip
    assert gate["tests"]["frozen set"]["n"] == 90  # the task's test file
    assert gate["tests"]["fresh traffic"]["n"] == 2  # a seeded fifth (2) of the 12 new rows, kept out of training
    v2 = fleet / "_versions" / "support_ticket" / "v2"
    report = json.loads((v2 / "gate.json").read_text())
    assert report["decision"]["passed"] == gate["passed"] and "McNemar" in (v2 / "GATE.md").read_text()
    # no validation file, --calibrate-on trusted: calibrated on a slice of the task's own rows, not the frontier's answers
    assert report["calibrated_on"].endswith("upstream answers only trained on")
    assert len(confidence_curve(v2).confidence) == int(report["calibrated_on"].split()[0])
    versions = json.loads(cli("versions", str(fleet), "--task", "support_ticket", "--json").stdout)
    assert [(v["version"], v["served"]) for v in versions] == [("v1", True), ("v2", False)]
    assert versions[1]["gate"]["against"] == "v1" and versions[1]["metrics"]["test"]["n"] == 90
    again = cli("retrain", str(fleet), "--task", "support_ticket", "--db", url)
    assert "no new labelled rows" in again.stderr  # the 12 rows are v2's now


def test_the_gate_refuses_a_worse_candidate_and_passes_an_equal_one():
    right = [True] * 40
    worse = mcnemar_worse(right, [True] * 30 + [False] * 10)
    assert worse["served_only_right"] == 10 and worse["p_worse"] < 0.01
    assert mcnemar_worse(right, right)["p_worse"] == 1.0
    settings = GateSettings(alpha=0.05, max_ece=0.1)
    confident = [0.97] * 40
    ok = decide({"frozen set": {"served": right, "candidate": right}}, confident, right, 0.5, 0.6, settings)
    assert ok["passed"] and ok["why"] == "every check holds"
    bad = decide({"frozen set": {"served": right, "candidate": [True] * 30 + [False] * 10}}, confident, right, 0.5, 0.4,
                 settings)  # fmt: skip
    assert not bad["passed"] and bad["why"] == "failed: not worse on frozen set, saves at least as much"
    overconfident = decide({"s": {"served": right, "candidate": right}}, [0.99] * 40, [True] * 20 + [False] * 20,
                           0.5, 0.5, settings)  # fmt: skip
    assert [c["passed"] for c in overconfident["checks"]] == [True, False, True]
