"""The families are registries: the built-in kinds, tiers and runtimes come through the same
entry-point groups a third-party package uses, and a fourth kind needs no change outside itself."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.metadata import entry_points

import pytest

from smallfleet.config import FleetSpec
from smallfleet.errors import ConfigError, DataError, SpecialistError
from smallfleet.settings import Settings
from smallfleet.tasks import KINDS, SavedTask, TaskKind, get_kind
from smallfleet.training.artifacts import MANIFEST


@pytest.mark.parametrize(
    "group, names",
    [
        ("smallfleet.task_kinds", {"classify", "extract", "generate"}),
        ("smallfleet.tiers", {"openai", "review"}),
        ("smallfleet.runtimes", {"transformers", "llama.cpp"}),
    ],
)
def test_built_ins_register_through_entry_points(group, names):
    assert {ep.name for ep in entry_points(group=group)} >= names


def test_every_kind_answers_the_same_interface():
    for name in KINDS.names():
        kind = get_kind(name)
        assert kind.name == name and kind.default_base and set(kind.fields) <= {"text", "label", "tokens", "tags", "output"}
        assert "text" in kind.fields and kind.settings_class().replace() == kind.settings_class()


@dataclass
class EchoSettings(Settings):
    """A toy kind's settings."""

    repeat: int = 1
    """How many times to repeat the input."""


class EchoKind(TaskKind):
    """A fourth kind, as a plugin would write it (no model: enough to exercise the registry)."""

    name = "echo"
    summary = "text -> the text repeated"
    settings_class = EchoSettings
    settings_key = "echo"
    default_base = "none"
    fields = ("text", "output")

    def train(self, spec, out, force=False, console=None):
        raise NotImplementedError

    def load(self, folder):
        raise NotImplementedError

    def evaluate(self, specialist, data, console, fields, limit=None, **options):
        raise NotImplementedError

    def print_report(self, metrics, console, title):
        raise NotImplementedError

    def training_row(self, manifest, input, answer):
        return {manifest["fields"]["text"]: input, "echoed": answer}

    def check_answer(self, manifest, answer):
        if not answer.startswith(manifest["prefix"]):
            raise DataError(f"an echo answer starts with {manifest['prefix']!r}")
        return answer


@pytest.fixture
def echo(monkeypatch):
    KINDS.names()  # read the entry points first, then add the plugin beside them
    kind = EchoKind()
    monkeypatch.setitem(KINDS._refs, "echo", lambda: kind)
    monkeypatch.setitem(KINDS._loaded, "echo", kind)
    return kind


def test_a_fourth_kind_is_read_from_fleet_yaml_with_its_own_settings_key(echo, tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text("name: f\ndefaults: {echo: {repeat: 2}}\ntasks:\n"
                    "  - {name: a, kind: echo, train: a.jsonl, echo: {repeat: 3}}\n  - {name: b, kind: echo, train: b.jsonl}\n")
    a, b = FleetSpec.from_file(path).tasks
    assert (a.settings.repeat, b.settings.repeat, a.base) == (3, 2, "none")
    path.write_text("name: f\ntasks:\n  - {name: a, kind: echo, train: a.jsonl, training: {epochs: 2}}\n")
    with pytest.raises(ConfigError, match="unknown key 'training'"):
        FleetSpec.from_file(path)


def test_a_saved_task_of_a_fourth_kind_answers_through_its_kind(echo, tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps({"kind": "echo", "name": "e", "prefix": "E:", "fields": {"text": "q"}}))
    task = SavedTask.open(tmp_path)
    assert task.kind is echo and task.training_row("hi", "E: hi") == {"q": "hi", "echoed": "E: hi"}
    with pytest.raises(DataError, match="starts with 'E:'"):
        task.check_answer("hi")


def test_unknown_kinds_are_named_with_the_known_ones(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps({"kind": "translate", "name": "t"}))
    with pytest.raises(SpecialistError, match=r"unknown task kind 'translate' \(known: classify, extract, generate"):
        SavedTask.open(tmp_path)
