"""Specialists trained on slices of the real public datasets in ../shared/datasets
(found through SMALLFLEET_DATASETS; these fail, not skip, when missing under CI=true)."""

import json

from smallfleet.config import FleetSpec
from smallfleet.data import holdout_split, load_examples
from smallfleet.tasks import TaskSpec
from smallfleet.tasks.classify.metrics import classification_metrics
from smallfleet.training.settings import TrainSettings
from smallfleet.tasks import load_specialist
from smallfleet.tasks.classify.train import train_classifier


def write(rows, path, label_field="label"):
    path.write_text("".join(json.dumps({"text": r.text, label_field: r.label}) + "\n" for r in rows))
    return path


def test_sms_spam_specialist_beats_bound(shared_datasets, tmp_path):
    rows = load_examples(shared_datasets / "sms_spam" / "all.jsonl")
    rest, sample, _ = holdout_split(rows, 0.25, seed=7, label=lambda ex: ex.label)  # ~1,400 rows, spam share kept
    train, test, _ = holdout_split(sample, 0.3, seed=7, label=lambda ex: ex.label)
    task = TaskSpec(
        name="sms_spam",
        train=write(train, tmp_path / "train.jsonl"),
        test=write(test, tmp_path / "test.jsonl"),
        settings=TrainSettings(epochs=2, max_length=64),
    )
    metrics = train_classifier(task, tmp_path / "spec")["test"]
    assert metrics["n"] == len(test) > 350
    assert metrics["accuracy"] >= 0.95, metrics
    assert metrics["per_label"]["spam"]["f1"] >= 0.85
    assert metrics["coverage"]["0.9"] >= metrics["accuracy"] - 1e-9


def test_banking77_slice_through_a_fleet_file_with_dataset_variable(shared_datasets, tmp_path):
    labels = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed", "pin_blocked"]
    per_label = {"train": 60, "test": 40}  # the files are grouped by label: take a quota of each
    for split, quota in per_label.items():
        kept, counts = [], dict.fromkeys(labels, 0)
        for line in (shared_datasets / "banking77" / f"{split}.jsonl").read_text().splitlines():
            label = json.loads(line)["label"]
            if label in counts and counts[label] < quota:
                counts[label] += 1
                kept.append(line)
        assert set(counts.values()) == {quota}
        (tmp_path / f"{split}.jsonl").write_text("\n".join(kept) + "\n")
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(
        "name: b77\ntasks:\n  - {name: intents, train: train.jsonl, test: test.jsonl, "
        "training: {epochs: 3, max_length: 48}}\n"
        "  - {name: check, train: $SMALLFLEET_DATASETS/sms_spam/all.jsonl}\n"
    )
    fleet = FleetSpec.from_file(fleet_file)
    assert fleet.task("check").train == shared_datasets / "sms_spam" / "all.jsonl"
    metrics = train_classifier(fleet.task("intents"), tmp_path / "intents")["test"]
    assert metrics["accuracy"] >= 0.85, metrics
    model = load_specialist(tmp_path / "intents")
    test = load_examples(tmp_path / "test.jsonl")
    again = classification_metrics([e.label for e in test], model.predict([e.text for e in test]))
    assert abs(again["accuracy"] - metrics["accuracy"]) < 1e-9
