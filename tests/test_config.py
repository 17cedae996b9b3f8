from pathlib import Path

import pytest

from smallfleet.config import FleetSpec
from smallfleet.training.settings import TrainSettings
from smallfleet.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", sorted(ROOT.glob("examples/**/*.yaml")), ids=lambda p: p.parent.name)
def test_every_shipped_fleet_file_loads_and_points_at_existing_data(path):
    fleet = FleetSpec.from_file(path)
    assert fleet.tasks
    for task in fleet.tasks:
        for f in (task.train, task.valid, task.test):
            assert f is None or f.is_file(), f


def write(tmp_path, text):
    p = tmp_path / "fleet.yaml"
    p.write_text(text)
    return p


def test_paths_resolve_relative_to_the_yaml_and_defaults_merge(tmp_path):
    fleet = FleetSpec.from_file(
        write(
            tmp_path,
            "name: f\ndefaults: {training: {epochs: 3}}\n"
            "tasks:\n  - {name: a, train: d/a.jsonl, training: {batch_size: 8}}\n",
        )
    )
    task = fleet.task("a")
    assert task.train == tmp_path / "d" / "a.jsonl"
    assert (task.settings.epochs, task.settings.batch_size) == (3, 8)
    assert task.fields.text == "text" and task.base == "minilm"


@pytest.mark.parametrize(
    "body, expected",
    [
        ("name: f\ntasks:\n  - {name: a, train: x.jsonl, epocs: 3}\n", "unknown key 'epocs'"),
        ("name: f\ntasks:\n  - {name: a, train: x.jsonl, training: {epocs: 3}}\n", "training: unknown key 'epocs'"),
        ("name: f\ntasks:\n  - {name: a, train: x.jsonl, training: {epochs: many}}\n", "'epochs' must be a int"),
        ("name: f\ntasks:\n  - {name: a}\n", "missing required key 'train'"),
        ("name: f\ntasks:\n  - {name: a, train: x.jsonl, kind: translate}\n", "unknown task kind 'translate'"),
        ("name: f\ntasks: []\n", "'tasks' is empty"),
        ("name: f\ntasks:\n  - {name: a, train: x.jsonl}\n  - {name: a, train: y.jsonl}\n", "repeated: a"),
        ("tasks: [unclosed\n", "not valid YAML"),
        ("name: f\ntasks:\n  - {name: a, train: x.jsonl, training: {learning_rate: -1}}\n", "learning_rate"),
        ("name: f\ntasks:\n  - {name: a, train: x.jsonl}\ntiers:\n  - {name: h, kind: review, deadline: 0}\n",
         "deadline and breaker_seconds must be above 0"),
        ("name: f\ntasks:\n  - {name: a, train: x.jsonl}\ntiers:\n  - {name: h, kind: review, breaker_failures: -1}\n",
         "breaker_failures not negative"),
        ("name: f\ntasks:\n  - {name: a, train: x.jsonl}\nserving: {max_pending_reviews: 0}\n",
         "max_pending_reviews must be at least 1"),
        ("name: f\ntasks:\n  - {name: a, train: x.jsonl}\nserving: {threads: -1}\n", "threads must not be negative"),
        ("name: f\ntasks:\n  - {name: a, train: x.jsonl}\nserving: {max_wait_seconds: -1}\n",
         "max_wait_seconds must not be negative"),
    ],
)
def test_bad_fleet_files_name_the_file_and_key(tmp_path, body, expected):
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        FleetSpec.from_file(path)
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_settings_replace_ignores_none():
    s = TrainSettings().replace(epochs=2, seed=None)
    assert s.epochs == 2 and s.seed == TrainSettings().seed


def test_tier_and_serving_reliability_settings_load_from_the_fleet_file(tmp_path):
    fleet = FleetSpec.from_file(write(tmp_path, "name: f\ntasks:\n  - {name: a, train: x.jsonl}\ntiers:\n"
                                      "  - {name: h, kind: review, deadline: 10, breaker_failures: 5, breaker_seconds: 60}\n"
                                      "serving: {max_pending_reviews: 500, threads: 1, max_wait_seconds: 2.5}\n"))  # fmt: skip
    (tier,) = fleet.tiers
    assert (tier.deadline, tier.breaker_failures, tier.breaker_seconds) == (10, 5, 60)
    assert (fleet.serving.max_pending_reviews, fleet.serving.threads, fleet.serving.max_wait_seconds) == (500, 1, 2.5)
