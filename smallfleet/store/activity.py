"""The request log over time, for the console: totals over a window, buckets by hour and by
day, a filtered page of requests and one request with everything known about it.

Figures come from `requests_hourly`, the per-hour, per-task sums the ledger adds to in the
same transaction as each batch of rows (`ledger.write_requests`), so a week of traffic is
168 rows per task whatever the number of requests; only the part of a window's first hour
is counted from the log itself, on the `created_at` index. Lists are indexed and LIMITed,
and no row is read into Python that a page does not show.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Integer, case, func, select

from smallfleet.store.db import Database
from smallfleet.store.ledger import SPECIALIST_TIER, filtered

LIST_INPUT_CHARS = 160
"""Characters of each request's input a list shows."""


def _raw_columns(r):
    return [
        func.count().label("requests"),
        func.sum(case((r.c.tier == SPECIALIST_TIER, 1), else_=0)).label("local"),
        func.sum(r.c.escalated.cast(Integer)).label("escalated"),
        func.sum(case((r.c.status == "error", 1), else_=0)).label("errors"),
        func.sum(r.c.cost_usd).label("cost_usd"),
        func.sum(r.c.frontier_cost_usd).label("frontier_cost_usd"),
    ]


def _hourly_columns(h):
    return [func.sum(h.c[name]).label(name) for name in FIGURES]


FIGURES = ("requests", "local", "escalated", "errors", "cost_usd", "frontier_cost_usd")


def _summary(sums) -> dict:
    """The figures of a mapping of FIGURES sums, with the shares and the saving."""
    n, local, escalated = (int(sums[k] or 0) for k in ("requests", "local", "escalated"))
    cost, frontier = float(sums["cost_usd"] or 0), float(sums["frontier_cost_usd"] or 0)
    return {
        "requests": n,
        "local": local,
        "escalated": escalated,
        "errors": int(sums["errors"] or 0),
        "local_share": local / n if n else None,
        "escalation_rate": escalated / n if n else None,
        "cost_usd": cost,
        "frontier_cost_usd": frontier,
        "saving_usd": frontier - cost,
        "saving_share": (frontier - cost) / frontier if frontier else None,
    }


def hour_key(moment: datetime) -> str:
    """`YYYY-MM-DD HH` of a moment, in UTC: the rollup's bucket."""
    return (moment.astimezone(UTC) if moment.tzinfo else moment).strftime("%Y-%m-%d %H")


def totals(db: Database, since: datetime | None = None) -> dict:
    """Requests, answered locally, escalated, errors, spend, all-frontier spend and saving since `since` (None: all).

    Whole hours are summed from the hourly rollup; the part of `since`'s hour after it is counted from the log
    itself (an indexed range of at most an hour of rows).
    """
    h, r = db.requests_hourly, db.requests
    hourly = select(*_hourly_columns(h))
    partial = None
    if since is not None:
        since = since if since.tzinfo else since.replace(tzinfo=UTC)
        next_hour = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        hourly = hourly.where(h.c.hour >= hour_key(next_hour))
        partial = select(*_raw_columns(r)).where(r.c.created_at >= since, r.c.created_at < next_hour)
    with db.engine.connect() as conn:
        whole = conn.execute(hourly).one()
        part = conn.execute(partial).one() if partial is not None else None
    return _summary({k: (whole._mapping[k] or 0) + (part._mapping[k] or 0 if part is not None else 0) for k in FIGURES})


def by_hour(db: Database, since: datetime) -> list[dict]:
    """The same figures per hour from `since`'s hour on, oldest first; `start` is `YYYY-MM-DD HH` (UTC)."""
    h = db.requests_hourly
    query = (select(h.c.hour, *_hourly_columns(h)).where(h.c.hour >= hour_key(since)).group_by(h.c.hour)
             .order_by(h.c.hour))  # fmt: skip
    with db.engine.connect() as conn:
        return [{"start": row.hour, **_summary(row._mapping)} for row in conn.execute(query)]


def by_day(db: Database, since_day: str, task: bool = False) -> list[dict]:
    """The same figures per day (UTC; and per task when `task`) from `since_day` (`YYYY-MM-DD`) on, oldest first."""
    h = db.requests_hourly
    day = func.substr(h.c.hour, 1, 10).label("day")
    keys = [day, h.c.task] if task else [day]
    query = select(*keys, *_hourly_columns(h)).where(h.c.hour >= since_day).group_by(*keys).order_by(*keys)
    with db.engine.connect() as conn:
        return [{"day": row.day, **({"task": row.task or None} if task else {}), **_summary(row._mapping)}
                for row in conn.execute(query)]  # fmt: skip


def page(db: Database, limit: int = 50, before: int | None = None, task: str | None = None, tier: str | None = None,
         escalated: bool | None = None, errors: bool = False) -> list[dict]:  # fmt: skip
    """The latest requests (newest first, ids below `before` when given), filtered as asked; inputs and outputs
    cut to LIST_INPUT_CHARS."""
    r = db.requests
    cut = [func.substr(r.c.input, 1, LIST_INPUT_CHARS).label("input"), func.substr(r.c.output, 1, LIST_INPUT_CHARS).label("output")]
    shown = [r.c.id, r.c.request_id, r.c.created_at, r.c.api_key, r.c.task, r.c.version, r.c.tier, r.c.confidence,
             r.c.escalated, r.c.status, r.c.http_status, r.c.latency_ms, r.c.cost_usd, r.c.frontier_cost_usd, r.c.error]  # fmt: skip
    query = filtered(select(*shown, *cut).order_by(r.c.id.desc()).limit(limit), r, task, tier, escalated, errors)
    if before is not None:
        query = query.where(r.c.id < before)
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
