"""Judgements: ground truth on the answers the specialists gave, for live quality checks.

A judgement says whether a specialist's answer to one logged request was right, and on
whose word (`source`), strongest first:
- `review`: a person answered the request in the review queue;
- `feedback`: the client confirmed the answer, or sent the right one;
- `audit`: a live audit sent an accepted request to the first upstream tier as well, and
  its answer is the reference (the audit's cost is kept with it).

`accepted` says whether the specialist's answer was the one served (at or above the
threshold): only those test the guarantee. When one request has several judgements, the
strongest source decides.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from sqlalchemy import select

from smallfleet.store.db import Database

SOURCES = ("review", "feedback", "audit")
"""Judgement sources, strongest first."""


def new_judgement(request_id: str, task: str, source: str, accepted: bool, agrees: bool, answer: str | None = None,
                  reference: str | None = None, tier: str | None = None, cost_usd: float = 0.0) -> dict:  # fmt: skip
    """A judgements row; `answer` is the specialist's, `reference` the ground truth it was judged against."""
    if source not in SOURCES:
        raise ValueError(f"judgement source must be one of {SOURCES}, not {source!r}")
    now = datetime.now(UTC)
    return {"request_id": request_id, "created_at": now, "day": now.strftime("%Y-%m-%d"), "task": task,
            "source": source, "accepted": accepted, "agrees": agrees, "answer": answer, "reference": reference,
            "tier": tier, "cost_usd": cost_usd}  # fmt: skip


def record(db: Database, row: dict) -> None:
    """Store one judgement (see `new_judgement`)."""
    with db.engine.begin() as conn:
        conn.execute(db.judgements.insert().values(**row))


def tally(db: Database, task: str | None = None, since: str | None = None) -> dict[str, dict]:
    """Per task: judged and agreed counts of accepted answers and of all answers (strongest source per
    request), judgements by source, and audits with their spend."""
    j = db.judgements
    query = select(j.c.request_id, j.c.task, j.c.source, j.c.accepted, j.c.agrees, j.c.cost_usd).order_by(j.c.id)
    if task:
        query = query.where(j.c.task == task)
    if since:
        query = query.where(j.c.day >= since)
    rank = {s: i for i, s in enumerate(SOURCES)}
    best: dict[str, tuple] = {}
    out: dict[str, dict] = defaultdict(lambda: {"accepted_judged": 0, "accepted_agreed": 0, "judged": 0, "agreed": 0,
                                                "by_source": dict.fromkeys(SOURCES, 0), "audits": 0,
                                                "audit_cost_usd": 0.0})  # fmt: skip
    with db.engine.connect() as conn:
        for row in conn.execute(query):
            t = out[row.task]
            t["by_source"][row.source] += 1
            if row.source == "audit":
                t["audits"] += 1
                t["audit_cost_usd"] += float(row.cost_usd or 0)
            if row.agrees is None:  # feedback on an answer the specialist did not give: nothing to judge it by
                continue
            held = best.get(row.request_id)
            if held is None or rank[row.source] <= rank[held.source]:  # a later judgement of equal rank replaces
                best[row.request_id] = row
    for row in best.values():
        t = out[row.task]
        t["judged"] += 1
        t["agreed"] += bool(row.agrees)
        if row.accepted:
            t["accepted_judged"] += 1
            t["accepted_agreed"] += bool(row.agrees)
    return dict(out)


def pairs(db: Database, task: str) -> list[tuple[str, str]]:
    """(frontier answer, person's or client's answer) for each of the task's requests judged both by an audit
    and by a stronger source: what the frontier's own quality can be measured on."""
    j = db.judgements
    query = select(j.c.request_id, j.c.source, j.c.reference).where(j.c.task == task).order_by(j.c.id)
    audit: dict[str, str] = {}
    truth: dict[str, str] = {}
    with db.engine.connect() as conn:
        for row in conn.execute(query):
            if row.reference is None:
                continue
            (audit if row.source == "audit" else truth)[row.request_id] = row.reference
    return [(audit[r], truth[r]) for r in audit if r in truth]
