"""Shadow answers: what a candidate version answered to live requests, beside what was served."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Integer, func, select

from smallfleet.store.db import Database

UPSTREAM = "upstream"
"""The served version recorded for a shadow answer compared with the frontier's (a task in shadow)."""


def new_shadow_row(request_id: str, task: str, version: str, served_version: str, answer: str,
                   confidence: float | None, agrees_served: bool, agrees_final: bool | None) -> dict:  # fmt: skip
    now = datetime.now(UTC)
    return {"request_id": request_id, "created_at": now, "day": now.strftime("%Y-%m-%d"), "task": task,
            "version": version, "served_version": served_version, "answer": answer, "confidence": confidence,
            "agrees_served": agrees_served, "agrees_final": agrees_final}  # fmt: skip


def record(db: Database, row: dict) -> None:
    with db.engine.begin() as conn:
        conn.execute(db.shadow.insert().values(**row))


def agreement(db: Database, task: str | None = None) -> dict[tuple[str, str], dict]:
    """(task, version) -> {requests, agrees_served, escalated, agrees_final}: shares of agreement with the
    served version's answer, and with the final (upstream) answer where the request escalated."""
    s = db.shadow
    query = select(s.c.task, s.c.version, func.count().label("n"),
                   func.sum(s.c.agrees_served.cast(Integer)).label("served"),
                   func.count(s.c.agrees_final).label("final_n"),
                   func.sum(s.c.agrees_final.cast(Integer)).label("final")).group_by(s.c.task, s.c.version)  # fmt: skip
    if task:
        query = query.where(s.c.task == task)
    with db.engine.connect() as conn:
        return {(r.task, r.version): {"requests": int(r.n), "agrees_served": (r.served or 0) / r.n,
                                      "escalated": int(r.final_n),
                                      "agrees_final": (r.final or 0) / r.final_n if r.final_n else None}
                for r in conn.execute(query)}  # fmt: skip


def accepted_against_frontier(db: Database, task: str, version: str, threshold: float, limit: int) -> list[bool]:
    """Whether each of the first `limit` answers of `task` `version` in shadow (judged against the frontier's,
    served version `upstream`) that it would have accepted at `threshold` agreed with the frontier, oldest first."""
    s = db.shadow
    query = (select(s.c.agrees_final).where(s.c.task == task, s.c.version == version, s.c.served_version == UPSTREAM,
                                            s.c.confidence >= threshold, s.c.agrees_final.is_not(None))
             .order_by(s.c.id).limit(limit))  # fmt: skip
    with db.engine.connect() as conn:
        return [bool(row[0]) for row in conn.execute(query)]
