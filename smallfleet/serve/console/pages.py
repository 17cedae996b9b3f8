"""The console's pages: what each shows, read from the request log (aggregated in SQL, see
`store/activity.py`), the fleet as served, its versions and the review queue, rendered with
Jinja2. Every method here blocks on the database and takes the served fleet as a `FleetView`,
so pages are built in a separate process (`builder.py`) and the gateway never waits for one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from smallfleet.errors import ConfigError
from smallfleet.flywheel.review import answer_review
from smallfleet.flywheel.versions import list_versions, promote, rollback
from smallfleet.flywheel.drift import rate_test
from smallfleet.report.live import live_quality
from smallfleet.serve.console import charts
from smallfleet.store import Database
from smallfleet.store import activity
from smallfleet.store.reviews import PENDING, items, pending_counts
from smallfleet.serve.console.view import FleetView
from smallfleet.tasks import SavedTask
from smallfleet.tasks.kind import AnswerForm

TEMPLATES = Path(__file__).parent / "templates"
WINDOWS = {"last hour": timedelta(hours=1), "last day": timedelta(days=1), "last week": timedelta(days=7)}
HOURS_PLOTTED = 48
DAYS_PLOTTED = 14
PAGE_ROWS = 50
REVIEWS_SHOWN = 50


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True)  # fmt: skip
    env.filters["pct"] = lambda v, digits=1: "-" if v is None else f"{100 * v:.{digits}f}%"
    env.filters["usd"] = lambda v: "-" if v is None else (f"${v:,.2f}" if abs(v) >= 1 else f"${v:.6f}")
    env.filters["num"] = lambda v, digits=3: "-" if v is None else f"{v:.{digits}f}"
    env.filters["when"] = lambda v: "-" if v is None else str(v)[:19]
    return env


class ConsolePages:
    """Builds each page of the console from its database, for the served fleet each method is given."""

    def __init__(self, db: Database):
        self.db = db
        self.env = environment()

    def render(self, fleet: FleetView, template: str, **context) -> str:
        return self.env.get_template(template).render(fleet=fleet.name, tiers=list(fleet.tiers), **context)

    @staticmethod
    def saved_task(fleet: FleetView, name: str) -> SavedTask:
        """The served version of task `name`, as the review code path wants it.

        Raises:
            ConfigError: the task is not served here.
        """
        task = fleet.tasks.get(name)
        if task is None:
            raise ConfigError(f"task {name!r} is not served by this gateway (tasks: {', '.join(fleet.tasks)})")
        return task.saved_task()

    # --- overview -----------------------------------------------------------------------------------------
    def overview(self, fleet: FleetView) -> dict:
        now = datetime.now(UTC)
        windows = {name: activity.totals(self.db, now - span) for name, span in WINDOWS.items()}
        windows["all time"] = activity.totals(self.db)
        start = (now - timedelta(hours=HOURS_PLOTTED - 1)).replace(minute=0, second=0, microsecond=0)
        hours = {b["start"]: b for b in activity.by_hour(self.db, start)}
        labels = [(start + timedelta(hours=i)).strftime("%Y-%m-%d %H") for i in range(HOURS_PLOTTED)]
        empty = {"local": 0, "escalated": 0, "requests": 0}
        rows = [hours.get(k, empty) for k in labels]
        traffic = charts.stacked_bars(
            f"requests per hour, last {HOURS_PLOTTED} hours", [k[5:] + "h" for k in labels],
            [("answered locally", charts.BLUE, [r["local"] for r in rows]),
             ("escalated", charts.ORANGE, [r["escalated"] for r in rows]),
             ("other", charts.GREY, [r["requests"] - r["local"] - r["escalated"] for r in rows])],
        )  # fmt: skip
        first = (now - timedelta(days=DAYS_PLOTTED - 1)).strftime("%Y-%m-%d")
        days = {d["day"]: d for d in activity.by_day(self.db, first)}
        day_labels = [(now - timedelta(days=DAYS_PLOTTED - 1 - i)).strftime("%Y-%m-%d") for i in range(DAYS_PLOTTED)]
        spent, frontier, a, b = [], [], 0.0, 0.0
        for day in day_labels:
            a += days.get(day, {}).get("cost_usd", 0.0)
            b += days.get(day, {}).get("frontier_cost_usd", 0.0)
            spent.append(a)
            frontier.append(b)
        spend = charts.lines(f"cumulative spend, last {DAYS_PLOTTED} days (USD)", [d[5:] for d in day_labels],
                             [("spent", charts.BLUE, spent), ("all-frontier", charts.ORANGE, frontier)],
                             fmt=lambda v: f"${v:,.4f}")  # fmt: skip
        return {"windows": windows, "traffic_chart": traffic, "spend_chart": spend,
                "pending": sum(pending_counts(self.db).values())}  # fmt: skip

    # --- tasks --------------------------------------------------------------------------------------------
    def tasks(self, fleet: FleetView) -> dict:
        now = datetime.now(UTC)
        live = live_quality(self.db, fleet.folder)
        first = (now - timedelta(days=DAYS_PLOTTED - 1)).strftime("%Y-%m-%d")
        day_labels = [(now - timedelta(days=DAYS_PLOTTED - 1 - i)).strftime("%Y-%m-%d") for i in range(DAYS_PLOTTED)]
        daily: dict[str, dict[str, dict]] = {}
        for row in activity.by_day(self.db, first, task=True):
            daily.setdefault(row["task"], {})[row["day"]] = row
        pending = pending_counts(self.db)
        out = []
        for name, task in fleet.tasks.items():
            days = daily.get(name, {})
            last = days.get(now.strftime("%Y-%m-%d"), {"requests": 0, "escalated": 0})
            expected = 1 - task.coverage  # the share of validation below the threshold
            rates = [(days[d]["escalation_rate"] if d in days else 0.0) for d in day_labels]
            out.append({
                "name": name, "kind": task.kind, "version": task.version, "threshold": task.threshold,
                "coverage": task.coverage, "target": task.target, "promise": task.promise,
                "live": live.get(name), "pending": pending.get(name, 0),
                "drift": escalation_drift(last["escalated"], last["requests"], expected),  # quick; `smallfleet drift`: all
                "today": last, "week": {k: sum(d.get(k, 0) for d in days.values()) for k in ("requests", "escalated")},
                "chart": charts.lines(f"{name}: escalation rate per day", [d[5:] for d in day_labels],
                                      [("escalation rate", charts.ORANGE, rates)], height=120, top=1.0,
                                      fmt=lambda v: f"{v:.0%}"),
            })  # fmt: skip
        return {"tasks": out}

    # --- review queue -------------------------------------------------------------------------------------
    def reviews(self, fleet: FleetView, task: str | None = None) -> dict:
        shown = []
        for item in items(self.db, PENDING, task, limit=REVIEWS_SHOWN):
            form = self.saved_task(fleet, item["task"]).answer_form(item["guess"]) if item["task"] in fleet.tasks \
                else AnswerForm("text", value=item["guess"] or "")  # fmt: skip
            shown.append({**item, "form": form})
        counts = pending_counts(self.db)
        return {"items": shown, "counts": counts, "total": sum(counts.values()), "task": task}

    def answer(self, fleet: FleetView, item_id: int, form: dict[str, str], reviewer: str | None) -> dict:
        """Record a review answer posted from the console, through the same code path as `review answer`.

        Raises:
            ConfigError: no such item, or it was answered already.
            DataError: the answer is not valid for the task.
        """
        answer = form.get("answer", "")
        if form.get("widget") == "record":  # the filled fields as one JSON object, the task checks it
            answer = json.dumps({k[6:]: v for k, v in form.items() if k.startswith("field.") and v.strip()},
                                ensure_ascii=False)  # fmt: skip
        return answer_review(self.db, lambda name: self.saved_task(fleet, name), item_id, answer, reviewer,
                             pending_only=True)  # fmt: skip

    # --- requests -----------------------------------------------------------------------------------------
    def requests(self, fleet: FleetView, task: str | None, tier: str | None, escalated: bool | None, errors: bool,
                 before: int | None) -> dict:  # fmt: skip
        rows = activity.page(self.db, PAGE_ROWS, before, task, tier, escalated, errors)
        return {"rows": rows, "older": rows[-1]["id"] if len(rows) == PAGE_ROWS else None, "tasks": list(fleet.tasks),
                "filters": {"task": task or "", "tier": tier or "", "escalated": escalated, "errors": errors}}  # fmt: skip

    def request(self, fleet: FleetView, request_id: str) -> dict:
        """One request's detail. Raises ConfigError when the log has no such request."""
        found = activity.request_detail(self.db, request_id)
        if found is None:
            raise ConfigError(f"no request {request_id!r} in the request log")
        tried = found["request"].get("tried")
        found["tried"] = json.loads(tried) if tried else []
        return found

    # --- versions -----------------------------------------------------------------------------------------
    def versions(self, fleet: FleetView) -> dict:
        found = list_versions(fleet.folder)
        for versions in found.values():
            for v in versions:
                gate = fleet.folder / v["folder"] / "GATE.md"
                v["gate_report"] = gate.read_text(encoding="utf-8") if gate.is_file() else None
                test = (v.get("metrics") or {}).get("test") or (v.get("metrics") or {}).get("validation") or {}
                v["score"] = next((f"{k} {test[k]:.3f}" for k in ("accuracy", "f1", "rougeL") if k in test), "-")
        return {"versions": found, "live": {n: t.version for n, t in fleet.tasks.items()}}

    def promote(self, fleet: FleetView, task: str, version: str) -> str:
        promote(fleet.folder, task, version)
        return f"{task}: {version} promoted; the gateway switches to it within seconds"

    def rollback(self, fleet: FleetView, task: str) -> str:
        version = rollback(fleet.folder, task)
        return f"{task}: rolled back to {version}; the gateway switches to it within seconds"


DRIFT_LEVEL = 0.01
"""Significance at which today's escalation rate counts as drift (as `smallfleet drift`'s default alpha)."""
MIN_REQUESTS = 20
"""Fewer requests today than this give no verdict."""


def escalation_drift(escalated: int, requests: int, expected: float) -> dict:
    """Today's escalation rate against validation's (`smallfleet drift`'s escalation signal, on today's requests).

    Returns:
        {verdict: "drifting" | "steady" | "too few requests" | "escalates everything", rate, expected, p_value}.
    """
    out = {"rate": escalated / requests if requests else None, "expected": expected, "p_value": None}
    if expected >= 1:
        return {**out, "verdict": "escalates everything"}
    if requests < MIN_REQUESTS:
        return {**out, "verdict": "too few requests"}
    signal = rate_test("escalation_rate", escalated, requests, expected, DRIFT_LEVEL)
    return {**out, "p_value": signal.p_value, "verdict": "drifting" if signal.drift else "steady"}
