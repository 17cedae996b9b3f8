"""Labelled traffic: the training examples a task's gateway log has gathered.

Sources, strongest first (one request with several keeps the strongest):
- `human`: answers to the task's review items;
- `feedback`: right answers sent as feedback, and answers confirmed correct;
- `upstream`: what an upstream tier answered to an escalated request (distillation).

Every answer is checked (and normalized) by the task's kind; an answer the task no longer
accepts (a label since removed) is skipped and counted. Exact duplicates (same text, same
answer) are dropped. The same text with different answers is a conflict: the strongest,
then the latest, answer is kept, and the conflict is reported.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import select

from smallfleet.errors import DataError
from smallfleet.store import Database
from smallfleet.store.ledger import SPECIALIST_TIER
from smallfleet.store.reviews import ANSWERED
from smallfleet.tasks import SavedTask

SOURCES = ("human", "feedback", "upstream")
"""Sources of labelled traffic, strongest first."""


@dataclass
class LabelledRow:
    text: str
    answer: str
    source: str
    request_id: str


@dataclass
class LabelledTraffic:
    """A task's labelled traffic, and what was left out of it."""

    rows: list[LabelledRow]
    by_source: dict[str, int]
    """Rows kept, by source."""
    duplicates: int = 0
    """Exact duplicates (same text and answer) dropped."""
    superseded: int = 0
    """Answers dropped because a stronger source answered the same request."""
    invalid: int = 0
    """Answers the task does not accept, skipped."""
    conflicts: list[dict] = field(default_factory=list)
    """Texts with different answers: {text, kept, answers: {answer: [sources]}}."""

    def summary(self) -> dict:
        return {"rows": len(self.rows), "by_source": self.by_source, "duplicates": self.duplicates,
                "superseded": self.superseded, "invalid": self.invalid, "conflicts": self.conflicts}  # fmt: skip


def labelled_traffic(db: Database, task: SavedTask, since: str | None = None) -> LabelledTraffic:
    """The labelled examples of `task` in the gateway database `db` (from day `since` on)."""
    found: list[tuple[int, int, LabelledRow]] = []  # (source rank, order, row)
    gathered = (_human(db, task.name, since), _feedback(db, task.name, since), upstream_answers(db, task.name, since))
    for rank, (source, items) in enumerate(zip(SOURCES, gathered)):
        for order, (request_id, text, answer) in items:
            found.append((rank, order, LabelledRow(text, answer, source, request_id)))
    invalid = 0
    best: dict[str, tuple[int, int, LabelledRow]] = {}
    for rank, order, row in found:  # one answer per request: the strongest source, then the latest
        try:
            row.answer = task.check_answer(row.answer)
        except DataError:
            invalid += 1
            continue
        held = best.get(row.request_id)
        if held is None or (rank, -order) < (held[0], -held[1]):
            best[row.request_id] = (rank, order, row)
    by_text: dict[str, list[tuple[int, int, LabelledRow]]] = {}
    for item in best.values():
        by_text.setdefault(item[2].text, []).append(item)
    rows, duplicates, conflicts = [], 0, []
    for text, items in by_text.items():
        items.sort(key=lambda i: (i[0], -i[1]))
        kept = items[0][2]
        answers: dict[str, list[str]] = {}
        for _, _, row in items:
            answers.setdefault(row.answer, []).append(row.source)
        duplicates += sum(len(sources) - 1 for sources in answers.values())
        if len(answers) > 1:
            conflicts.append({"text": text, "kept": kept.answer, "answers": answers})
        rows.append(kept)
    return LabelledTraffic(rows, dict(Counter(r.source for r in rows)), duplicates, len(found) - invalid - len(best),
                           invalid, conflicts)  # fmt: skip


def _human(db: Database, task: str, since: str | None):
    v = db.reviews
    query = select(v.c.id, v.c.request_id, v.c.input, v.c.answer).where(v.c.task == task, v.c.status == ANSWERED)
    if since:
        query = query.where(v.c.answered_at >= since)
    with db.engine.connect() as conn:
        return [(row.id, (row.request_id, row.input, row.answer)) for row in conn.execute(query.order_by(v.c.id))]


def _feedback(db: Database, task: str, since: str | None):
    j, r = db.judgements, db.requests
    query = (select(j.c.id, j.c.request_id, r.c.input, j.c.reference)
             .join(r, r.c.request_id == j.c.request_id)
             .where(j.c.task == task, j.c.source == "feedback", j.c.reference.is_not(None)))  # fmt: skip
    if since:
        query = query.where(j.c.day >= since)
    with db.engine.connect() as conn:
        return [(row.id, (row.request_id, row.input, row.reference)) for row in conn.execute(query.order_by(j.c.id))]


def upstream_answers(db: Database, task: str, since: str | None = None) -> list[tuple[int, tuple[str, str, str]]]:
    """(log row id, (request id, input, answer)) of the task's escalated requests an upstream tier answered."""
    r = db.requests
    query = select(r.c.id, r.c.request_id, r.c.input, r.c.output).where(
        r.c.task == task, r.c.escalated.is_(True), r.c.status == "ok", r.c.tier != SPECIALIST_TIER
    )
    if since:
        query = query.where(r.c.day >= since)
    with db.engine.connect() as conn:
        return [(row.id, (row.request_id, row.input, row.output)) for row in conn.execute(query.order_by(r.c.id))]
