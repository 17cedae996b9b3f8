"""A task kind as a unit: the one interface the code around the kinds talks to, and the
name -> kind registry.

Each kind is one package under `smallfleet/tasks/<kind>/` whose `__init__.py` defines a
`TaskKind` instance, `KIND`, registered under the `smallfleet.task_kinds` entry-point
group (the built-ins in smallfleet's own pyproject.toml, a third-party kind in its
package's). The package's `__init__` stays light (settings only); models and training
are imported when a method needs them.

Callers never branch on a kind's name: they ask its `TaskKind` (or a `SavedTask`, a
trained task read from its folder without loading any model).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Console

from smallfleet.calibration import ConfidenceCurve
from smallfleet.errors import ConfigError, DataError, SmallfleetError, SpecialistError
from smallfleet.registry import Registry
from smallfleet.tasks.specialist import Specialist, confidence_curve
from smallfleet.training.artifacts import MANIFEST, read_json


@dataclass
class QualityTable:
    """A small table of one split's quality, in the kind's own terms, for reports."""

    title: str
    columns: list[str]
    rows: list[list]
    note: str = ""
    headline: str = ""
    """The split's main figure in words, e.g. `accuracy 0.967`."""


@dataclass
class FormField:
    """One input of a record answer form."""

    name: str
    input: str = "text"
    """HTML input type: `text`, `number`, `date`, or `select` (then `options`)."""
    required: bool = False
    options: list[str] = field(default_factory=list)
    description: str = ""
    value: str = ""
    """Pre-filled value (from the specialist's guess)."""
    step: str = "any"
    """For `number` inputs: `any`, or `1` for integers."""


@dataclass
class AnswerForm:
    """How a person answers one item of a task in the console, in widget terms (no kind names):
    - `choice`: one button per option, `value` pre-selected; the answer is the option;
    - `record`: one input per field, pre-filled; the answer is the JSON object of the filled fields;
    - `text`: a text area pre-filled with `value`; the answer is the text.
    """

    widget: str
    options: list[str] = field(default_factory=list)
    fields: list[FormField] = field(default_factory=list)
    value: str = ""


class TaskKind(ABC):
    """What a task kind provides: its settings, training, loading, evaluation, and the shape of its answers."""

    name: ClassVar[str]
    """Registry name, e.g. `classify`."""
    summary: ClassVar[str]
    """One line for `--help`: what the kind maps to what."""
    settings_class: ClassVar[type]
    """The kind's settings dataclass (fields = YAML keys = `train` flags)."""
    settings_key: ClassVar[str] = "training"
    """YAML key (under a task and under `defaults`) and manifest key of the settings."""
    default_base: ClassVar[str]
    """Base model used when a task names none."""
    fields: ClassVar[tuple[str, ...]] = ("text", "label")
    """Which `FieldMap` fields the kind's data rows use."""
    eval_options: ClassVar[frozenset[str]] = frozenset()
    """Extra `evaluate` options the kind understands (e.g. `compare_base`)."""
    exports_adapter: ClassVar[bool] = False
    """Whether the kind's specialists are adapters that `export_adapter` writes for a GPU server (vLLM)."""
    cpu_seconds_per_answer: ClassVar[float] = 0.05
    """Typical CPU core-seconds one answer of a specialist of this kind takes (the audit's compute estimate)."""

    @abstractmethod
    def train(self, spec, out: Path, force: bool = False, console: Console | None = None) -> dict:
        """Train, calibrate, evaluate and save a specialist for TaskSpec `spec` into `out`; return its metrics."""

    @abstractmethod
    def load(self, folder: Path) -> Specialist:
        """Load the specialist saved in `folder`."""

    @abstractmethod
    def evaluate(self, specialist: Specialist, data: Path, console: Console, fields: dict[str, str],
                 limit: int | None = None, **options: Any) -> dict:  # fmt: skip
        """Score `specialist` on the labelled file `data`, print the report, return the metrics.

        Args:
            fields: FieldMap field -> row field name, overriding those the specialist was trained with.
            limit: score only the first N rows.
            options: the kind's `eval_options`.
        """

    @abstractmethod
    def print_report(self, metrics: dict, console: Console, title: str) -> None:
        """Print one split's metrics as `train` or `evaluate` wrote them."""

    @abstractmethod
    def training_row(self, manifest: dict, input: str, answer: str) -> dict:
        """One labelled row of the task, in its own field names, from an input and a checked answer."""

    @abstractmethod
    def check_answer(self, manifest: dict, answer: str) -> str:
        """The answer in its canonical form when it is valid for the task (a human's or an upstream's).

        Raises:
            DataError: the answer is not valid, with the reason.
        """

    def quality_table(self, metrics: dict) -> QualityTable | None:
        """The most telling detail of one split's metrics (as `train`/`evaluate` wrote them) for reports."""
        return None

    def answer_form(self, manifest: dict, guess: str | None) -> AnswerForm:
        """The form a person answers an item of the task with, pre-filled with the specialist's `guess`.
        By default a text area."""
        return AnswerForm("text", value=guess or "")

    def agrees(self, manifest: dict, answer: str, reference: str) -> bool:
        """Whether the specialist's `answer` is right, judged against `reference`, a checked answer taken as
        ground truth (a person's, or a frontier model's in a live audit). By default: the same canonical answer.
        """
        try:
            return self.check_answer(manifest, answer) == self.check_answer(manifest, reference)
        except DataError:
            return False

    def looks_like(self, inputs: list[str], answers: list[str]) -> float:
        """How well a set of answers (a frontier model's, to `inputs`) fits this kind's answer shape, in [0, 1].
        The audit calls the kind with the highest score the cluster's kind. By default 0."""
        return 0.0

    def distill_rows(self, inputs: list[str], answers: list[str], folder: Path) -> tuple[list[dict], dict]:
        """Training rows for a task learned from a frontier model's `answers` to `inputs`, and the TaskSpec
        options they need (`fields`: a FieldMap's values, `settings`: setting -> value). May write files the
        user can edit into `folder` (an inferred schema), and reads them back when they are already there.

        Raises:
            DataError: the answers do not fit the kind (or it cannot learn from them), with the reason.
        """
        raise DataError(f"task kind {self.name!r} cannot be distilled from a frontier model's answers")

    def answer_mix(self, manifest: dict) -> dict[str, int] | None:
        """How often each answer occurs in the training data, for kinds whose answers fall in a few categories
        (the predicted-answer mix of drift checks); None for kinds with free-form answers."""
        return None

    def export_adapter(self, folder: Path, manifest: dict, out: Path, base_model: str | None = None,
                       force: bool = False) -> dict:  # fmt: skip
        """Write the specialist's adapter as a PEFT folder `out` (what vLLM's multi-LoRA serving loads),
        naming `base_model` as its base; returns what was written. By default the kind has no adapter.

        Raises:
            ConfigError: the kind has no adapter, or the export is not possible (with the reason).
        """
        raise ConfigError(f"task kind {self.name!r} has no adapter to export (kinds that do: "
                          f"{', '.join(n for n in KINDS.names() if KINDS.get(n).exports_adapter) or 'none'})")  # fmt: skip

    def item_scores(self, answers: dict) -> list[float] | None:
        """Each item's graded score (in [0, 1]) from the `answers` of `evaluate`, for kinds whose quality is a
        graded figure (field F1, ROUGE): the promotion gate then compares versions with a paired bootstrap on
        these scores. None (the default) for kinds judged right or wrong: the gate uses McNemar on `correct`."""
        return None

    def input_texts(self, spec) -> list[str]:
        """The input texts of a task's training file (the router learns from them)."""
        from smallfleet.data import read_rows

        texts = []
        for _, row in read_rows(spec.train):
            value = row.get(spec.fields.text)
            if isinstance(value, str) and value.strip():
                texts.append(value)
        return texts


KINDS: Registry[TaskKind] = Registry("smallfleet.task_kinds", "task kind")
"""Task kind name -> TaskKind."""


def get_kind(name: str, error: type[SmallfleetError] = ConfigError) -> TaskKind:
    """The registered task kind called `name`; `error` (naming the known kinds) when there is none."""
    return KINDS.get(name, error)


@dataclass
class SavedTask:
    """A trained specialist as its folder describes it: kind and manifest, no model loaded."""

    folder: Path
    manifest: dict
    kind: TaskKind

    @classmethod
    def open(cls, folder: str | Path) -> SavedTask:
        """Read the specialist folder `folder`.

        Raises:
            SpecialistError: the folder holds no specialist, or one of an unknown kind.
        """
        folder = Path(folder)
        if not (folder / MANIFEST).is_file():
            raise SpecialistError(f"{folder} does not hold a specialist (no {MANIFEST}); train one with `smallfleet train`")
        manifest = read_json(folder / MANIFEST)
        try:
            kind = get_kind(str(manifest.get("kind")), SpecialistError)
        except SpecialistError as exc:
            raise SpecialistError(f"{folder}: {exc}") from None
        return cls(folder, manifest, kind)

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.folder.name)

    def load(self) -> Specialist:
        return self.kind.load(self.folder)

    def export_adapter(self, out: Path, base_model: str | None = None, force: bool = False) -> dict:
        """The specialist's adapter as a PEFT folder `out` (see `TaskKind.export_adapter`)."""
        return self.kind.export_adapter(self.folder, self.manifest, out, base_model, force)

    def training_row(self, input: str, answer: str) -> dict:
        """One labelled row in the task's own field names (see `TaskKind.training_row`)."""
        return self.kind.training_row(self.manifest, input, answer)

    def check_answer(self, answer: str) -> str:
        """The canonical answer, or DataError with the reason (see `TaskKind.check_answer`)."""
        return self.kind.check_answer(self.manifest, answer)

    def answer_form(self, guess: str | None) -> AnswerForm:
        """The console's answer form for an item, pre-filled with `guess` (see `TaskKind.answer_form`)."""
        return self.kind.answer_form(self.manifest, guess)

    def agrees(self, answer: str, reference: str) -> bool:
        """Whether `answer` is right against the ground truth `reference` (see `TaskKind.agrees`)."""
        return self.kind.agrees(self.manifest, answer, reference)

    def confidence_curve(self) -> ConfidenceCurve:
        return confidence_curve(self.folder)

    def answer_mix(self) -> dict[str, int] | None:
        """Training answers by category, or None (see `TaskKind.answer_mix`)."""
        return self.kind.answer_mix(self.manifest)


def load_specialist(folder: str | Path) -> Specialist:
    """Load whatever specialist is saved in `folder`, through its kind.

    Raises:
        SpecialistError: the folder does not hold a specialist or its kind is unknown.
    """
    return SavedTask.open(folder).load()
