"""A fleet loaded for serving: its specialists (each behind an inference thread), the
router, each task's cascade threshold, the tiers and the serving settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from smallfleet.audit.templates import Template
from smallfleet.config import ServingSpec
from smallfleet.errors import SpecialistError
from smallfleet.guarantee import DEFAULT_DELTA, Guarantee, guaranteed_threshold
from smallfleet.router import Router
from smallfleet.serve.batching import Batcher
from smallfleet.tasks import Specialist, load_specialist
from smallfleet.tiers.base import TierSpec
from smallfleet.triage.model import TriageModel
from smallfleet.fleet import fleet_index
from smallfleet.flywheel.versions import list_versions, served_version

DEFAULT_TARGET = 0.95


@dataclass
class ServedTask:
    """One task as the gateway sees it."""

    name: str
    specialist: Specialist
    batcher: Batcher
    target: float
    threshold: float
    coverage: float
    guarantee: Guarantee | None = None
    """What the threshold promises; None when it was set by hand."""
    version: str = "v1"
    """The task's version being served (see `flywheel/versions.py`)."""
    folder: str = "."
    """The specialist's folder, relative to the fleet folder, as fleet.json names it."""
    template: Template | None = None
    """The system prompt and prompt template of the frontier traffic the task was distilled from (`distill`):
    a pass-through request carrying it goes to the task."""
    live: bool = True
    """False while a distilled task is in shadow: requests carrying its template still go upstream."""


def load_task(fleet: Path, name: str, entry: dict, target: float | None, delta: float | None,
              threshold: float | None) -> ServedTask:  # fmt: skip
    """Load the specialist a fleet.json task entry names, with its guaranteed threshold (or `threshold` set by hand)."""
    specialist = load_specialist(fleet / entry["folder"])
    stored = entry.get("cascade") or specialist.manifest.get("cascade") or {}
    goal = target or stored.get("target", DEFAULT_TARGET)
    curve = specialist.confidence_curve()
    guarantee = guaranteed_threshold(curve, goal, delta or stored.get("delta", DEFAULT_DELTA))
    chosen, coverage = guarantee.threshold, guarantee.coverage
    if threshold is not None:
        chosen, guarantee, coverage = threshold, None, curve.coverage_at(threshold)
    template = Template.from_dict(entry["template"]) if entry.get("template") else None
    return ServedTask(name, specialist, Batcher(specialist.answer, name), goal, chosen, coverage, guarantee,
                      served_version(entry), entry["folder"], template, not entry.get("shadow_only"))  # fmt: skip


def load_router(folder: Path, entry: dict) -> tuple[Router, Batcher]:
    """The router that fleet.json's `router` entry names, with its batcher."""
    router = Router.load(folder / entry["folder"], entry["cascade"]["target"])
    return router, Batcher(lambda texts, _options: router.route(texts), "router")


class ServedFleet:
    """Everything `smallfleet serve` needs from a fleet folder (or a single specialist folder)."""

    def __init__(self, name: str, folder: Path, tasks: dict[str, ServedTask], router: Router | None,
                 router_batcher: Batcher | None, tiers: list[TierSpec], serving: ServingSpec):  # fmt: skip
        self.name = name
        self.folder = folder
        self.tasks = tasks
        self.router = router
        self.router_batcher = router_batcher
        self.router_folder: str | None = None
        """The router's folder as fleet.json names it (a refit router gets a new one, which hot reload follows)."""
        self.tiers = tiers
        self.serving = serving
        self.shadows: dict[str, ServedTask] = {}
        """Task -> a candidate version answering live requests in the background (`serve --shadow`)."""
        self.overrides: dict = {"target": None, "delta": None, "thresholds": {}}
        """Serve-time target, delta and hand-set thresholds, kept for versions loaded later."""
        self.triage: TriageModel | None = None
        """The triage model free-form requests go through (`serving.triage`); None = tiers in order."""
        self.triage_batcher: Batcher | None = None

    @classmethod
    def load(cls, folder: Path, target: float | None = None, thresholds: dict[str, float] | None = None,
             delta: float | None = None, threads: int | None = None, workers: int | None = None) -> ServedFleet:  # fmt: skip
        """Load a fleet folder (with fleet.json) or one specialist folder as a one-task fleet.

        Each task's threshold is the guaranteed one (`guarantee.guaranteed_threshold`) at its target and delta.

        Args:
            target: quality target for every task, replacing the ones stored with the fleet.
            delta: failure probability of every task's guarantee, replacing the stored ones.
            thresholds: task -> confidence threshold set by hand (overrides the target; above 1 escalates all).
            threads: torch threads of the models (replaces the fleet's `serving.threads`), set before any loads.
            workers: gateway processes to fork from this one (replaces `serving.workers`); above 1 the models load
                on one thread, since a thread pool started before a fork hangs the forked processes.
        """
        manual = dict(thresholds or {})
        thresholds = dict(manual)
        folder = Path(folder)
        # an empty or new folder is a pure pass-through gateway that logs everything (tasks come later, e.g. distill)
        index = fleet_index(folder, empty_ok=True)
        given = {key: value for key, value in (("threads", threads), ("workers", workers)) if value is not None}
        serving = ServingSpec(**{**index.get("serving", {}), **given})
        if serving.threads or serving.workers > 1:
            torch.set_num_threads(serving.threads or 1)
        tasks = {name: load_task(folder, name, entry, target, delta, thresholds.pop(name, None))
                 for name, entry in index["tasks"].items()}  # fmt: skip
        if thresholds:
            raise SpecialistError(f"--threshold names unknown task(s) {', '.join(thresholds)} (tasks: {', '.join(tasks)})")
        router = router_batcher = None
        if index.get("router") and len(tasks) > 1:
            router, router_batcher = load_router(folder, index["router"])
        tiers = [TierSpec(**t) for t in index.get("tiers", [])]
        fleet = cls(index.get("name", folder.name), folder, tasks, router, router_batcher, tiers, serving)
        fleet.router_folder = index["router"]["folder"] if router else None
        fleet.overrides = {"target": target, "delta": delta, "thresholds": dict(manual)}
        if serving.triage:
            fleet.use_triage(serving.triage)
        return fleet

    def template_task(self, system: str | None, user: str) -> ServedTask | None:
        """The distilled task whose template this request (system prompt, last user turn) was written from."""
        return next((t for t in self.tasks.values() if t.template and t.template.matches(system, user)), None)

    def use_triage(self, path: str | Path) -> TriageModel:
        """Load the triage model at `path` (relative to the fleet folder unless absolute) and serve with it."""
        folder = Path(path) if Path(path).is_absolute() else self.folder / path
        model = TriageModel.load(folder)
        model.predict(["warm-up"])  # loads the encoder now, not on the first request
        if self.triage_batcher:
            self.triage_batcher.close()
        self.triage = model
        self.triage_batcher = Batcher(lambda texts, _options: model.predict(texts), "triage")
        return model

    def add_shadow(self, name: str, version: str) -> ServedTask:
        """Load `version` of task `name` as its shadow."""
        if name not in self.tasks:
            raise SpecialistError(f"--shadow names unknown task {name!r} (tasks: {', '.join(self.tasks)})")
        found = {v["version"]: v for v in list_versions(self.folder, name)[name]}
        if version not in found:
            raise SpecialistError(f"--shadow: task {name!r} has no version {version!r} (versions: {', '.join(found)})")
        entry = {"folder": found[version]["folder"], "cascade": found[version].get("cascade"), "served": version}
        self.shadows[name] = self.reload_task(name, entry)
        return self.shadows[name]

    def reload_task(self, name: str, entry: dict) -> ServedTask:
        """Load the version of task `name` that fleet.json `entry` names, with the serve-time overrides (no swap)."""
        o = self.overrides
        return load_task(self.folder, name, entry, o["target"], o["delta"], o["thresholds"].get(name))

    def compute_cost(self, seconds: float) -> float:
        """USD for `seconds` of specialist inference on this machine (cores x time at the core-hour price)."""
        if torch.cuda.is_available():
            return seconds * self.serving.gpu_hour_usd / 3600
        return seconds * torch.get_num_threads() * self.serving.cpu_hour_usd / 3600

    def close(self) -> None:
        for task in [*self.tasks.values(), *self.shadows.values()]:
            task.batcher.close()
        if self.router_batcher:
            self.router_batcher.close()
        if self.triage_batcher:
            self.triage_batcher.close()
