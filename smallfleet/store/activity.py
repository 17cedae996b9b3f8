"""The request log over time, for the console: totals over a window, buckets by hour and by
day, a filtered page of requests and one request with everything known about it.

Every figure is aggregated by the database (GROUP BY, indexed WHERE on `created_at` and
`day`, LIMIT on lists), so a page costs a few milliseconds whatever the log's size, and no
row is read into Python that the page does not show.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, case, cast, func, select

from smallfleet.store.db import Database
from smallfleet.store.ledger import SPECIALIST_TIER

LIST_INPUT_CHARS = 160
"""Characters of each request's input a list shows."""


def _columns(r):
    return [
        func.count().label("requests"),
        func.sum(case((r.c.tier == SPECIALIST_TIER, 1), else_=0)).label("local"),
        func.sum(r.c.escalated.cast(Integer)).label("escalated"),
        func.sum(case((r.c.status == "error", 1), else_=0)).label("errors"),
        func.sum(r.c.cost_usd).label("cost_usd"),
        func.sum(r.c.frontier_cost_usd).label("frontier_cost_usd"),
    ]


def _summary(row) -> dict:
    n = int(row.requests or 0)
    cost, frontier = float(row.cost_usd or 0), float(row.frontier_cost_usd or 0)
    return {
        "requests": n,
        "local": int(row.local or 0),
        "escalated": int(row.escalated or 0),
        "errors": int(row.errors or 0),
        "local_share": (row.local or 0) / n if n else None,
        "escalation_rate": (row.escalated or 0) / n if n else None,
        "cost_usd": cost,
        "frontier_cost_usd": frontier,
        "saving_usd": frontier - cost,
        "saving_share": (frontier - cost) / frontier if frontier else None,
    }


def totals(db: Database, since: datetime | None = None) -> dict:
    """Requests, answered locally, escalated, errors, spend, all-frontier spend and saving since `since` (None: all)."""
    r = db.requests
    query = select(*_columns(r))
    if since is not None:
        query = query.where(r.c.created_at >= since)
    with db.engine.connect() as conn:
        return _summary(conn.execute(query).one())


def by_hour(db: Database, since: datetime) -> list[dict]:
    """The same figures per hour since `since`, oldest first; `start` is `YYYY-MM-DD HH` (UTC)."""
    r = db.requests
    hour = func.substr(cast(r.c.created_at, String), 1, 13).label("start")
    query = select(hour, *_columns(r)).where(r.c.created_at >= since).group_by(hour).order_by(hour)
    with db.engine.connect() as conn:
        return [{"start": row.start.replace("T", " "), **_summary(row)} for row in conn.execute(query)]


def by_day(db: Database, since_day: str, task: bool = False) -> list[dict]:
    """The same figures per day (and per task when `task`) from `since_day` (`YYYY-MM-DD`) on, oldest first."""
    r = db.requests
    keys = [r.c.day, r.c.task] if task else [r.c.day]
    query = select(*keys, *_columns(r)).where(r.c.day >= since_day).group_by(*keys).order_by(*keys)
    with db.engine.connect() as conn:
        return [{"day": row.day, **({"task": row.task} if task else {}), **_summary(row)} for row in conn.execute(query)]


def page(db: Database, limit: int = 50, before: int | None = None, task: str | None = None, tier: str | None = None,
         escalated: bool | None = None, errors: bool = False) -> list[dict]:  # fmt: skip
    """The latest requests (newest first, ids below `before` when given), filtered as asked; inputs and outputs
    cut to LIST_INPUT_CHARS."""
    r = db.requests
    cut = [func.substr(r.c.input, 1, LIST_INPUT_CHARS).label("input"), func.substr(r.c.output, 1, LIST_INPUT_CHARS).label("output")]
    shown = [r.c.id, r.c.request_id, r.c.created_at, r.c.api_key, r.c.task, r.c.version, r.c.tier, r.c.confidence,
             r.c.escalated, r.c.status, r.c.http_status, r.c.latency_ms, r.c.cost_usd, r.c.frontier_cost_usd, r.c.error]  # fmt: skip
    query = select(*shown, *cut).order_by(r.c.id.desc()).limit(limit)
    if before is not None:
        query = query.where(r.c.id < before)
    if task:
        query = query.where(r.c.task == task)
    if tier:
        query = query.where(r.c.tier == tier)
    if escalated is not None:
        query = query.where(r.c.escalated == escalated)
    if errors:
        query = query.where(r.c.status == "error")
    with db.engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def request_detail(db: Database, request_id: str) -> dict | None:
    """One logged request with its judgements (audits, feedback, reviews), review items and shadow answers;
    None when the log has no such request."""
    r, j, v, s = db.requests, db.judgements, db.reviews, db.shadow
    with db.engine.connect() as conn:
        row = conn.execute(select(r).where(r.c.request_id == request_id).order_by(r.c.id.desc()).limit(1)).first()
        if row is None:
            return None
        judged = conn.execute(select(j).where(j.c.request_id == request_id).order_by(j.c.id)).all()
        reviews = conn.execute(select(v).where(v.c.request_id == request_id).order_by(v.c.id)).all()
        shadows = conn.execute(select(s).where(s.c.request_id == request_id).order_by(s.c.id)).all()
    return {"request": dict(row._mapping), "judgements": [dict(x._mapping) for x in judged],
            "reviews": [dict(x._mapping) for x in reviews], "shadow": [dict(x._mapping) for x in shadows]}  # fmt: skip
