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
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from smallfleet.config import FleetSpec
from smallfleet.data import read_rows
from smallfleet.errors import ConfigError
from smallfleet.tasks import FieldMap, TaskSpec, get_kind
from smallfleet.tasks.classify.specialist import ClassifySpecialist

NONE = "none"
ROUTER_DIR = "_router"
ROUTER_KIND = "classify"  # the router is a classify specialist over task names


def router_examples(fleet: FleetSpec, extra: dict[str, list[str]] | None = None) -> list[dict]:
    """Training rows for the router: up to `max_per_task` texts per task, plus out-of-scope texts as `none`.

    Args:
        extra: task -> more input texts of that task (its labelled traffic, when the router is refit).
    """
    rng = random.Random(fleet.router.training.seed)
    rows = []
    for task in fleet.tasks:
        if task.name == NONE:
            raise ConfigError(f"a task may not be called {NONE!r}: the router uses that name for 'no task'")
        texts = sorted(set(task.task_kind.input_texts(task)) | set((extra or {}).get(task.name, [])))
        rng.shuffle(texts)
        rows += [{"text": t, "label": task.name} for t in texts[: fleet.router.max_per_task]]
    if fleet.router.out_of_scope:
        texts = sorted(
            {r[fleet.router.text_field] for _, r in read_rows(fleet.router.out_of_scope) if r.get(fleet.router.text_field)}
        )
        rows += [{"text": t, "label": NONE} for t in texts]
    return rows


def train_router(fleet: FleetSpec, out: Path, force: bool = False, console: Console | None = None,
                 extra: dict[str, list[str]] | None = None) -> dict:  # fmt: skip
    """Train and calibrate the router of `fleet` into `out` (see `router_examples` for `extra`); returns its metrics."""
    rows = router_examples(fleet, extra)
    with tempfile.TemporaryDirectory(prefix="smallfleet-router-") as tmp:
        data = Path(tmp) / "router_train.jsonl"
        data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        spec = TaskSpec(
            name="router",
            train=data,
            kind=ROUTER_KIND,
            fields=FieldMap(text="text", label="label"),
            base=fleet.router.base or _encoder_base(fleet),
            settings=fleet.router.training,
            target=fleet.router.target,
        )
        return get_kind(ROUTER_KIND).train(spec, out, force=force, console=console)


def _encoder_base(fleet: FleetSpec) -> str:
    """The base of the first task trained on the router's kind of settings (an encoder), else that kind's default."""
    kind = get_kind(ROUTER_KIND)
    return next((t.base for t in fleet.tasks if isinstance(t.settings, kind.settings_class)), kind.default_base)


@dataclass
class Route:
    """Where one request goes: a task name or None (escalate), with the router's confidence."""

    task: str | None
    confidence: float
    novelty: float | None = None
    """How far the request lies from every task's training texts (None: the router has no novelty statistics)."""
    failed: list[str] = field(default_factory=list)
    """Why no task was chosen: `none` (routed to none), `confidence`, `novelty`; empty when routed."""


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
        """Route each text; `none`, low-confidence and novel routes come back with task None."""
        out = []
        novelty = self.specialist.novelty
        for pred in self.specialist.predict(texts, top_k=1):
            failed = [NONE] if pred.label == NONE else []
            failed += ["confidence"] if pred.confidence < self.threshold else []
            failed += ["novelty"] if novelty and not novelty.accepts(pred.novelty) else []
            out.append(Route(None if failed else pred.label, pred.confidence, pred.novelty, failed))
        return out
