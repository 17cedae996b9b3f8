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


def answer(db: Database, review_id: int, text: str, reviewer: str | None = None,
           guess_right: bool | None = None) -> None:  # fmt: skip
    """Record the human answer for item `review_id`.

    Args:
        guess_right: whether the specialist's guess was right by this answer (the task's `agrees`); when
            given, stored with the answer as a `review` judgement (ground truth for live quality).
    """
    item = get(db, review_id)
    with db.engine.begin() as conn:
        conn.execute(
            db.reviews.update()
            .where(db.reviews.c.id == review_id)
            .values(answer=text, status=ANSWERED, answered_at=datetime.now(UTC), reviewer=reviewer)
        )
        if guess_right is not None and item["task"]:
            row = new_judgement(item["request_id"], item["task"], "review", accepted=False, agrees=guess_right,
                                answer=item["guess"], reference=text, tier=reviewer)  # fmt: skip
            conn.execute(db.judgements.insert().values(**row))
