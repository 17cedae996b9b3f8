"""Shared fixtures: the shipped quickstart data, the shared real datasets, and
specialists trained once per session (real MiniLM, real data, CPU)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from smallfleet.settings import datasets_dir
from smallfleet.tasks import FieldMap, TaskSpec
from smallfleet.training.settings import TrainSettings

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart"
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def quickstart_data() -> Path:
    return QUICKSTART / "data"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The shared public datasets; a clear failure (not a skip) when missing under CI."""
    path = datasets_dir()
    if not (path / "README.md").is_file():
        message = f"shared datasets not found at {path}; set SMALLFLEET_DATASETS to their folder"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def ticket_task(data: Path, **training) -> TaskSpec:
    """The quickstart support-ticket task with short training for tests."""
    return TaskSpec(
        name="support_ticket",
        train=data / "tickets_train.jsonl",
        test=data / "tickets_test.jsonl",
        fields=FieldMap(text="text", label="category"),
        settings=TrainSettings(epochs=4, **training),
    )


def review_task(data: Path, **training) -> TaskSpec:
    """The quickstart review-sentiment task (CSV) with short training for tests."""
    return TaskSpec(
        name="review_sentiment",
        train=data / "reviews_train.csv",
        test=data / "reviews_test.csv",
        fields=FieldMap(text="review", label="rating_label"),
        settings=TrainSettings(epochs=4, **training),
    )


@pytest.fixture(scope="session")
def fleet_dir(tmp_path_factory, quickstart_data) -> Path:
    """The quickstart's two tasks and their router (with out-of-scope texts), trained once per session,
    with the human review queue as the last escalation tier."""
    from smallfleet.config import FleetSpec, RouterSpec, TierSpec
    from smallfleet.fleet import train_fleet

    spec = FleetSpec(
        name="testfleet",
        tasks=[ticket_task(quickstart_data), review_task(quickstart_data)],
        tiers=[TierSpec(name="human", kind="review")],
        router=RouterSpec(out_of_scope=quickstart_data / "out_of_scope.jsonl", training=TrainSettings(epochs=3)),
    )
    out = tmp_path_factory.mktemp("fleet") / "testfleet"
    train_fleet(spec, out)
    return out


@pytest.fixture(scope="session")
def ticket_specialist(fleet_dir) -> Path:
    """A real MiniLM support-ticket specialist (the test fleet's), trained once for the whole session."""
    return fleet_dir / "support_ticket"
