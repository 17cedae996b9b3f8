"""Real MiniLM specialists trained on the shipped quickstart data."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ticket_task

from smallfleet.errors import DataError, ModelNotFoundError, SpecialistError
from smallfleet.tasks import load_specialist
from smallfleet.tasks.classify.train import train_classifier
from smallfleet.training.artifacts import read_json, staged_folder


def test_trained_specialist_scores_and_saves_everything(ticket_specialist):
    files = {p.name for p in ticket_specialist.iterdir()}
    assert {"specialist.json", "metrics.json", "calibration.json", "README.md", "encoder", "head.safetensors"} <= files
    assert {"reliability.png", "risk_coverage.png"} <= files
    manifest = read_json(ticket_specialist / "specialist.json")
    assert manifest["labels"] == ["account", "billing", "product_question", "returns", "shipping", "technical"]
    assert len(manifest["data"]["fingerprint"]["sha256"]) == 64
    test = read_json(ticket_specialist / "metrics.json")["test"]
    assert test["n"] == 90
    assert test["accuracy"] >= 0.8, test
    assert test["macro_f1"] >= 0.8
    assert test["coverage"]["0.8"] >= test["coverage"]["1.0"]
    cal = manifest["calibration"]
    assert cal["temperature"] > 0 and 0 <= cal["ece_after"] < 0.2
    card = (ticket_specialist / "README.md").read_text()
    assert "support_ticket" in card and "tickets_train.jsonl" in card and f"{test['accuracy']:.4f}" in card


def test_predictions_are_calibrated_probabilities_with_top_k(ticket_specialist):
    model = load_specialist(ticket_specialist)
    preds = model.predict(["I was charged twice for order 1182, please refund one", "The app crashes on login"])
    assert [p.label for p in preds] == ["billing", "technical"]
    for p in preds:
        assert 0 < p.confidence <= 1 and len(p.top_k) == 3
        assert p.top_k[0] == (p.label, p.confidence)
        assert sum(c for _, c in p.top_k) <= 1 + 1e-6
    threshold, coverage = model.confidence_curve().threshold_for(0.9)
    assert 0 <= threshold <= 1 and 0 <= coverage <= 1


def test_save_load_round_trip_gives_identical_predictions(ticket_specialist, quickstart_data):
    texts = [json.loads(line)["text"] for line in (quickstart_data / "tickets_test.jsonl").open()][:40]
    first = load_specialist(ticket_specialist).probabilities(texts)
    second = load_specialist(ticket_specialist).probabilities(texts)
    assert torch.equal(first, second)


def test_existing_specialist_is_not_overwritten_without_force(ticket_specialist, quickstart_data):
    before = (ticket_specialist / "encoder" / "model.safetensors").stat().st_mtime_ns
    with pytest.raises(SpecialistError, match="already holds a specialist; pass --force"):
        train_classifier(ticket_task(quickstart_data), ticket_specialist)
    assert (ticket_specialist / "encoder" / "model.safetensors").stat().st_mtime_ns == before


def test_unknown_base_and_bad_data_fail_before_touching_disk(tmp_path, quickstart_data):
    task = ticket_task(quickstart_data)
    task.base = "no-such-model"
    with pytest.raises(ModelNotFoundError, match="Packaged models"):
        train_classifier(task, tmp_path / "out")
    task = ticket_task(quickstart_data)
    task.fields.label = "intent"
    with pytest.raises(DataError, match="field 'intent' does not exist"):
        train_classifier(task, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []


def test_failure_while_saving_leaves_previous_folder_and_no_partials(tmp_path):
    out = tmp_path / "spec"
    with staged_folder(out) as tmp:
        (tmp / "specialist.json").write_text("{}")
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError), staged_folder(out, force=True) as tmp:
        (tmp / "specialist.json").write_text("{}")
        (tmp / "weights").write_text("v2-half-written")
        raise RuntimeError("disk full")
    assert (out / "weights").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["spec"]


def test_killed_training_run_leaves_previous_specialist_intact(ticket_specialist, quickstart_data, tmp_path):
    texts = ["where is my parcel", "reset my password please"]
    before = load_specialist(ticket_specialist).probabilities(texts)
    digest_before = (ticket_specialist / "specialist.json").read_text()
    cmd = [
        sys.executable, "-m", "smallfleet", "train",
        "--train", str(quickstart_data / "tickets_train.jsonl"), "--label-field", "category",
        "--out", str(ticket_specialist), "--force", "--epochs", "50",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 120
    for line in proc.stderr:  # wait until training has started, then kill it hard
        if "train /" in line or time.monotonic() > deadline:
            break
    time.sleep(3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode != 0
    assert (ticket_specialist / "specialist.json").read_text() == digest_before
    assert torch.equal(load_specialist(ticket_specialist).probabilities(texts), before)


def test_same_seed_gives_identical_weights(tmp_path, quickstart_data):
    from safetensors.torch import load_file

    task = ticket_task(quickstart_data)
    task.settings = task.settings.replace(epochs=1)
    task.test = None
    heads = []
    for name in ("a", "b"):
        train_classifier(task, tmp_path / name)
        heads.append(load_file(str(tmp_path / name / "head.safetensors")))
    assert heads[0].keys() == heads[1].keys()
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])


def test_match_label_maps_free_text_replies():
    from smallfleet.tasks.classify.specialist import match_label

    labels = ["card_arrival", "card", "refund_request"]
    assert match_label("card_arrival", labels) == "card_arrival"
    assert match_label("Card Arrival.", labels) == "card_arrival"
    assert match_label("The label is: refund_request", labels) == "refund_request"
    assert match_label("card", labels) == "card"
    assert match_label("I am not sure", labels) is None
    assert match_label("either refund_request or card_arrival", labels) is None
