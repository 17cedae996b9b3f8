"""What retraining starts from: a served task's spec (data files from fleet.json, settings
from its manifest), and which labelled traffic a version has seen."""

from __future__ import annotations

from pathlib import Path

from smallfleet.errors import ConfigError
from smallfleet.settings import build
from smallfleet.tasks import FieldMap, SavedTask, TaskSpec

TRAFFIC_IDS = "traffic_ids.json"
"""In a version folder: the request ids of the labelled traffic it has seen (trained on or held back for its gate)."""


def task_spec(fleet: Path, name: str, entry: dict, saved: SavedTask) -> TaskSpec:
    """The served version's TaskSpec: its data files (fleet.json) and its settings, fields and base (manifest)."""
    data = entry.get("data")
    if not data or not data.get("train"):
        raise ConfigError(f"fleet.json of {fleet} does not name task {name!r}'s data files (trained before retraining "
                          "existed): train the fleet again with `smallfleet train`")  # fmt: skip
    m, kind = saved.manifest, saved.kind
    paths = {k: Path(v) if v else None for k, v in data.items()}
    for split, path in paths.items():
        if path is not None and not path.is_file():
            raise ConfigError(f"task {name!r}: its {split} file {path} is gone")
    cascade = m.get("cascade") or {}
    return TaskSpec(name=name, kind=kind.name, train=paths["train"], valid=paths.get("valid"), test=paths.get("test"),
                    test_note=m.get("data", {}).get("test_note", ""), fields=FieldMap(**m["fields"]), base=m["base"]["ref"] or "",
                    settings=build(kind.settings_class, m[kind.settings_key], f"{name}: manifest"),
                    target=cascade.get("target", 0.95), delta=cascade.get("delta", 0.05))  # fmt: skip
