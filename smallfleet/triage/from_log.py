"""Triage rows from a gateway's own log: which tier's answer was good enough for which request.

A tier's answer to a logged request is scored when something stronger says what the right
answer was (a person in the review queue, or the client's feedback):
- the tier that answered an escalated request scores 1 if its answer is that answer, else 0;
- a live audit's tier (it answered the same request in the background) scores the same way;
- a tier whose reply could not be used for the task (listed in the request's `tried`) scores 0.
Answers are compared as the task stored them (normalized by the task's kind), ignoring case
and surrounding spaces.
"""

from __future__ import annotations

import json
import re

from sqlalchemy import select

from smallfleet.store import Database
from smallfleet.store.judgements import SOURCES
from smallfleet.triage.rows import TriageRow

UNUSABLE = re.compile(r"^(?P<tier>[\w-]+): reply could not be used")


def rows_from_log(db: Database, where: str = "log") -> list[TriageRow]:
    """One row per logged request with at least one tier scored, in log order."""
    rank = {s: i for i, s in enumerate(SOURCES)}
    truth: dict[str, tuple[int, str]] = {}
    audits: dict[str, list[tuple[str, str]]] = {}
    j = db.judgements
    with db.engine.connect() as conn:
        for row in conn.execute(select(j.c.request_id, j.c.source, j.c.reference, j.c.tier).order_by(j.c.id)):
            if row.reference is None:
                continue
            if row.source == "audit":
                if row.tier:
                    audits.setdefault(row.request_id, []).append((row.tier, row.reference))
            elif row.request_id not in truth or rank[row.source] <= truth[row.request_id][0]:
                truth[row.request_id] = (rank[row.source], row.reference)
        r = db.requests
        query = select(r.c.id, r.c.request_id, r.c.input, r.c.output, r.c.tier, r.c.tried, r.c.escalated)
        query = query.where(r.c.status == "ok", r.c.request_id.is_not(None)).order_by(r.c.id)
        rows = []
        for req in conn.execute(query):
            scores: dict[str, float] = {}
            for attempt in json.loads(req.tried or "[]"):
                match = UNUSABLE.match(attempt)
                if match:
                    scores[match["tier"]] = 0.0
            right = truth.get(req.request_id)
            if right is not None:
                for tier, answer in audits.get(req.request_id, []):
                    scores[tier] = float(_same(answer, right[1]))
                if req.escalated and req.tier and req.output is not None:
                    scores[req.tier] = float(_same(req.output, right[1]))
            if scores and req.input:
                rows.append(TriageRow(req.input, scores, f"{where} request {req.request_id}"))
    return rows


def _same(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()
