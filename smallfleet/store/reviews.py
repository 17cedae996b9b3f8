"""The human review queue: requests a person should answer, and the answers they gave."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from smallfleet.errors import ConfigError
from smallfleet.store.db import Database

PENDING, ANSWERED = "pending", "answered"


def enqueue(db: Database, request_id: str, task: str | None, text: str, guess: str | None,
            confidence: float | None) -> int:  # fmt: skip
    """Store a request for review; returns its review id."""
    row = {"request_id": request_id, "created_at": datetime.now(UTC), "task": task, "input": text,
           "guess": guess, "confidence": confidence, "status": PENDING}  # fmt: skip
    with db.engine.begin() as conn:
        return int(conn.execute(db.reviews.insert().values(**row)).inserted_primary_key[0])


def items(db: Database, status: str | None = PENDING, task: str | None = None, limit: int = 100) -> list[dict]:
    """Review items, oldest first."""
    v = db.reviews
    query = select(v).order_by(v.c.id).limit(limit)
    if status:
        query = query.where(v.c.status == status)
    if task:
        query = query.where(v.c.task == task)
    with db.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def get(db: Database, review_id: int) -> dict:
    with db.engine.connect() as conn:
        row = conn.execute(select(db.reviews).where(db.reviews.c.id == review_id)).first()
    if row is None:
        raise ConfigError(f"no review item #{review_id}")
    return dict(row._mapping)


def answer(db: Database, review_id: int, text: str, reviewer: str | None = None) -> None:
    """Record the human answer for item `review_id`."""
    get(db, review_id)
    with db.engine.begin() as conn:
        conn.execute(
            db.reviews.update()
            .where(db.reviews.c.id == review_id)
            .values(answer=text, status=ANSWERED, answered_at=datetime.now(UTC), reviewer=reviewer)
        )
