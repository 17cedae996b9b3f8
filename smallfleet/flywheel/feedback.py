"""Feedback on a logged request: the right answer, or a yes/no on the answer given.

Used by `POST /v1/feedback` and `smallfleet feedback`. Feedback is stored as a `feedback`
judgement of the request (`store/judgements.py`), keyed by its request id: ground truth for
live quality when the specialist's answer was the one served, and a labelled example for
retraining either way (see `flywheel/traffic.py`).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from sqlalchemy import select

from smallfleet.errors import DataError, SmallfleetError
from smallfleet.store import Database
from smallfleet.store.judgements import new_judgement, record
from smallfleet.store.ledger import SPECIALIST_TIER
from smallfleet.tasks import SavedTask



class FeedbackError(SmallfleetError):
    """Feedback that cannot be recorded: `status` is the HTTP status a client gets (400, 403 or 404)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def find_request(db: Database, request_id: str) -> dict | None:
    """The logged request `request_id` (its last row), or None."""
    r = db.requests
    with db.engine.connect() as conn:
        row = conn.execute(select(r).where(r.c.request_id == request_id).order_by(r.c.id.desc()).limit(1)).first()
    return None if row is None else dict(row._mapping)


def check_caller(row: dict, key: str | None, role: str | None) -> None:
    """Only the key that made the request, or an admin key, may give feedback on it (anyone when keys are off)."""
    if key is None or role == "admin" or row.get("api_key") == key:
        return
    raise FeedbackError(403, f"request {row['request_id']} was made with another key; use that key or an admin key")


def answer_text(answer) -> str:
    """A feedback answer as text: a string as it is, a JSON object or list (an extract record) serialized."""
    if isinstance(answer, str):
        return answer
    if isinstance(answer, dict | list):
        return json.dumps(answer, ensure_ascii=False)
    raise FeedbackError(400, f"'answer' must be a string or a JSON object, not {type(answer).__name__}")


def judge(row: dict, task: SavedTask, answer: str | None, correct: bool | None) -> dict:
    """The `feedback` judgement of logged request `row` of `task`: the right `answer`, or `correct` yes/no.

    Raises:
        FeedbackError(400): neither or both given, or an answer that is not valid for the task.
    """
    if (answer is None) == (correct is None):
        raise FeedbackError(400, "send exactly one of 'answer' (the right answer) and 'correct' (true or false)")
    served = row.get("tier") == SPECIALIST_TIER and row.get("status") == "ok"
    given = row.get("output")
    if answer is not None:
        try:
            reference = task.check_answer(answer)
        except DataError as exc:
            raise FeedbackError(400, str(exc)) from None
        agrees = task.agrees(given, reference) if served and given is not None else None
    else:
        reference = None
        if correct and given is not None:
            try:
                reference = task.check_answer(given)  # a confirmed answer is a labelled example
            except DataError:
                reference = None
        agrees = bool(correct) if served else None
    return new_judgement(row["request_id"], task.name, "feedback", accepted=served, agrees=agrees, answer=given,
                         reference=reference, tier=row.get("tier"))  # fmt: skip


def give_feedback(db: Database, task_of: Callable[[str], SavedTask], request_id: str, answer=None,
                  correct: bool | None = None, key: str | None = None, role: str | None = None,
                  row: dict | None = None) -> dict:  # fmt: skip
    """Record feedback on request `request_id`; returns what was stored.

    Args:
        task_of: the trained task called `name`.
        answer: the right answer (text, or a JSON object for extract tasks).
        correct: whether the answer given was right.
        key, role: the caller's key name and role (None when the gateway has no keys).
        row: the request's log row when already at hand (else it is read from `db`).

    Raises:
        FeedbackError: 404 unknown request, 403 another client's request, 400 invalid feedback.
    """
    row = row or find_request(db, request_id)
    if row is None:
        raise FeedbackError(404, f"no request {request_id!r} in the request log")
    check_caller(row, key, role)
    if not row.get("task"):
        raise FeedbackError(400, f"request {request_id} went to no task (it was passed upstream as it was)")
    if row.get("status") not in ("ok", "pending"):
        raise FeedbackError(400, f"request {request_id} failed ({row.get('error')}); there is no answer to judge")
    judgement = judge(row, task_of(row["task"]), None if answer is None else answer_text(answer), correct)
    record(db, judgement)
    return {"request_id": request_id, "task": row["task"], "recorded": "answer" if answer is not None else "correct",
            "answer": judgement["reference"], "agrees": judgement["agrees"]}  # fmt: skip
