"""Typed configuration: training settings, task specs and the fleet spec.

A `fleet.yaml` is read in exactly one place, `FleetSpec.from_file`. Everything
downstream works with these dataclasses. Key names are the same as the CLI flags
(`batch_size` <-> `--batch-size`) and the Python keyword arguments.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from smallfleet.errors import ConfigError

TASK_KINDS = ("classify", "extract")


@dataclass
class TrainSettings:
    """How a specialist is fine-tuned."""

    epochs: int = 8
    """Maximum passes over the training data."""
    batch_size: int = 32
    """Examples per optimizer step."""
    learning_rate: float = 1e-4
    """Peak learning rate of the encoder (linear warmup, then linear decay)."""
    head_learning_rate: float = 2e-3
    """Peak learning rate of the freshly initialized output head."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_ratio: float = 0.06
    """Fraction of the steps spent warming up the learning rate."""
    label_smoothing: float = 0.1
    """Share of the target mass spread over the other labels (regularizes; temperature scaling re-calibrates)."""
    max_length: int = 128
    """Longest input in tokens; longer texts are truncated (extract: cut into windows overlapping by a quarter)."""
    patience: int = 2
    """Stop after this many epochs without a better validation score."""
    seed: int = 13
    """Seed for initialization, shuffling and the validation split."""
    valid_fraction: float = 0.1
    """Share of training rows held out for validation when no validation file is given."""

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "learning_rate": self.learning_rate > 0,
            "head_learning_rate": self.head_learning_rate > 0,
            "weight_decay": self.weight_decay >= 0,
            "warmup_ratio": 0 <= self.warmup_ratio < 1,
            "label_smoothing": 0 <= self.label_smoothing < 1,
            "max_length": self.max_length >= 8,
            "patience": self.patience >= 1,
            "valid_fraction": 0 < self.valid_fraction < 0.5,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"training setting {name}={getattr(self, name)!r} is out of range")

    def replace(self, **changes: Any) -> TrainSettings:
        """Return a copy with the given settings changed; None values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass
class FieldMap:
    """Which fields of a data row hold the input text and the label."""

    text: str = "text"
    """Field (JSONL key or CSV column) holding the input text."""
    label: str = "label"
    """Field holding the gold label (extract: the JSON object of gold field values; rows without it may use `fields`)."""
    tokens: str | None = None
    """Extract with BIO data: field holding the list of tokens."""
    tags: str | None = None
    """Extract with BIO data: field holding one BIO tag per token."""


@dataclass
class TaskSpec:
    """One narrow task of the fleet and how to train its specialist."""

    name: str
    """Task name; also the specialist's folder name inside the fleet."""
    train: Path
    """Training data file (JSONL or CSV)."""
    kind: str = "classify"
    """Task kind; one of TASK_KINDS."""
    valid: Path | None = None
    """Validation file; when absent a seeded stratified split of `train` is used."""
    test: Path | None = None
    """Held-out test file, evaluated after training."""
    fields: FieldMap = field(default_factory=FieldMap)
    """Field mapping for all of this task's files."""
    base: str = "minilm"
    """Base model: a local folder or file, a packaged model name, or a hub id."""
    training: TrainSettings = field(default_factory=TrainSettings)
    """Fine-tuning settings."""
    schema: Path | None = None
    """Extract: JSON Schema file of the output record (optional for BIO data: derived from the tags)."""

    def __post_init__(self) -> None:
        if self.schema is not None and self.kind != "extract":
            raise ConfigError(f"task {self.name!r}: 'schema' only applies to kind 'extract', not {self.kind!r}")
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"task name {self.name!r} must be letters, digits, '-' or '_'")
        if self.kind not in TASK_KINDS:
            raise ConfigError(f"task {self.name!r}: unknown kind {self.kind!r} (known: {', '.join(TASK_KINDS)})")


@dataclass
class FleetSpec:
    """A fleet: named set of tasks, each trained into its own specialist."""

    name: str
    """Fleet name; used for the default output folder."""
    tasks: list[TaskSpec]
    """The tasks, in order."""
    source: Path | None = None
    """The YAML file this spec was read from."""

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ConfigError(f"{self.source or 'fleet'}: 'tasks' is empty; declare at least one task")
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"{self.source or 'fleet'}: task names must be unique, repeated: {', '.join(dupes)}")

    def task(self, name: str) -> TaskSpec:
        """Return the task called `name`."""
        for task in self.tasks:
            if task.name == name:
                return task
        raise ConfigError(f"no task {name!r} in fleet {self.name!r} (tasks: {', '.join(t.name for t in self.tasks)})")

    @classmethod
    def from_file(cls, path: str | Path) -> FleetSpec:
        """Read and validate a fleet YAML file.

        Relative data paths resolve against the YAML file's folder; `$VARS` in
        paths are expanded (`$SMALLFLEET_DATASETS` defaults to the shared datasets).
        """
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"fleet file {path} does not exist") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping with 'name' and 'tasks' at the top level")
        _reject_unknown(raw, {"name", "defaults", "tasks"}, f"{path}")
        defaults = raw.get("defaults") or {}
        _expect(defaults, dict, f"{path}: 'defaults'")
        _reject_unknown(defaults, {"base", "training", "fields"}, f"{path}: defaults")
        tasks_raw = raw.get("tasks")
        _expect(tasks_raw, list, f"{path}: 'tasks'")
        tasks = [_task_from_dict(item, defaults, path, i) for i, item in enumerate(tasks_raw)]
        return cls(name=str(raw.get("name") or path.stem), tasks=tasks, source=path)


def _task_from_dict(item: Any, defaults: dict, path: Path, index: int) -> TaskSpec:
    where = f"{path}: tasks[{index}]"
    _expect(item, dict, where)
    allowed = {f.name for f in fields(TaskSpec)}
    _reject_unknown(item, allowed, where)
    if "name" in item:
        where = f"{path}: task {item['name']!r}"
    for key in ("name", "train"):
        if key not in item:
            raise ConfigError(f"{where}: missing required key '{key}'")
    base_dir = path.parent
    try:
        return TaskSpec(
            name=str(item["name"]),
            kind=str(item.get("kind", "classify")),
            train=_data_path(item["train"], base_dir),
            valid=_data_path(item.get("valid"), base_dir),
            test=_data_path(item.get("test"), base_dir),
            fields=_build(FieldMap, {**(defaults.get("fields") or {}), **(item.get("fields") or {})}, f"{where}: fields"),
            base=str(item.get("base", defaults.get("base", "minilm"))),
            training=_build(
                TrainSettings, {**(defaults.get("training") or {}), **(item.get("training") or {})}, f"{where}: training"
            ),
            schema=_data_path(item.get("schema"), base_dir),
        )
    except ConfigError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ConfigError(f"{where}: {exc}") from None


def _build(cls: type, values: Any, where: str) -> Any:
    """Build dataclass `cls` from a mapping, naming any unknown or mistyped key."""
    _expect(values, dict, where)
    known = {f.name: f for f in fields(cls)}
    _reject_unknown(values, set(known), where)
    kwargs = {}
    for key, value in values.items():
        default = getattr(cls(), key)
        typ = str if default is None else type(default)
        try:
            kwargs[key] = typ(value)
            if typ is int and float(value) != kwargs[key]:
                raise ValueError(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: key '{key}' must be a {typ.__name__}, got {value!r}") from None
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _data_path(value: Any, base_dir: Path) -> Path | None:
    if value is None:
        return None
    expanded = os.path.expandvars(str(value).replace("$SMALLFLEET_DATASETS", str(datasets_dir())))
    p = Path(expanded).expanduser()
    return p if p.is_absolute() else (base_dir / p)


def _reject_unknown(mapping: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (allowed: {', '.join(sorted(allowed))})")


def _expect(value: Any, typ: type, where: str) -> None:
    if not isinstance(value, typ):
        raise ConfigError(f"{where}: expected a {typ.__name__}, got {type(value).__name__}")


def datasets_dir() -> Path:
    """Folder of the shared public datasets: $SMALLFLEET_DATASETS or ../shared/datasets beside the checkout."""
    env = os.environ.get("SMALLFLEET_DATASETS")
    if env:
        return Path(env).expanduser().resolve()
    return (Path(__file__).resolve().parent.parent.parent / "shared" / "datasets").resolve()
