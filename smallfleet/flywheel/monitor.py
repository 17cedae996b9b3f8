"""Drift checks of a fleet: each task's recent requests (from the request log) against the
baseline its served version recorded at training time (see `drift.py` for the tests).

Baselines, all in the specialist folder:
- a seeded sample of training inputs (`drift_baseline.json`, written since drift checks
  exist; an older folder gets "not computed" for the input signal, with the reason);
- the validation confidences of `calibration.json` (the confidence and escalation signals);
- the training answer mix, for kinds whose answers are categories (`TaskKind.answer_mix`).

Only requests the served version answered are compared with its baseline. `smallfleet
drift` runs a check once; the gateway runs one every `serving.drift_every` seconds and
exports the signals on /metrics; `smallfleet watch` may retrain on drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import or_, select

from smallfleet.errors import ConfigError
from smallfleet.flywheel.drift import Signal, ks_test, mix_test, mmd_test, not_computed, rate_test
from smallfleet.settings import Settings
from smallfleet.store import Database
from smallfleet.store.ledger import SPECIALIST_TIER
from smallfleet.tasks import SavedTask
from smallfleet.tasks.specialist import confidence_curve
from smallfleet.training.artifacts import DRIFT_BASELINE, read_json

SIGNALS = ("input", "confidence", "escalation_rate", "answer_mix")
"""A task's signals; the fleet adds `router_none_rate` when it has a router."""
ROUTER = "router_none_rate"


@dataclass
class DriftSettings(Settings):
    """What a drift check compares, and how strict it is."""

    window: int = 500
    """Most recent requests of each task compared with its training baseline."""
    hours: float | None = None
    """Only requests of the last HOURS (default: no time limit, only --window)."""
    min_requests: int = 30
    """Fewest recent requests a signal needs; with fewer it is not computed and says so."""
    alpha: float = 0.01
    """Significance level of each signal's test (drift when p < alpha)."""
    permutations: int = 200
    """Permutations of the input signal's MMD test."""

    def __post_init__(self) -> None:
        self.check("drift", {"window": self.window >= 2, "hours": self.hours is None or self.hours > 0,
                             "min_requests": self.min_requests >= 2, "alpha": 0 < self.alpha < 1,
                             "permutations": self.permutations >= 10})  # fmt: skip


@dataclass
class WatchedTask:
    """One task's served version, as a drift check needs it."""

    name: str
    folder: Path
    """Its specialist folder."""
    threshold: float
    """Its escalation threshold."""
    version: str = "v1"


def fleet_targets(fleet: Path, task: str | None = None) -> tuple[list[WatchedTask], WatchedTask | None]:
    """The served tasks of a fleet folder (or only `task`) and its router, as fleet.json names them."""
    from smallfleet.fleet import fleet_index
    from smallfleet.flywheel.versions import served_version

    fleet = Path(fleet)
    index = fleet_index(fleet)
    if task is not None and task not in index["tasks"]:
        raise ConfigError(f"no task {task!r} in {fleet} (tasks: {', '.join(index['tasks'])})")
    tasks = [WatchedTask(name, fleet / entry["folder"], _threshold(entry.get("cascade")), served_version(entry))
             for name, entry in index["tasks"].items() if task in (None, name)]  # fmt: skip
    router = index.get("router")
    watched_router = None
    if router and len(index["tasks"]) > 1:
        watched_router = WatchedTask("router", fleet / router["folder"], _threshold(router.get("cascade")))
    return tasks, watched_router


def _threshold(cascade: dict | None) -> float:
    cascade = cascade or {}
    if "supported" in cascade and not cascade["supported"]:
        return 1.0 + 1e-9  # escalate everything
    return float(cascade.get("threshold", 0.0))


def check_drift(tasks: list[WatchedTask], router: WatchedTask | None, db: Database, settings: DriftSettings,
                embedder) -> dict:  # fmt: skip
    """Every signal of `tasks` (and the router's none-rate); returns the report `smallfleet drift --json` prints.

    Args:
        embedder: a `models.embed.SentenceEmbedder` (loaded on first use, reused across checks).
    """
    since = datetime.now(UTC) - timedelta(hours=settings.hours) if settings.hours else None
    report = {"drift": False, "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
              "window": {"requests": settings.window, "hours": settings.hours}, "alpha": settings.alpha,
              "tasks": {}, "router": None}  # fmt: skip
    for task in tasks:
        signals = task_signals(task, db, settings, embedder, since)
        drift = any(s.drift for s in signals.values())
        report["tasks"][task.name] = {"version": task.version, "drift": drift,
                                      "signals": {k: s.to_dict() for k, s in signals.items()}}  # fmt: skip
        report["drift"] |= drift
    if router is not None:
        signal = router_signal(router, db, settings, since)
        report["router"] = signal.to_dict()
        report["drift"] |= bool(signal.drift)
    return report


def recent_rows(db: Database, task: str, version: str, settings: DriftSettings, since: datetime | None) -> list[dict]:
    """The task's latest answered requests by `version` (rows logged before versions count as v1), newest first."""
    r = db.requests
    versions = r.c.version == version
    if version == "v1":
        versions = or_(versions, r.c.version.is_(None))
    query = (select(r.c.input, r.c.confidence, r.c.tier, r.c.output, r.c.guess)
             .where(r.c.task == task, r.c.status != "error", r.c.confidence.is_not(None), versions)
             .order_by(r.c.id.desc()).limit(settings.window))  # fmt: skip
    if since is not None:
        query = query.where(r.c.created_at >= since)
    with db.engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def task_signals(task: WatchedTask, db: Database, settings: DriftSettings, embedder,
                 since: datetime | None = None) -> dict[str, Signal]:  # fmt: skip
    """The signals of one task's recent requests against its served version's baseline."""
    rows = recent_rows(db, task.name, task.version, settings, since)
    n = len(rows)
    few = f"{n} recent request(s) of {task.version}; a signal needs at least {settings.min_requests}"
    if n < settings.min_requests:
        return {name: not_computed(name, "", few, n) for name in SIGNALS}
    saved = SavedTask.open(task.folder)
    confidences = np.array([row["confidence"] for row in rows], dtype=float)
    baseline_conf = confidence_curve(task.folder).confidence
    signals = {"input": _input_signal(task.folder, [row["input"] or "" for row in rows], settings, embedder)}
    if len(baseline_conf) < 2:
        signals["confidence"] = signals["escalation_rate"] = not_computed(
            "confidence", "", "the specialist's calibration.json holds fewer than 2 validation confidences", n)
    else:
        signals["confidence"] = ks_test(confidences, baseline_conf, settings.alpha)
        expected = float((baseline_conf < task.threshold).mean())
        signals["escalation_rate"] = rate_test("escalation_rate", int((confidences < task.threshold).sum()), n,
                                               expected, settings.alpha)  # fmt: skip
        signals["escalation_rate"].detail["threshold"] = task.threshold
    mix = saved.answer_mix()
    if mix is None:
        signals["answer_mix"] = not_computed("answer_mix", "", f"{saved.kind.name} answers are free-form, not "
                                             "categories: no answer mix to compare", n)  # fmt: skip
    else:  # the specialist's own answer: its guess where another tier answered instead
        answers = [row["guess"] if row["guess"] is not None else row["output"] for row in rows
                   if row["guess"] is not None or row["tier"] == SPECIALIST_TIER]  # fmt: skip
        if len(answers) < settings.min_requests:
            signals["answer_mix"] = not_computed("answer_mix", "", f"{len(answers)} recent request(s) carry the "
                                                 f"specialist's answer; the signal needs {settings.min_requests}", n)  # fmt: skip
        else:
            signals["answer_mix"] = mix_test([str(a) for a in answers], mix, settings.alpha)
    return signals


def _input_signal(folder: Path, inputs: list[str], settings: DriftSettings, embedder) -> Signal:
    test = "MMD permutation test on sentence embeddings"
    if not (folder / DRIFT_BASELINE).is_file():
        return not_computed("input", test, f"{folder} has no {DRIFT_BASELINE} (trained before drift baselines were "
                            "kept): retrain the task to record one", len(inputs))  # fmt: skip
    baseline = read_json(folder / DRIFT_BASELINE)["inputs"]
    if len(baseline) < 2:
        return not_computed("input", test, f"the baseline holds {len(baseline)} training input(s)", len(inputs))
    return mmd_test(embedder.embed(inputs), embedder.embed_baseline(baseline), settings.alpha, settings.permutations)


def router_signal(router: WatchedTask, db: Database, settings: DriftSettings, since: datetime | None = None) -> Signal:
    """The share of routed requests sent to `none` against the share of router validation routes below its threshold."""
    r = db.requests
    query = (select(r.c.task).where(r.c.route_confidence.is_not(None), r.c.status != "error")
             .order_by(r.c.id.desc()).limit(settings.window))  # fmt: skip
    if since is not None:
        query = query.where(r.c.created_at >= since)
    with db.engine.connect() as conn:
        tasks = [row.task for row in conn.execute(query)]
    if len(tasks) < settings.min_requests:
        return not_computed(ROUTER, "exact binomial test", f"{len(tasks)} recent routed request(s); the signal needs "
                            f"at least {settings.min_requests}", len(tasks))  # fmt: skip
    baseline = confidence_curve(router.folder).confidence
    expected = float((baseline < router.threshold).mean()) if len(baseline) else 0.0
    signal = rate_test(ROUTER, sum(t is None for t in tasks), len(tasks), expected, settings.alpha)
    signal.detail["threshold"] = router.threshold
    return signal
