"""The fleet's router: which task a request belongs to, or `none` when no specialist fits.

The router is an ordinary classify specialist whose labels are the task names (plus
`none` when the fleet gives out-of-scope examples). It learns from the tasks' own
training texts, so it needs no extra labelling. A route whose calibrated confidence
is below the router's threshold is treated as `none`: the request escalates rather
than reaching a specialist that was never meant for it.
"""

from __future__ import annotations

import json
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from smallfleet.config import DEFAULT_BASE, FieldMap, FleetSpec, TaskSpec
from smallfleet.data import read_rows
from smallfleet.errors import ConfigError
from smallfleet.tasks.classify import ClassifySpecialist, train_classifier

NONE = "none"
ROUTER_DIR = "_router"


def task_texts(task: TaskSpec) -> list[str]:
    """The input texts of a task's training file, whatever its kind (token lists are joined)."""
    texts = []
    for _, row in read_rows(task.train):
        value = row.get(task.fields.text)
        if value is None and task.fields.tokens:  # BIO data: the tokens are the text
            value = row.get(task.fields.tokens)
        if isinstance(value, list):
            value = " ".join(str(v) for v in value)
        if isinstance(value, str) and value.strip():
            texts.append(value)
    return texts


def router_examples(fleet: FleetSpec) -> list[dict]:
    """Training rows for the router: up to `max_per_task` texts per task, plus out-of-scope texts as `none`."""
    rng = random.Random(fleet.router.training.seed)
    rows = []
    for task in fleet.tasks:
        if task.name == NONE:
            raise ConfigError(f"a task may not be called {NONE!r}: the router uses that name for 'no task'")
        texts = sorted(set(task_texts(task)))
        rng.shuffle(texts)
        rows += [{"text": t, "label": task.name} for t in texts[: fleet.router.max_per_task]]
    if fleet.router.out_of_scope:
        texts = sorted(
            {r[fleet.router.text_field] for _, r in read_rows(fleet.router.out_of_scope) if r.get(fleet.router.text_field)}
        )
        rows += [{"text": t, "label": NONE} for t in texts]
    return rows


def train_router(fleet: FleetSpec, out: Path, force: bool = False, console: Console | None = None) -> dict:
    """Train and calibrate the router of `fleet` into `out`; returns its metrics."""
    rows = router_examples(fleet)
    with tempfile.TemporaryDirectory(prefix="smallfleet-router-") as tmp:
        data = Path(tmp) / "router_train.jsonl"
        data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        spec = TaskSpec(
            name="router",
            train=data,
            fields=FieldMap(text="text", label="label"),
            base=next((t.base for t in fleet.tasks if t.kind == "classify"), DEFAULT_BASE["classify"]),
            training=fleet.router.training,
            target=fleet.router.target,
        )
        return train_classifier(spec, out, force=force, console=console)


@dataclass
class Route:
    """Where one request goes: a task name or None (escalate), with the router's confidence."""

    task: str | None
    confidence: float


class Router:
    """A trained router with its acceptance threshold."""

    def __init__(self, specialist: ClassifySpecialist, target: float):
        self.specialist = specialist
        self.target = target
        self.threshold, self.coverage = specialist.confidence_curve().threshold_for(target)

    @classmethod
    def load(cls, folder: Path, target: float) -> Router:
        return cls(ClassifySpecialist.load(folder), target)

    def route(self, texts: list[str]) -> list[Route]:
        """Route each text; low-confidence and `none` routes come back with task None."""
        out = []
        for pred in self.specialist.predict(texts, top_k=1):
            accepted = pred.label != NONE and pred.confidence >= self.threshold
            out.append(Route(pred.label if accepted else None, pred.confidence))
        return out
