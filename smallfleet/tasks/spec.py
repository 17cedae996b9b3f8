"""One narrow task and how to train its specialist: data files, field mapping, base model,
and the settings of its kind (the kind's own dataclass, found through the registry)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smallfleet.errors import ConfigError
from smallfleet.tasks.kind import TaskKind, get_kind


@dataclass
class FieldMap:
    """Which fields of a data row hold the input and the answer."""

    text: str = "text"
    """Field (JSONL key or CSV column) holding the input text."""
    label: str = "label"
    """Field holding the gold label (extract: the JSON object of gold field values; rows without it may use `fields`)."""
    tokens: str | None = None
    """Extract with BIO data: field holding the list of tokens."""
    tags: str | None = None
    """Extract with BIO data: field holding one BIO tag per token."""
    output: str = "output"
    """Generate: field holding the target text."""


@dataclass
class TaskSpec:
    """One narrow task of the fleet and how to train its specialist."""

    name: str
    """Task name; also the specialist's folder name inside the fleet."""
    train: Path
    """Training data file (JSONL or CSV)."""
    kind: str = "classify"
    """Task kind; a name in the task-kind registry (classify, extract, generate, or a plugin's)."""
    valid: Path | None = None
    """Validation file; when absent a seeded split of `train` is held out (stratified by label where there is one)."""
    test: Path | None = None
    """Held-out test file, evaluated after training."""
    test_note: str = ""
    """Where the test file came from when the fleet made it (the frozen slice set aside at first training); in the card."""
    fields: FieldMap = field(default_factory=FieldMap)
    """Field mapping for all of this task's files."""
    base: str = ""
    """Base model: a local folder or file, a packaged model name, or a hub id; empty = the kind's default."""
    settings: Any = None
    """The kind's settings (its `settings_class`); None = that class's defaults."""
    target: float = 0.95
    """Quality the accepted answers must reach (accuracy, exact record match, or good-answer rate)."""
    delta: float = 0.05
    """Allowed probability that the accepted answers miss `target` (the escalation threshold's guarantee)."""

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"task name {self.name!r} must be letters, digits, '-' or '_'")
        if not 0 < self.target <= 1:
            raise ConfigError(f"task {self.name!r}: target={self.target!r} must be in (0, 1]")
        if not 0 < self.delta < 1:
            raise ConfigError(f"task {self.name!r}: delta={self.delta!r} must be in (0, 1)")
        try:
            kind = get_kind(self.kind)
        except ConfigError as exc:
            raise ConfigError(f"task {self.name!r}: {exc}") from None
        if self.settings is None:
            self.settings = kind.settings_class()
        if not isinstance(self.settings, kind.settings_class):
            raise ConfigError(
                f"task {self.name!r}: kind {self.kind!r} takes {kind.settings_class.__name__}, "
                f"not {type(self.settings).__name__}"
            )
        self.base = self.base or kind.default_base

    @property
    def task_kind(self) -> TaskKind:
        return get_kind(self.kind)

    def data_files(self) -> list[Path]:
        """The files a specialist is trained from (train, valid, and path settings such as a schema)."""
        paths = [self.train, self.valid]
        paths += [v for v in dataclasses.asdict(self.settings).values() if isinstance(v, Path)]
        return [p for p in paths if p is not None]
