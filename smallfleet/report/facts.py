"""Everything the report shows, gathered from a fleet folder and (when there is one) its
gateway database: each task's guarantee, validation curve, reliability and test quality,
its traffic over time, unit costs and live quality; and the fleet's totals."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from smallfleet.audit import read_audit
from smallfleet.calibration import ConfidenceCurve
from smallfleet.fleet import fleet_index
from smallfleet.report.live import live_quality
from smallfleet.store import Database
from smallfleet.store.judgements import pairs
from smallfleet.store.ledger import SPECIALIST_TIER, rollup
from smallfleet.tasks import SavedTask
from smallfleet.tasks.kind import QualityTable
from smallfleet.training.artifacts import CALIBRATION, METRICS, read_json

HOURLY_SPAN = timedelta(days=3)
"""Traffic spanning less than this is bucketed by hour, longer by day."""


@dataclass
class TaskFacts:
    """One task of the fleet, as the report shows it."""

    name: str
    saved: SavedTask
    guarantee: dict
    """The stored cascade (see `guarantee.Guarantee.to_dict`)."""
    curve: ConfidenceCurve
    """Validation confidence vs right/wrong, most confident first."""
    reliability: list[dict]
    """Reliability bins of the calibrated confidence on validation."""
    split: str
    """Which split `metrics` describes (`test` when the task had one, else `validation`)."""
    metrics: dict
    quality: QualityTable | None
    """The kind's own detail table (confused pairs, per-field F1, ROUGE)."""
    traffic: dict | None = None
    """The task's request-log rollup (requests, escalations, spend, all-frontier spend, saving)."""
    specialist_cost: float | None = None
    """Mean USD of an answer the specialist gave, from the request log."""
    frontier_cost: float | None = None
    """Mean USD the frontier tier would charge for one of the task's requests, from the request log."""
    series: list[dict] = field(default_factory=list)
    """Traffic over time: {start, requests, escalated, cost_usd, frontier_cost_usd} per bucket."""
    live: dict | None = None
    """Live quality of accepted answers (see `report.live.live_quality`)."""
    frontier_quality: float | None = None
    """Share of audited requests where the frontier agreed with a person's or client's answer, when known."""
    frontier_checked: int = 0
    """Requests the frontier's quality rests on."""
    novelty: dict | None = None
    """Novelty of the validation rows and out-of-scope examples the novelty threshold was set on (calibration.json)."""


@dataclass
class FleetFacts:
    name: str
    folder: Path
    generated_at: datetime
    tasks: list[TaskFacts]
    totals: dict | None = None
    """The fleet's request-log rollup; None without a database or requests."""
    local_share: float | None = None
    """Share of logged requests answered by a specialist."""
    audit_cost_usd: float = 0.0
    bucket: str = "hour"
    traffic_audit: dict | None = None
    """The fleet's saved `smallfleet audit` of its pass-through traffic, if any."""


def gather(fleet: Path, db: Database | None, since: str | None = None) -> FleetFacts:
    """Read everything the report needs. `db` None: the fleet has never been served (no traffic sections)."""
    index = fleet_index(fleet, empty_ok=True)
    tasks = []
    for name, entry in index["tasks"].items():
        folder = fleet / entry["folder"]
        saved = SavedTask.open(folder)
        calibration = read_json(folder / CALIBRATION)
        metrics = read_json(folder / METRICS)
        split = "test" if "test" in metrics else "validation"
        tasks.append(TaskFacts(
            name=name, saved=saved, guarantee=entry.get("cascade") or saved.manifest.get("cascade") or {},
            curve=ConfidenceCurve.from_dict(calibration["curve"]), reliability=calibration.get("reliability", []),
            split=split, metrics=metrics[split], quality=saved.kind.quality_table(metrics[split]),
            novelty=calibration.get("novelty"),
        ))  # fmt: skip
    facts = FleetFacts(index.get("name", fleet.name), fleet, datetime.now(UTC), tasks, traffic_audit=read_audit(fleet))
    if db is not None:
        _traffic(facts, db, since)
    return facts


def _traffic(facts: FleetFacts, db: Database, since: str | None) -> None:
    summary = rollup(db, since)
    if not summary["requests"]:
        return
    facts.totals = summary
    r = db.requests
    where = [r.c.day >= since] if since else []
    with db.engine.connect() as conn:
        local = conn.execute(select(func.count()).where(r.c.tier == SPECIALIST_TIER, *where)).scalar_one()
        means = {row.task: row for row in conn.execute(
            select(r.c.task, func.avg(r.c.frontier_cost_usd).label("frontier")).where(*where).group_by(r.c.task))}
        own = {row.task: row.cost for row in conn.execute(
            select(r.c.task, func.avg(r.c.cost_usd).label("cost")).where(r.c.tier == SPECIALIST_TIER, *where)
            .group_by(r.c.task))}
        rows = conn.execute(select(r.c.created_at, r.c.task, r.c.escalated, r.c.cost_usd, r.c.frontier_cost_usd)
                            .where(*where).order_by(r.c.id)).all()  # fmt: skip
    facts.local_share = local / summary["requests"]
    live = live_quality(db, facts.folder, since)
    facts.audit_cost_usd = sum(q["audit_cost_usd"] for q in live.values())
    times = [_utc(row.created_at) for row in rows]
    facts.bucket = "hour" if max(times) - min(times) < HOURLY_SPAN else "day"
    for task in facts.tasks:
        task.traffic = summary["by_task"].get(task.name)
        task.live = live.get(task.name)
        if task.name in means:
            task.frontier_cost = float(means[task.name].frontier or 0)
            task.specialist_cost = float(own.get(task.name) or 0)
        task.series = _series([(t, row) for t, row in zip(times, rows) if row.task == task.name], facts.bucket)
        checked = pairs(db, task.name)
        if checked:
            task.frontier_checked = len(checked)
            task.frontier_quality = sum(task.saved.agrees(frontier, truth) for frontier, truth in checked) / len(checked)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _series(rows: list, bucket: str) -> list[dict]:
    out: dict[datetime, dict] = {}
    for moment, row in rows:
        start = moment.replace(minute=0, second=0, microsecond=0)
        if bucket == "day":
            start = start.replace(hour=0)
        b = out.setdefault(start, {"start": start, "requests": 0, "escalated": 0, "cost_usd": 0.0, "frontier_cost_usd": 0.0})
        b["requests"] += 1
        b["escalated"] += bool(row.escalated)
        b["cost_usd"] += float(row.cost_usd or 0)
        b["frontier_cost_usd"] += float(row.frontier_cost_usd or 0)
    return [out[k] for k in sorted(out)]
