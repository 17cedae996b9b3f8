"""Triage training rows: a request's text and, per tier, how good that tier's answer was.

A row is `{"text": ..., "scores": {"<tier>": 0|1 or a quality in [0, 1]}}`. The tiers of
`scores` are named cheapest first, so the last one is the strongest (the frontier) when a
row is evaluated RouteLLM-style. A tier may be missing from a row: its head learns from the
rows that score it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smallfleet.data.load import read_rows, summarize_problems
from smallfleet.errors import DataError

GOOD_ENOUGH = 0.5
"""A float quality at or above this counts as a good-enough answer when training."""


@dataclass
class TriageRow:
    """One request and its per-tier quality, with where it came from."""

    text: str
    scores: dict[str, float]
    where: str


def load_rows(path: str | Path, text_field: str = "text", scores_field: str = "scores") -> list[TriageRow]:
    """Read and check triage rows from a JSONL or CSV file.

    Raises:
        DataError: a row lacks its text or scores, or a score is not a number in [0, 1]; names file and line.
    """
    rows, problems = [], []
    for line, raw in read_rows(path):
        where = f"{path}:{line}"
        text, scores = raw.get(text_field), raw.get(scores_field)
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{where}: no text in field {text_field!r}")
            continue
        if not isinstance(scores, dict) or not scores:
            problems.append(f"{where}: field {scores_field!r} must be an object tier -> 0|1 or a quality in [0, 1]")
            continue
        bad = [t for t, v in scores.items() if isinstance(v, bool) is False and not isinstance(v, int | float)
               or not 0 <= float(v) <= 1]  # fmt: skip
        if bad:
            problems.append(f"{where}: score of tier {bad[0]!r} must be 0, 1 or a number in [0, 1], got {scores[bad[0]]!r}")
            continue
        rows.append(TriageRow(text, {str(t): float(v) for t, v in scores.items()}, where))
    if problems:
        raise DataError(summarize_problems(problems, f"{len(problems)} row(s) of {path} cannot be used for triage"))
    return rows


def tier_order(rows: list[TriageRow]) -> list[str]:
    """The tiers the rows name, cheapest first: in the order of the row naming the most tiers, then any others."""
    widest = max(rows, key=lambda r: len(r.scores)).scores if rows else {}
    order = list(widest)
    for row in rows:
        order += [t for t in row.scores if t not in order]
    return order


def unknown_tiers(rows: list[TriageRow], known: list[str]) -> dict[str, list[str]]:
    """Tier -> where rows name it, for each tier not in `known` (the fleet's tiers)."""
    found: dict[str, list[str]] = {}
    for row in rows:
        for tier in row.scores:
            if tier not in known:
                found.setdefault(tier, []).append(row.where)
    return found
