"""The human review queue: requests a person should answer, and the answers they gave."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select

from smallfleet.errors import ConfigError
from smallfleet.store.db import Database
from smallfleet.store.judgements import new_judgement

PENDING, ANSWERED = "pending", "answered"


class QueueFull(Exception):
    """The review queue holds its maximum of pending items."""

    def __init__(self, pending: int):
        super().__init__(f"review queue full ({pending} items pending)")
        self.pending = pending


def enqueue(db: Database, request_id: str, task: str | None, text: str, guess: str | None,
            confidence: float | None, max_pending: int | None = None) -> int:  # fmt: skip
    """Store a request for review; returns its review id.

    Args:
        max_pending: Most pending items the queue may hold (None: no bound). Gateways sharing one database
            may overshoot it by the few items they insert at the same moment.

    Raises:
        QueueFull: `max_pending` items are already pending.
    """
    row = {"request_id": request_id, "created_at": datetime.now(UTC), "task": task, "input": text,
           "guess": guess, "confidence": confidence, "status": PENDING}  # fmt: skip
    with db.engine.begin() as conn:
        if max_pending is not None:
            v = db.reviews
            pending = conn.execute(select(func.count()).select_from(v).where(v.c.status == PENDING)).scalar_one()
            if pending >= max_pending:
                raise QueueFull(pending)
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


def record_answer(db: Database, item: dict, text: str, reviewer: str | None, guess_right: bool | None) -> None:
    """Store the answer to review `item` (a row as `get` returns it), and its judgement when `guess_right` is known."""
    with db.engine.begin() as conn:
        conn.execute(
            db.reviews.update()
            .where(db.reviews.c.id == item["id"])
            .values(answer=text, status=ANSWERED, answered_at=datetime.now(UTC), reviewer=reviewer)
        )
        if guess_right is not None and item["task"]:
            row = new_judgement(item["request_id"], item["task"], "review", accepted=False, agrees=guess_right,
                                answer=item["guess"], reference=text, tier=reviewer)  # fmt: skip
            conn.execute(db.judgements.insert().values(**row))


def for_request(db: Database, request_id: str) -> list[dict]:
    """The review items of one logged request."""
    v = db.reviews
    with db.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(v).where(v.c.request_id == request_id).order_by(v.c.id))]


def pending_counts(db: Database) -> dict[str, int]:
    """Task -> pending items ("" for items without a task)."""
    v = db.reviews
    query = select(v.c.task, func.count()).where(v.c.status == PENDING).group_by(v.c.task)
    with db.engine.connect() as conn:
        return {task or "": int(n) for task, n in conn.execute(query)}
